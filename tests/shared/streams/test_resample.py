"""The resamplers as streams: sinc-4ms gives a whole signal's samples bit for bit whatever the
chunks, holds back a constant 4 ms at any rate (soxr's stream holds back in bursts), passes
speech's band flat and stops what would alias."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.shared.audio import AudioStream, decode_audio
from blendsync.shared.config import FEATURE_PRESETS, FeatureConfig
from blendsync.shared.streams.resample import SINC_HALF_S, SincResampler, hold_back_s, resample_whole
from tests.helpers import push_in_parts, speechlike

RATES = (8000, 11025, 22050, 44100, 48000, 96000)


@settings(max_examples=12, deadline=None)
@given(
    rate=st.sampled_from(RATES),
    cuts=st.lists(st.integers(1, 30_000), min_size=1, max_size=10, unique=True),
)
def test_any_chunks_give_the_whole_signal_s_samples_bit_for_bit(rate, cuts):
    x = speechlike(0.7, rate, seed=rate)
    whole = resample_whole(x, rate, 16000, "sinc-4ms")
    got = np.concatenate(push_in_parts(SincResampler(rate, 16000), x, sorted(c for c in cuts if c < len(x))))
    assert got.dtype == np.float32 and len(whole) == -(-len(x) * 16000 // rate)
    np.testing.assert_array_equal(got, whole)


@pytest.mark.parametrize("rate", RATES)
def test_a_stream_holds_back_a_constant_4_ms(rate):
    """Fed as a sound card feeds it (10 ms chunks, and odd ones), every output sample leaves
    once the input 4 ms after its instant is in: no bursts."""
    rs = SincResampler(rate, 16000)
    assert rs.delay_s == hold_back_s("sinc-4ms", rate, 16000) <= SINC_HALF_S + 2 / rate
    x = speechlike(1.0, rate, seed=1)
    given_out, fed = 0, 0
    for step in [rate // 100] * 50 + [7, 331, 1, 2999]:
        given_out += len(rs.push(x[fed : fed + step]))
        fed += step
        held = fed / rate - given_out / 16000
        assert 0 <= held <= rs.delay_s + 1 / 16000, (fed, held)


def test_soxr_s_stream_holds_back_in_bursts_and_says_so():
    """The default resampler's stream: its measured hold-back is what a live stream must wait."""
    assert 0.06 < hold_back_s("soxr-vhq", 44100, 16000) < 0.12
    assert hold_back_s("soxr-vhq", 16000, 16000) == hold_back_s("sinc-4ms", 16000, 16000) == 0.0


@pytest.mark.parametrize("rate", (22050, 44100, 48000))
def test_speech_s_band_passes_flat_and_what_would_alias_is_stopped(rate):
    t = np.arange(rate) / rate
    for f, lo, hi in ((100, 0.999, 1.001), (3000, 0.999, 1.001), (7000, 0.998, 1.002), (7800, 0.98, 1.002),
                      (8500, 0, 1e-3), (10000, 0, 1e-3)):  # fmt: skip
        y = resample_whole(np.sin(2 * np.pi * f * t).astype(np.float32), rate, 16000, "sinc-4ms")[2000:14000]
        amplitude = np.sqrt(2 * np.mean(y.astype(np.float64) ** 2))
        assert lo <= amplitude <= hi, (f, amplitude)
    # In the band, the samples are the tone's at their instants: no shift in time.
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    y = resample_whole(tone, rate, 16000, "sinc-4ms")
    want = np.sin(2 * np.pi * 1000 * np.arange(len(y)) / 16000)
    assert np.abs(y[200:-200] - want[200:-200]).max() < 1e-3


def test_a_file_and_a_stream_decode_alike_and_16_khz_is_taken_as_it_is(tmp_path):
    import soundfile as sf

    x = speechlike(1.3, 44100, seed=3)
    sf.write(tmp_path / "a.wav", x, 44100, subtype="FLOAT")
    dec = decode_audio(tmp_path / "a.wav", 16000, "sinc-4ms")
    stream = AudioStream(44100, 16000, "a.wav", "sinc-4ms")
    got = np.concatenate(push_in_parts(stream, x, list(range(441, len(x), 441))))
    assert dec.resampler == "sinc-4ms" and stream.delay_s == hold_back_s("sinc-4ms", 44100, 16000)
    np.testing.assert_array_equal(got, dec.samples)
    y16 = speechlike(0.5, 16000, seed=4)
    np.testing.assert_array_equal(resample_whole(y16, 16000, 16000, "sinc-4ms"), y16)
    with pytest.raises(ValueError, match="resampler must be one of"):
        resample_whole(y16, 44100, 16000, "linear")


def test_the_live_config_resamples_with_sinc_and_the_default_keeps_its_hash():
    assert FEATURE_PRESETS["live"].resampler == "sinc-4ms" and FeatureConfig().resampler == "soxr-vhq"
    assert "resampler" not in FeatureConfig().hashed_dict()  # every earlier store keeps its hash
    assert FeatureConfig(resampler="sinc-4ms").hash != FeatureConfig().hash
    with pytest.raises(ValueError, match="resampler must be one of"):
        FeatureConfig.from_dict({"resampler": "fast"})
