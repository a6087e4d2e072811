import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.shared.frame_grid import frame_times, grid_neighbours, n_frames, rows_to_grid


@given(
    n_samples=st.integers(min_value=1, max_value=16000 * 3600),
    sr=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
    fps=st.sampled_from([24.0, 25.0, 30.0, 50.0, 59.94, 60.0]),
)
def test_n_frames_counts_instants_inside_the_file(n_samples, sr, fps):
    dur = n_samples / sr
    T = n_frames(dur, fps)
    # Brute force over exact rationals: frame k is inside iff k * sr < n_samples * fps.
    from fractions import Fraction

    f = Fraction(str(fps))
    assert (T - 1) * sr < n_samples * f or T == 0
    assert T * sr >= n_samples * f - Fraction(1, 10**6)


def test_n_frames_exact_multiples():
    assert n_frames(10.0, 30.0) == 300
    assert n_frames(10.0 + 1e-12, 30.0) == 300
    assert n_frames(1 / 30, 30.0) == 1
    assert n_frames(0.0, 30.0) == 0


@settings(max_examples=60)
@given(
    R=st.integers(min_value=2, max_value=40),
    D=st.integers(min_value=1, max_value=4),
    hop=st.floats(min_value=0.001, max_value=0.1),
    offset=st.floats(min_value=-1, max_value=1),
    T=st.integers(min_value=1, max_value=60),
    fps=st.sampled_from([10.0, 30.0, 60.0]),
    seed=st.integers(0, 1000),
)
def test_rows_to_grid_matches_brute_force_interpolation(R, D, hop, offset, T, fps, seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(R, D)).astype(np.float32)
    row_times = offset + hop * np.arange(R)
    times = frame_times(T, fps)
    g = rows_to_grid(values, row_times, times)
    for k, t in enumerate(times):
        for d in range(D):
            want = np.interp(t, row_times, values[:, d].astype(np.float64))
            assert math.isclose(g.values[k, d], want, rel_tol=1e-5, abs_tol=1e-5)
    assert g.clamped_start == int(np.sum(times < row_times[0] - 1e-9))
    assert g.clamped_end == int(np.sum(times > row_times[-1] + 1e-9))


def test_rows_on_the_grid_are_taken_exactly():
    rows = np.arange(100, dtype=np.float32)[:, None]
    g = rows_to_grid(rows, np.arange(100) * 0.01, frame_times(30, 30.0))
    # Frame 3 is at 0.1 s = row 10 exactly; no interpolation error, no offset.
    assert g.values[3, 0] == 10.0
    assert g.values[0, 0] == 0.0


def test_single_row_fills_every_frame():
    g = rows_to_grid(np.ones((1, 3)), np.array([0.5]), frame_times(7, 30.0))
    assert g.values.shape == (7, 3) and (g.values == 1).all()


@settings(max_examples=200)
@given(
    R=st.integers(min_value=2, max_value=400),
    hop=st.sampled_from([0.01, 0.02, 0.013]),
    context=st.sampled_from([0.0, 1.0, 0.5]),
    T=st.integers(min_value=1, max_value=200),
    fps=st.sampled_from([24.0, 25.0, 29.97, 30.0, 60.0]),
    delay=st.floats(min_value=-0.2, max_value=0.2),
    seed=st.integers(0, 1000),
)
def test_the_rows_the_grid_reads_give_the_grid_bit_for_bit(R, hop, context, T, fps, delay, seed):
    """Gridding only the rows it reads (each time's two neighbours, the first and last row)
    gives every row's result to the bit: what lets openSMILE compute those rows only."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(R, 3)).astype(np.float32)
    values[rng.random(size=values.shape) < 0.05] = -0.0  # signed zeros kept too
    row_times = context + hop * np.arange(R)
    times = frame_times(T, fps) - delay
    lo, hi, w = grid_neighbours(row_times, times)
    assert np.all(hi == lo + 1) and np.all((w >= 0) & (w <= 1))
    read = np.unique(np.r_[0, R - 1, lo, hi])
    whole = rows_to_grid(values, row_times, times)
    part = rows_to_grid(values[read], row_times[read], times)
    assert np.array_equal(whole.values.view(np.uint32), part.values.view(np.uint32))
    assert (whole.clamped_start, whole.clamped_end) == (part.clamped_start, part.clamped_end)
