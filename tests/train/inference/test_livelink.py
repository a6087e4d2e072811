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
from tests.helpers import KD, REPO

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


@pytest.mark.slow
def test_an_offline_model_streams_every_frame_in_real_time(checkpoint):
    """The quickstart's kind of checkpoint (K = 128 frames a block) streamed in real time: its
    blocks' frames (256 at once at 60 fps) wait their turn in the pacer, none dropped, none
    before its time, on the features a live model streams on."""
    from blendsync.shared.frame_grid import n_frames
    from blendsync.train.inference.chunked import ChunkedAnimator
    from blendsync.train.inference.predict import Predictor
    from blendsync.train.inference.sources import file_chunks
    from blendsync.train.inference.stream import COMPUTE_MARGIN_S, make_animator, stream_audio

    audio = REPO / "data" / "example" / "chen_take3.wav"  # 7.9 s at 22.05 kHz
    pred = Predictor.load(checkpoint)
    assert pred.frames_per_window == KD == 128
    anim = make_animator(pred, 22050)
    assert isinstance(anim, ChunkedAnimator) and type(anim.features).__name__ == "LiveFeatures"
    anim.close()
    sent = []
    chunks, rate = file_chunks(audio, 0.1)
    rep = stream_audio(pred, chunks, rate, lambda j, row: sent.append(j), fps=60, realtime=True, chunk_seconds=0.1)
    assert rep.dropped == 0 and sent == list(range(n_frames(rep.audio_s, 60))) and rep.frames == len(sent)
    assert min(rep.latencies) >= rep.delay_s - 1e-3  # each at its time, a block's latency behind
    # Paced at the stated latency, the compute margin and the wait for the next 30 fps model frame.
    assert rep.delay_s == pytest.approx(rep.stated_latency_s + COMPUTE_MARGIN_S + 1 / 30)


BAD_STREAM_ARGUMENTS = {
    "no port": (["--to", "127.0.0.1"], "must be HOST:PORT"),
    "port 0": (["--to", "127.0.0.1:0"], "port in 1-65535"),
    "port 70000": (["--to", "127.0.0.1:70000"], "port in 1-65535"),
    "two ports": (["--to", "127.0.0.1:19001:5"], "an IPv6 address goes in brackets"),
    "unresolvable host": (["--to", "no-such-host.invalid:11111"], "cannot resolve 'no-such-host.invalid'"),
    "frame beyond the rate": (["--fps", "30", "--start-timecode", "00:00:00:30"], "frame 0 to fps - 1"),
    "negative frame": (["--start-timecode", "00:00:00:-1"], "within a day"),
    "99999 hours": (["--start-timecode", "99999:00:00:00"], "within a day"),
    "70 kB subject": (["--subject", "x" * 70_000], "--subject must be a name of 1 to 256 bytes"),
    "blank subject": (["--subject", " "], "--subject must be a name"),
    "sample rate 1e12": (["--sample-rate", "1000000000000"], "--sample-rate"),
    "chunk nan": (["--chunk-seconds", "nan"], "not a finite number"),
}


@pytest.mark.parametrize("case", sorted(BAD_STREAM_ARGUMENTS))
def test_stream_checks_its_arguments_before_reading_any_audio(checkpoint, case, capsys, monkeypatch):
    """Each was a traceback (or a MemoryError), and only after the first block had consumed
    piped audio: now exit 1 with one line, stdin unread."""
    import io

    extra, phrase = BAD_STREAM_ARGUMENTS[case]
    stdin = io.BytesIO(b"\0" * 64000)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(stdin))
    args = ["stream", "--stdin-pcm", "--checkpoint", str(checkpoint), "--no-realtime", "--to", "127.0.0.1:9", *extra]
    with pytest.raises(SystemExit) as e:
        main(["-q", *args])
    err = capsys.readouterr().err
    assert e.value.code == 1 and phrase in err and "Traceback" not in err, err
    assert stdin.tell() == 0


def test_stream_reaches_an_ipv6_receiver(shared_data, checkpoint, capsys):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    sock.settimeout(5)
    port = sock.getsockname()[1]
    audio = shared_data / "speech" / "cmu_arctic_a0007_16k.wav"
    with pytest.raises(SystemExit) as e:
        main(["-q", "stream", str(audio), "--checkpoint", str(checkpoint), "--no-realtime", "--to", f"[::1]:{port}"])
    assert e.value.code == 0
    assert pylivelinkface.PyLiveLinkFace.decode(sock.recv(4096))
    sock.close()


def test_stream_of_a_file_that_is_not_audio_is_one_line(checkpoint, tmp_path, capsys):
    junk = tmp_path / "notes.wav"
    junk.write_text("not audio")
    with pytest.raises(SystemExit) as e:
        main(["-q", "stream", str(junk), "--checkpoint", str(checkpoint), "--no-realtime", "--to", "127.0.0.1:9"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "notes.wav: cannot decode audio" in err and "Traceback" not in err
    one = tmp_path / "one.wav"  # decodes, but a sample is no audio: named by its file, not "<stream>"
    import soundfile as sf

    sf.write(one, np.array([0.1], np.float32), 16000)
    with pytest.raises(SystemExit) as e:
        main(["-q", "stream", str(one), "--checkpoint", str(checkpoint), "--no-realtime", "--to", "127.0.0.1:9"])
    err = capsys.readouterr().err
    assert e.value.code == 1 and f"{one}: audio is" in err and "<stream>" not in err, err


def test_no_realtime_sends_no_faster_than_a_receiver_with_a_default_buffer_takes(shared_data, checkpoint, capsys):
    """--no-realtime sent whole blocks in bursts: a receiver with the system's default UDP
    buffer got 166 of 180 frames. Frames now leave at most LiveLinkSender.MAX_RATE a second
    (after a short burst), every one arrives."""
    rx = Receiver()
    rx.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    audio = shared_data / "speech" / "cmu_arctic_a0007_16k.wav"
    with pytest.raises(SystemExit) as e:
        main(["-q", "stream", str(audio), "--checkpoint", str(checkpoint), "--no-realtime", "--fps", "60",
              "--to", f"127.0.0.1:{rx.port}"])  # fmt: skip
    assert e.value.code == 0
    sent = int(capsys.readouterr().out.split("sent ")[1].split(" frames")[0])
    assert len(rx.stop()) == sent
