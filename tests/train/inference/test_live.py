"""A live model on audio as it arrives: the curves of whole-file predict of the same
checkpoint, whatever the chunks; frames paced evenly a fixed delay behind the audio, never
before their time, late and dropped frames counted; Ctrl-C ends a stream cleanly."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.train.inference.live import LiveAnimator
from blendsync.train.inference.pacing import Pacer
from blendsync.train.inference.predict import Predictor
from tests.helpers import push_in_parts, sigint_default

TOLERANCE = 1e-4


def _streamed(pred, path, bounds):
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return np.concatenate(push_in_parts(LiveAnimator(pred, sr), data, bounds))


@pytest.mark.parametrize("chunk_s", [0.01, 0.13, 1.0])
def test_streamed_curves_equal_whole_file_predict(live_checkpoint, shared_data, chunk_s):
    path = shared_data / "speech" / "ljspeech_LJ050-0131_22k.wav"
    pred = Predictor.load(live_checkpoint)
    assert pred.model.streaming
    sr, n = sf.info(str(path)).samplerate, sf.info(str(path)).frames
    step = int(chunk_s * sr)
    got = _streamed(pred, path, list(range(step, n, step)))
    want = pred.animate(path)["curves"]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TOLERANCE


@settings(max_examples=3, deadline=None)
@given(cuts=st.lists(st.integers(1, 64_000), min_size=1, max_size=10, unique=True))
def test_any_chunk_boundaries_give_the_same_curves(live_checkpoint, shared_data, cuts):
    path = shared_data / "speech" / "cmu_arctic_a0007_16k.wav"
    pred = Predictor.load(live_checkpoint)
    got = _streamed(pred, path, sorted(cuts))
    assert np.abs(got - pred.animate(path)["curves"]).max() <= TOLERANCE


def test_the_live_latency_is_the_lookahead_plus_the_right_context(live_checkpoint):
    pred = Predictor.load(live_checkpoint)
    anim = LiveAnimator(pred, 16000)
    try:
        assert anim.latency_s() == pytest.approx(2 / 30 + 0.026)  # lookahead 2 frames, the mel's 26 ms
    finally:
        anim.close()


def test_an_offline_model_is_refused_by_the_live_animator(checkpoint):
    with pytest.raises(ValueError, match="offline"):
        LiveAnimator(Predictor.load(checkpoint), 16000)


def test_the_pacer_sends_nothing_before_its_time_and_counts_late_and_dropped():
    import time

    sent = []
    start = time.perf_counter()
    p = Pacer(lambda j, row: sent.append((j, time.perf_counter())), fps=100, delay_s=0.02, start=start, capacity=50)
    for j in range(10):
        p.put(j, np.zeros(3))
    rep = p.close()
    assert [j for j, _ in sent] == list(range(10)) and rep.sent == 10 and rep.dropped == 0
    assert rep.late == 0  # all were in before their time (a sleep's overshoot is no lateness)
    assert all(t >= start + j / 100 + 0.02 for j, t in sent)  # never before its time
    # A sink slower than the frames: they fall behind, are counted late, and the queue never
    # holds more than its capacity (the oldest waiting frames are dropped and counted).
    slow = Pacer(lambda j, row: time.sleep(0.02), fps=100, delay_s=0.0, start=time.perf_counter(), capacity=3)
    for j in range(20):
        slow.put(j, np.zeros(3))
    rep = slow.close()
    assert rep.dropped >= 10 and rep.sent + rep.dropped == 20 and rep.late >= 1


@pytest.mark.slow
def test_cli_streams_a_live_model_in_real_time_to_a_receiver(live_checkpoint, shared_data, capsys):
    """Every frame at the model's 30 fps, in order, numbered one apart, the values of
    whole-file predict (within float32 packing), none before its instant."""
    from blendsync.train.cli import main
    from tests.train.inference.test_livelink import Receiver, pylivelinkface

    path = shared_data / "speech" / "cmu_arctic_a0007_16k.wav"
    rx = Receiver()
    with pytest.raises(SystemExit) as e:
        main(["-q", "stream", str(path), "--checkpoint", str(live_checkpoint), "--to", f"127.0.0.1:{rx.port}"])
    assert e.value.code == 0
    decoded = rx.stop()
    assert all(ok for ok, _ in decoded)
    faces = [f for _, f in decoded]
    pred = Predictor.load(live_checkpoint)
    want = pred.animate(path)["curves"]
    assert len(faces) == len(want) and [f._frames for f in faces] == list(range(len(want)))
    assert {f.fps for f in faces} == {30}
    jaw = pylivelinkface.FaceBlendShape.JawOpen
    np.testing.assert_allclose([f.get_blendshape(jaw) for f in faces], want[:, pred.channels.index("jawOpen")],
                               atol=1e-4)  # fmt: skip
    out = capsys.readouterr().out
    # Paced at the lookahead (67 ms) + the mel's right context (26 ms) + a 10 ms chunk + 25 ms for compute.
    assert "at 30 fps" in out and "0 dropped" in out and "paced 128 ms behind the audio" in out


@pytest.mark.slow
def test_ctrl_c_ends_a_live_stream_with_130_and_no_traceback(live_checkpoint, shared_data):
    import signal
    import subprocess
    import sys
    import time

    pcm = (sf.read(str(shared_data / "speech" / "cmu_arctic_a0007_16k.wav"), dtype="int16")[0]).tobytes()
    proc = subprocess.Popen(
        [sys.executable, "-m", "blendsync.train.cli", "-q", "stream", "--stdin-pcm", "--checkpoint",
         str(live_checkpoint), "--to", "127.0.0.1:9"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=sigint_default,
    )  # fmt: skip
    proc.stdin.write(pcm[: len(pcm) // 2])
    proc.stdin.flush()
    time.sleep(6)  # started, streaming, waiting for more audio
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err and b"interrupted" in err


def test_stream_takes_one_source_and_says_what_a_microphone_needs(live_checkpoint, capsys):
    from blendsync.train.cli import main

    for args in ([], ["--stdin-pcm", "--mic"]):
        with pytest.raises(SystemExit) as e:
            main(["stream", *args, "--checkpoint", str(live_checkpoint)])
        assert e.value.code == 1 and "give one source" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # no input device (perhaps no PortAudio either) on a test machine
        main(["stream", "--mic", "--checkpoint", str(live_checkpoint), "--to", "127.0.0.1:9"])
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert "pip install -e '.[mic]' and PortAudio (apt-get install libportaudio2)" in err or (
        "no audio input device found; list them with: bstrain stream --list-devices" in err
    ), err
    with pytest.raises(SystemExit) as e:
        main(["stream", "--stdin-pcm", "--input-device", "2", "--checkpoint", str(live_checkpoint)])
    assert e.value.code == 1 and "--input-device picks the --mic device" in capsys.readouterr().err
    for bad in ("nohost", "127.0.0.1:0", "127.0.0.1:70000", "host.invalid:11111"):
        with pytest.raises(SystemExit) as e:
            main(["stream", "--stdin-pcm", "--checkpoint", str(live_checkpoint), "--to", bad])
        assert e.value.code == 1 and "--to" in capsys.readouterr().err


def test_list_devices_needs_no_checkpoint_and_says_what_there_is(capsys):
    from blendsync.train.cli import main

    with pytest.raises(SystemExit) as e:
        main(["stream", "--list-devices"])
    out = capsys.readouterr()
    if e.value.code == 1:  # no PortAudio here: the line that installs it
        assert "apt-get install libportaudio2" in out.err
    else:
        assert e.value.code == 0 and ("no audio input devices found" in out.out or "Hz" in out.out)


DEVICES = [
    {"index": 0, "name": "HDA Intel PCH: ALC257 Analog (hw:0,0)", "channels": 2, "sample_rate": 44100.0,
     "default": False},
    {"index": 3, "name": "USB Audio: Yeti Stereo Microphone", "channels": 2, "sample_rate": 48000.0, "default": True},
    {"index": 4, "name": "USB Audio: Yeti Mono", "channels": 1, "sample_rate": 48000.0, "default": False},
]  # fmt: skip


def test_an_input_device_is_picked_by_index_or_name():
    from blendsync.train.inference.sources import NO_INPUT_DEVICE, pick_input_device

    assert pick_input_device(DEVICES, None)["index"] == 3  # the system's default
    assert pick_input_device(DEVICES[:1], None)["index"] == 0  # else the first
    assert pick_input_device(DEVICES, "0")["index"] == 0
    assert pick_input_device(DEVICES, "alc257")["index"] == 0
    assert pick_input_device(DEVICES, "USB Audio: Yeti Mono")["index"] == 4
    with pytest.raises(ValueError, match="names several input devices .*3: USB Audio: Yeti Stereo"):
        pick_input_device(DEVICES, "yeti")
    with pytest.raises(ValueError, match="names no input device .*--list-devices"):
        pick_input_device(DEVICES, "9")
    with pytest.raises(ValueError, match=NO_INPUT_DEVICE):
        pick_input_device([], None)
