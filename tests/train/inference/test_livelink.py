"""bstrain stream: a loopback Live Link Face receiver gets every frame, in order, numbered one
apart, with the values of predict's CSV (checked with pylivelinkface's decoder, not ours)."""

from __future__ import annotations

import csv
import socket
import threading

import numpy as np
import pytest

from blendsync.shared.channels import ARKIT_52, pascal_case
from blendsync.train.cli import main

pylivelinkface = pytest.importorskip("pylivelinkface")


class Receiver:
    """UDP on 127.0.0.1 (a free port), packets kept as they arrive."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.packets: list[bytes] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            try:
                self.packets.append(self.sock.recv(4096))
            except TimeoutError:
                continue

    def stop(self) -> list:
        import time

        time.sleep(0.3)
        self.done.set()
        self.thread.join()
        self.sock.close()
        return [pylivelinkface.PyLiveLinkFace.decode(p) for p in self.packets]


def test_stream_sends_every_frame_with_predicts_values(shared_data, checkpoint, tmp_path, capsys):
    audio = shared_data / "speech" / "cmu_arctic_a0007_16k.wav"
    with pytest.raises(SystemExit) as e:
        main(["-q", "predict", str(audio), "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--no-plot"])
    assert e.value.code == 0
    with open(tmp_path / "cmu_arctic_a0007_16k.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], np.array([[float(x) for x in r[2:]] for r in rows[1:]])
    rx = Receiver()
    with pytest.raises(SystemExit) as e:
        main(
            [
                "-q",
                "stream",
                str(audio),
                "--checkpoint",
                str(checkpoint),
                "--to",
                f"127.0.0.1:{rx.port}",
                "--subject",
                "Actor1",
                "--start-timecode",
                "01:00:00:00",
                "--no-realtime",
                "--chunk-seconds",
                "0.25",
            ]
        )
    assert e.value.code == 0
    decoded = rx.stop()
    assert all(ok for ok, _ in decoded)
    faces = [f for _, f in decoded]
    assert len(faces) == len(body)  # every frame, none lost or extra
    frames = [f._frames for f in faces]
    assert frames[0] == 3600 * 60 and np.all(np.diff(frames) == 1)  # from the start timecode, one apart
    assert {f.name for f in faces} == {"Actor1"} and {f.fps for f in faces} == {60} and faces[0]._version == 6
    # Values by name: the packet's enum order against the CSV's columns.
    for name in ARKIT_52:
        shape = getattr(pylivelinkface.FaceBlendShape, pascal_case(name))
        got = np.array([f.get_blendshape(shape) for f in faces])
        np.testing.assert_allclose(got, body[:, header.index(pascal_case(name)) - 2], atol=1e-4)
    assert "sent" in capsys.readouterr().out


def test_frames_resampled_as_they_come_equal_the_whole_files():
    from blendsync.train.inference.livelink import FrameResampler
    from blendsync.train.inference.outputs import resample_curves

    rng = np.random.default_rng(0)
    curves = rng.uniform(size=(97, 5)).astype(np.float32)
    r = FrameResampler(30.0, 60.0, 5)
    parts = [r.push(curves[a:b]) for a, b in ((0, 1), (1, 13), (13, 14), (14, 60), (60, 97))]
    parts.append(r.finish(97 / 30.0))
    np.testing.assert_array_equal(np.concatenate(parts), resample_curves(curves, 30.0, 60.0, 97 / 30.0))


def test_raw_pcm_chunks_keep_every_sample_across_odd_reads():
    import io

    from blendsync.train.inference.sources import pcm_chunks

    x = (np.arange(-3000, 3001, dtype=np.int16)).reshape(-1, 1).repeat(2, axis=1)
    got = np.concatenate(list(pcm_chunks(io.BytesIO(x.tobytes()), 1000, 2, 0.037)))
    np.testing.assert_array_equal(got, x.astype(np.float32) / 32768.0)


@pytest.mark.slow
def test_realtime_pacing_sends_no_frame_before_its_instant(shared_data, checkpoint):
    import time

    from blendsync.train.inference.livelink import LiveLinkSender
    from blendsync.train.inference.predict import Predictor
    from blendsync.train.inference.sources import file_chunks
    from blendsync.train.inference.stream import stream_audio

    audio = shared_data / "speech" / "sr_chinese.flac"  # 0.96 s
    rx = Receiver()
    chunks, rate = file_chunks(audio, 0.1)
    t0 = time.perf_counter()
    pred = Predictor.load(checkpoint)
    sender = LiveLinkSender(pred.channels, port=rx.port, fps=60)
    rep = stream_audio(pred, chunks, rate, sender, fps=60, realtime=True, chunk_seconds=0.1)
    wall = time.perf_counter() - t0
    got = rx.stop()
    assert len(got) == rep.frames == 58  # 0.96 s at 60 fps
    assert wall >= rep.audio_s and min(rep.latencies) >= 0.0
