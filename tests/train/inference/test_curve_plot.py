"""The preview image: its layout, that the curves and the waveform are where their values
say, and the tick maths."""

from __future__ import annotations

import io
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from blendsync.train.inference.curve_plot import BOTTOM, CURVE, LEFT, RIGHT, STRIP, TOP, WIDTH, nice_step, render, ticks


def _rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _strip(img: np.ndarray, i: int) -> np.ndarray:
    """Inside strip i's frame (output pixels)."""
    top = TOP + i * STRIP
    return img[top + 3 : top + STRIP - 22 - 3, LEFT + 3 : WIDTH - RIGHT - 3]


def _near(img: np.ndarray, colour: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    return np.abs(img - np.array(colour)).sum(axis=-1) < tol


def test_curves_and_waveform_are_drawn_where_their_values_are():
    sr, fps = 16000, 60.0
    samples = np.zeros(4 * sr, np.float32)
    samples[2 * sr :] = 0.5 * np.sin(np.arange(2 * sr) * 0.05)  # silence, then sound
    t = np.arange(240) / fps
    channels = ["a", "jawOpen", "b"]
    curves = np.zeros((240, 3), np.float32)
    curves[:, 1] = t / t[-1]  # a ramp 0 -> 1
    img = _rgb(render(samples, sr, curves, fps, channels, ["jawOpen"], "take.wav"))
    assert img.shape == (TOP + BOTTOM + 2 * STRIP, WIDTH, 3)

    wave = _strip(img, 0)
    ink = ~_near(wave, (255, 255, 255), 60) & ~_near(wave, (225, 225, 225), 30)  # not paper, not grid
    half = wave.shape[1] // 2
    assert ink[:, : half - 10].sum() < 0.02 * ink[:, half + 10 :].sum()  # sound only in the second half

    strip = _strip(img, 1)
    jaw = (strip[..., 2] - strip[..., 0] > 60) & _near(strip, CURVE, 200)  # the curve's blue, anti-aliased
    cols = [c for c in range(0, jaw.shape[1], 40) if jaw[:, c].any()]
    assert len(cols) > 15
    rows = [np.mean(np.nonzero(jaw[:, c])[0]) for c in cols]
    assert all(b < a for a, b in zip(rows, rows[1:]))  # the ramp climbs left to right
    h = jaw.shape[0]
    assert rows[0] > 0.85 * h and rows[-1] < 0.15 * h  # from the bottom (0) to the top (1)


def test_long_files_and_silence_render():
    sr, fps = 16000, 60.0
    png = render(np.zeros(10 * 60 * sr, np.float32), sr, np.zeros((36000, 1), np.float32), fps, ["x"], ["x"], "t")
    assert _rgb(png).shape == (TOP + BOTTOM + 2 * STRIP, WIDTH, 3)
    png = render(np.zeros(0, np.float32), sr, np.zeros((0, 1), np.float32), fps, ["x"], ["x"], "empty")
    assert _rgb(png).shape[1] == WIDTH


@given(st.floats(1e-4, 1e5), st.integers(2, 12))
def test_nice_step_is_1_2_5_and_the_smallest_that_fits(span, most):
    step = nice_step(span, most)
    mant = step / 10 ** math.floor(math.log10(step) + 1e-12)
    assert any(math.isclose(mant, m, rel_tol=1e-9) for m in (1, 2, 5, 10))
    assert span / step <= most * (1 + 1e-8)
    smaller = [m * 10**k for k in range(-6, 7) for m in (1, 2, 5) if m * 10**k < step * (1 - 1e-6)]
    assert all(span / s > most * (1 + 1e-10) for s in smaller)


@given(st.floats(-1e4, 1e4), st.floats(1e-3, 1e4), st.integers(2, 12))
def test_ticks_lie_in_the_range_evenly(lo, span, most):
    """Multiples of the step within the range (none where the range holds no multiple; the
    plot's ranges start at 0 or are symmetric about it, and then 0 is one)."""
    hi = lo + span
    got = ticks(lo, hi, most)
    step = nice_step(hi - lo, most)
    assert len(got) <= most + 1
    assert all(lo - 1e-6 * step <= v <= hi + 1e-6 * step for v in got)
    assert all(abs(v / step - round(v / step)) < 1e-6 for v in got)
    if len(got) > 1:
        assert np.allclose(np.diff(got), step, rtol=1e-6, atol=1e-9 * max(1.0, abs(lo)))
    if lo <= 0 <= hi:
        assert 0.0 in got
