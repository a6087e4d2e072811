"""Audio variants (bsfeat extract --augment): specs, what each step does to the samples,
and the curves' time scale."""

from __future__ import annotations

import numpy as np
import pytest

from blendsync.featurize.audio_variants import AudioVariant, AugmentError, parse_variants, variant_key
from blendsync.shared.targets import TargetCurves, time_scaled
from tests.helpers import speechlike

SR = 16000


@pytest.mark.parametrize(
    ("spec", "name", "speed"),
    [
        ("speed:0.9", "speed:0.9", 0.9),
        (" SPEED : 1.10 ", "speed:1.1", 1.1),
        ("pitch:2", "pitch:+2", 1.0),
        ("pitch:-1.5", "pitch:-1.5", 1.0),
        ("noise:20", "noise:20", 1.0),
        ("reverb:0.3", "reverb:0.3", 1.0),
        ("speed:1.25,noise:10", "speed:1.25,noise:10", 1.25),
        ("speed:0.8,speed:1.25", "speed:0.8,speed:1.25", 1.0),
    ],
)
def test_specs_parse_to_one_canonical_name(spec, name, speed):
    v = AudioVariant.parse(spec)
    assert v.name == name and v.speed == pytest.approx(speed)
    assert AudioVariant.parse(v.name) == v


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("wobble:2", "unknown step 'wobble:2'"),
        ("speed", "speed needs a speed factor"),
        ("speed:fast", "speed needs a speed factor"),
        ("speed:1", "leaves the audio as it is"),
        ("pitch:0", "leaves the audio as it is"),
        ("speed:2.5", "outside 0.5..2"),
        ("noise:inf", "noise needs a signal-to-noise ratio"),
        ("reverb:9", "outside 0.05..3"),
        ("speed:0.9,", "unknown step ''"),
    ],
)
def test_a_bad_spec_is_one_line_naming_it(spec, says):
    with pytest.raises(AugmentError) as e:
        AudioVariant.parse(spec)
    msg = str(e.value)
    assert says in msg and repr(spec) in msg and "\n" not in msg


def test_variants_are_listed_once_in_the_order_given():
    vs = parse_variants(["speed:0.9", "noise:20", "speed:0.90"])
    assert [v.name for v in vs] == ["speed:0.9", "noise:20"]


def test_variant_keys_differ_by_item_and_variant_and_are_stable():
    a, b = AudioVariant.parse("speed:0.9"), AudioVariant.parse("speed:1.1")
    k = variant_key("0" * 32, a)
    assert k == variant_key("0" * 32, AudioVariant.parse("speed:0.90"))
    assert len({k, variant_key("1" * 32, a), variant_key("0" * 32, b)}) == 3


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.1, 1.5])
def test_speed_scales_duration_and_pitch(factor):
    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = AudioVariant.parse(f"speed:{factor}").apply(tone, SR, "k")
    assert y.dtype == np.float32 and abs(len(y) - SR / factor) <= 2
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spectrum) * SR / len(y)
    assert peak_hz == pytest.approx(440 * factor, rel=0.01)


def test_pitch_shifts_the_tone_and_keeps_the_length():
    t = np.arange(SR) / SR
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = AudioVariant.parse("pitch:+2").apply(tone, SR, "k")
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert len(y) == SR and np.argmax(spectrum) * SR / len(y) == pytest.approx(440 * 2 ** (2 / 12), rel=0.01)


def test_noise_is_at_its_snr_and_seeded_by_the_key():
    x = speechlike(2.0, SR, seed=1)
    v = AudioVariant.parse("noise:20")
    y1, y2, y3 = v.apply(x, SR, "a"), v.apply(x, SR, "a"), v.apply(x, SR, "b")
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(y1, y3)
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y1 - x).astype(np.float64) ** 2))
    assert snr == pytest.approx(20, abs=0.3)


def test_reverb_keeps_the_level_and_spreads_a_click_over_its_time():
    click = np.zeros(SR, np.float32)
    click[100] = 1.0
    y = AudioVariant.parse("reverb:0.3").apply(click, SR, "k")
    assert len(y) == SR and np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(click**2)), rel=1e-4)
    energy = np.cumsum(y.astype(np.float64) ** 2)
    # Half the energy in the direct path, the rest decaying 60 dB over 0.3 s (and then cut).
    assert energy[101] / energy[-1] == pytest.approx(0.5, abs=0.05)
    assert 0.55 < energy[100 + int(0.01 * SR)] / energy[-1] < 0.9  # 20 ms on: the tail still rings
    assert 0.999 < energy[100 + int(0.2 * SR)] / energy[-1]


@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_time_scaled_curves_keep_their_values_at_scaled_times(speed):
    c = TargetCurves(values=np.random.default_rng(0).uniform(size=(60, 3)), times=np.arange(60) / 30, fps=30.0,
                     source_format="npy")  # fmt: skip
    s = time_scaled(c, speed)
    np.testing.assert_array_equal(s.values, c.values)
    np.testing.assert_allclose(s.times, c.times / speed)
    assert s.fps == pytest.approx(30 * speed) and s.duration_s == pytest.approx(c.duration_s / speed)
    assert time_scaled(c, 1.0) is c
