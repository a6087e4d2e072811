"""Live features: every sample processed once, the values of a whole file's features.

The eGeMAPS rows come from openSMILE running as a stream and equal the one-pass extraction
exactly; the log-mel rows are the same spectra computed row by row, equal within float32
rounding of the mel projection (1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.shared.audio import decode_audio
from blendsync.shared.config import FEATURE_PRESETS, EmotionConfig, FeatureConfig
from blendsync.shared.features import compute_features, emotion_on_grid
from blendsync.shared.frame_grid import frame_times, n_frames
from blendsync.shared.streams.live import LiveFeatures, LiveMel, right_context_s
from tests.helpers import push_in_parts

MEL_TOLERANCE = 1e-5


def _whole(path, cfg: FeatureConfig):
    dec = decode_audio(path, cfg.sample_rate, cfg.resampler)
    T = n_frames(len(dec.samples) / cfg.sample_rate, cfg.fps)
    f = compute_features(dec.samples, cfg.sample_rate, T, cfg)
    return f["mel"].values, f["emotion"].values


def _streamed(path, cfg: FeatureConfig, bounds):
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    out = push_in_parts(LiveFeatures(cfg, sr), data, bounds)
    return np.concatenate([m for m, _ in out]), np.concatenate([e for _, e in out])


@pytest.mark.parametrize(
    "name,preset,chunk_s",
    [
        ("ljspeech_LJ050-0131_22k.wav", "live", 0.01),
        ("ljspeech_LJ050-0131_22k.wav", "default", 0.37),
        ("cmu_arctic_a0007_16k.wav", "live", 0.023),
        ("sr_chinese.flac", "default", 0.05),  # shorter than one emotion context
        ("sr_chinese.flac", "live", 0.05),
    ],
)
def test_streamed_features_equal_the_whole_files(shared_data, name, preset, chunk_s):
    path = shared_data / "speech" / name
    cfg = FEATURE_PRESETS[preset]
    sr = sf.info(str(path)).samplerate
    step = max(1, int(chunk_s * sr))
    mel, emo = _streamed(path, cfg, list(range(step, sf.info(str(path)).frames, step)))
    want_mel, want_emo = _whole(path, cfg)
    assert mel.shape == want_mel.shape and emo.shape == want_emo.shape
    assert np.abs(mel - want_mel).max() <= MEL_TOLERANCE
    np.testing.assert_array_equal(emo, want_emo)


@settings(max_examples=4, deadline=None)
@given(cuts=st.lists(st.integers(1, 60_000), min_size=1, max_size=12, unique=True))
def test_any_chunk_boundaries_give_the_same_features(shared_data, cuts):
    path = shared_data / "speech" / "speechbrain_example1_16k.wav"
    cfg = FEATURE_PRESETS["live"]
    mel, emo = _streamed(path, cfg, sorted(cuts))
    want_mel, want_emo = _whole(path, cfg)
    assert np.abs(mel - want_mel).max() <= MEL_TOLERANCE
    np.testing.assert_array_equal(emo, want_emo)


def test_frames_leave_as_soon_as_their_right_context_has_arrived(shared_data):
    """At 16 kHz with the live config a frame waits for its mel rows only: at most 26 ms after
    its instant (plus the rest of the 10 ms chunk it arrives in); the emotion row is 0.15 s
    behind and never holds a frame back. Fed at the pace of real time for 2 s, as a sound card
    would (openSMILE works in a thread of its own)."""
    import time

    path = shared_data / "speech" / "cmu_arctic_a0007_16k.wav"
    cfg = FEATURE_PRESETS["live"]
    data, sr = sf.read(str(path), dtype="float32")
    live = LiveFeatures(cfg, sr)
    assert right_context_s(cfg, sr) == pytest.approx(0.026)
    late = []
    for i in range(0, 2 * sr, 160):
        before = live.frames
        live.push(data[i : i + 160])
        have = (i + 160) / sr
        late += [have - k / cfg.fps for k in range(before, live.frames)]
        assert live.frames >= n_frames(max(0.0, have - live.right_context_s - 0.0101), cfg.fps)
        time.sleep(0.01)
    live.close()
    # at most the right context plus one 10 ms chunk; at least half the FFT window (16 ms)
    assert max(late) <= 0.026 + 0.01 + 1e-9 and min(late) >= 0.016 - 1e-9


def test_mel_rows_equal_librosas_whatever_the_pushes(shared_data):
    from blendsync.shared.features import mel_rows

    y = decode_audio(shared_data / "speech" / "cmu_arctic_a0007_16k.wav", 16000).samples
    want, want_t = mel_rows(y, 16000, FeatureConfig().mel)
    live = LiveMel(FeatureConfig().mel, 16000)
    parts = [live.push(y[a:b]) for a, b in ((0, 1), (1, 700), (700, 12345), (12345, len(y)))] + [live.finish()]
    got = np.concatenate([r for r, _ in parts])
    np.testing.assert_array_equal(np.concatenate([t for _, t in parts]), want_t)
    assert np.abs(got - want).max() <= MEL_TOLERANCE


def test_the_live_config_delays_the_emotion_row_and_fills_the_first_context(shared_data):
    y = decode_audio(shared_data / "speech" / "cmu_arctic_a0007_16k.wav", 16000).samples
    T = n_frames(len(y) / 16000, 30.0)
    times = frame_times(T, 30.0)
    live = EmotionConfig(delay_s=0.15, before_first_context="fill")
    got = emotion_on_grid(y, 16000, times, live)
    shifted = emotion_on_grid(y, 16000, times - 0.15, EmotionConfig())
    before = times - 0.15 < 1.0 - 1e-9  # the first context ends at 1 s
    assert got.counts["emotion_partial_context_frames"] == before.sum() == 35
    assert (got.values[before] == 0.0).all()
    np.testing.assert_array_equal(got.values[~before], shifted.values[~before])


def test_new_settings_keep_every_earlier_hash_and_make_their_own():
    assert FeatureConfig().hash == "4908e8c902a2c8ec"  # the hash of every store written before them
    live = FEATURE_PRESETS["live"]
    assert live.hash != FeatureConfig().hash and live.input_hash != FeatureConfig().input_hash
    assert FeatureConfig.from_dict(live.to_dict()).hash == live.hash


def test_extract_features_live_and_its_refusals(tmp_path, shared_data, capsys):
    from blendsync.featurize.cli import main
    from blendsync.shared.store import FeatureStore

    (tmp_path / "m.csv").write_text(f"audio\n{shared_data / 'speech' / 'cmu_arctic_a0007_16k.wav'}\n")
    with pytest.raises(SystemExit) as e:
        main(
            ["extract", str(tmp_path / "m.csv"), "--store", str(tmp_path / "s.zarr"), "--features", "live", "--serial"]
        )
    assert e.value.code == 0
    (key,) = FeatureStore(tmp_path / "s.zarr").item_keys()
    assert FeatureStore(tmp_path / "s.zarr").item_attrs(key).doc["feature_config_hash"] == FEATURE_PRESETS["live"].hash
    (tmp_path / "c.yaml").write_text("fps: 30\n")
    with pytest.raises(SystemExit) as e:
        main(["extract", str(tmp_path / "m.csv"), "--features", "live", "--config", str(tmp_path / "c.yaml")])
    assert e.value.code == 1 and "give one of them" in capsys.readouterr().err


def test_a_push_longer_than_opensmiles_ring_buffer_goes_through(shared_data):
    """A server client may send a whole file in one message: 19.5 s pushed at once (the source
    ring holds 6 s) waited forever; now it is written a second at a time."""
    from blendsync.shared.audio import decode_audio
    from blendsync.shared.config import FEATURE_PRESETS
    from blendsync.shared.streams.live import LiveFeatures

    dec = decode_audio(shared_data / "speech" / "neurosync_input_88k.wav", 16000)
    lf = LiveFeatures(FEATURE_PRESETS["live"], 16000)
    mel, emo = lf.push(dec.samples)
    mel2, emo2 = lf.finish()
    lf.close()
    assert len(mel) + len(mel2) == len(emo) + len(emo2) > 500


def test_a_live_stream_imports_no_pandas_on_its_way():
    """Row times convert without pandas (shared.features.smile): importing it at a stream's
    first rows made the first frames of `bstrain stream` 200 ms late."""
    import subprocess
    import sys

    from tests.helpers import REPO

    code = (
        "import sys, numpy as np\n"
        "from blendsync.shared.config import FEATURE_PRESETS\n"
        "from blendsync.shared.streams.live import LiveFeatures\n"
        "f = LiveFeatures(FEATURE_PRESETS['live'], 16000)\n"
        "y = (np.random.default_rng(0).standard_normal(16000 * 3) * 0.1).astype(np.float32)\n"
        "n = sum(len(f.push(y[i:i + 160])[0]) for i in range(0, len(y), 160))\n"
        "f.close()\n"
        "assert n > 30, n\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


LIVE_RUN = (
    "import numpy as np\n"
    "from blendsync.shared.config import FEATURE_PRESETS\n"
    "from blendsync.shared.streams.live import LiveFeatures\n"
    "for rate in (16000, 44100):\n"
    "    f = LiveFeatures(FEATURE_PRESETS['live'], rate)\n"
    "    f.push(np.random.default_rng(0).standard_normal((rate, 1)).astype(np.float32) * 0.1)\n"
    "    f.finish()\n"
)


def test_live_streams_leave_no_folder_behind(tmp_path):
    """Every stream, server start and session rate used to leave a bsfeat_live_smile_* folder in
    the temp dir: the ring-buffer configs are files named by their content in the one folder
    the one-pass configs share."""
    import os
    import subprocess
    import sys

    from tests.helpers import REPO

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", LIVE_RUN], cwd=REPO, env=env, check=True, capture_output=True)
    assert os.listdir(tmp_path) == [f"blendsync-opensmile-{os.getuid()}"]
    names = os.listdir(tmp_path / f"blendsync-opensmile-{os.getuid()}")
    assert len([n for n in names if n.endswith(".conf.inc")]) <= 6  # the sources of two rates, the buffers, ...
