"""The audio/curve lag estimate on real speech with curves derived from it, shifted by known lags."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import lead, mouth_from_speech
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.shared.audio import decode_audio
from blendsync.shared.channels import ARKIT_52
from blendsync.shared.config import FeatureConfig
from blendsync.shared.features import compute_features
from blendsync.shared.frame_grid import n_frames
from blendsync.shared.sync import SyncConfig, estimate_lag, shift_targets

CFG = FeatureConfig()
JAW = ARKIT_52.index("jawOpen")
SPEECH = [
    "cmu_arctic_a0007_16k.wav",
    "ljspeech_LJ050-0131_22k.wav",
    "speechbrain_example1_16k.wav",
    "sr_english_44k.wav",
    "sr_french.aiff",
    "neurosync_input_88k.wav",
]


def take(shared_data, name: str, seed: int = 0):
    """(mel (T, 80), targets (T, 52) with jaw, lower lip and an unrelated blink) of a real recording."""
    dec = decode_audio(shared_data / "speech" / name, CFG.sample_rate)
    T = n_frames(dec.duration_s, CFG.fps)
    mel = compute_features(dec.samples, dec.sample_rate, T, CFG)["mel"].values
    jaw = mouth_from_speech(dec.samples, dec.sample_rate, T, CFG.fps)
    rng = np.random.default_rng(seed)
    targets = np.zeros((T, 52), np.float32)
    targets[:, JAW] = jaw + rng.normal(0, 0.01, T)
    targets[:, ARKIT_52.index("mouthLowerDownLeft")] = 0.4 * jaw
    targets[::50, ARKIT_52.index("eyeBlinkLeft")] = 1.0
    return mel, np.clip(targets, 0, 1)


@pytest.mark.parametrize("name", SPEECH)
def test_known_lags_are_found_within_one_frame(shared_data, name):
    mel, targets = take(shared_data, name)
    errors = {}
    for lag in range(-10, 11):
        est = estimate_lag(mel, lead(targets, lag), ARKIT_52, CFG.fps)
        assert est.lag_frames is not None, (lag, est.reason)
        errors[lag] = est.lag_frames - lag
    assert all(abs(e) <= 1 for e in errors.values()), errors


def test_estimate_reads_the_mouth_not_other_channels(shared_data):
    mel, targets = take(shared_data, SPEECH[1])
    est = estimate_lag(mel, lead(targets, 6), ARKIT_52, CFG.fps)
    assert est.channels == ("jawOpen", "mouthLowerDownLeft", "mouthLowerDownRight")
    assert est.lag_frames == 6 and est.lag_s == pytest.approx(0.2)
    assert est.correlation > 0.8 and est.confidence > 0.5


def test_silent_or_unrelated_curves_give_no_trusted_estimate(shared_data):
    mel, targets = take(shared_data, SPEECH[0])
    silent = estimate_lag(mel, np.zeros_like(targets), ARKIT_52, CFG.fps)
    assert silent.lag_frames is None and "do not move" in silent.reason
    assert silent.describe().startswith("no estimate")
    noise = np.zeros_like(targets)
    noise[:, JAW] = np.random.default_rng(1).uniform(0, 1, len(noise))
    est = estimate_lag(mel, noise, ARKIT_52, CFG.fps)
    assert not est.trusted(SyncConfig()), est.describe()
    quiet = estimate_lag(np.full_like(mel, -13.8), targets, ARKIT_52, CFG.fps)
    assert quiet.lag_frames is None and "silent" in quiet.reason


def test_custom_rigs_name_their_mouth_channels(shared_data):
    mel, targets = take(shared_data, SPEECH[1])
    names = [f"ctrl_{i}" for i in range(52)]
    none = estimate_lag(mel, lead(targets, 4), names, CFG.fps)
    assert none.lag_frames is None and "--sync-channels" in none.reason
    named = estimate_lag(mel, lead(targets, 4), names, CFG.fps, SyncConfig(channels=(f"ctrl_{JAW}",)))
    assert named.lag_frames == 4
    with pytest.raises(ValueError, match="not in the channel set"):
        estimate_lag(mel, targets, names, CFG.fps, SyncConfig(channels=("jawOpen",)))


def test_custom_spellings_of_mouth_opening_are_found():
    names = ["Jaw_Open", "mouth_open_c", "MouthLowerDown_L", "brow_up", "mouthClose"]
    assert SyncConfig().opening_channels(names) == ("Jaw_Open", "mouth_open_c", "MouthLowerDown_L")


def test_a_take_a_second_out_of_sync_is_found_and_listed(shared_data):
    """With a ±0.5 s search a +30 frame lead read as +13 at low confidence and was never
    listed: the search now spans ±1.5 s."""
    mel, targets = take(shared_data, SPEECH[5])
    for lag in (30, -30):
        est = estimate_lag(mel, lead(targets, lag), ARKIT_52, CFG.fps)
        assert abs(est.lag_frames - lag) <= 1 and est.out_of_sync(SyncConfig()), (lag, est)


def test_a_short_take_is_searched_over_a_quarter_of_its_length(shared_data):
    mel, targets = take(shared_data, SPEECH[5])
    est = estimate_lag(mel[:100], lead(targets, 5)[:100], ARKIT_52, CFG.fps)  # 3.3 s: ±25 frames
    assert abs(est.lag_frames - 5) <= 1
    short = estimate_lag(mel[:50], targets[:50], ARKIT_52, CFG.fps)
    assert short.lag_frames is None and "too short (50 frames; needs 60" in short.reason


def test_a_peak_at_the_search_edge_is_not_trusted(shared_data):
    mel, targets = take(shared_data, SPEECH[5])
    est = estimate_lag(mel, lead(targets, 14), ARKIT_52, CFG.fps, SyncConfig(max_lag_s=0.3))
    assert est.lag_frames == 9 and est.confidence == 0.0 and not est.trusted(SyncConfig())


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 40), lag=st.integers(-50, 50), seed=st.integers(0, 99))
def test_shift_takes_each_frame_from_lag_earlier_and_repeats_edges(T, lag, seed):
    x = np.random.default_rng(seed).uniform(0, 1, (T, 3)).astype(np.float32)
    y = shift_targets(x, lag)
    assert y.shape == x.shape and y.dtype == x.dtype
    for t in range(T):
        np.testing.assert_array_equal(y[t], x[min(max(t - lag, 0), T - 1)])
    if abs(lag) < T:  # undoing a shift restores every frame that stayed inside
        back = shift_targets(y, -lag)
        inside = slice(max(0, -lag), T - max(0, lag))
        np.testing.assert_array_equal(back[inside], x[inside])


def test_shifting_by_the_estimate_brings_the_take_in_step(shared_data):
    mel, targets = take(shared_data, SPEECH[2])
    late = lead(targets, -7)
    est = estimate_lag(mel, late, ARKIT_52, CFG.fps)
    assert est.lag_frames == -7 and est.out_of_sync(SyncConfig())
    after = estimate_lag(mel, shift_targets(late, est.lag_frames), ARKIT_52, CFG.fps)
    assert abs(after.lag_frames) <= 1 and not after.out_of_sync(SyncConfig())
