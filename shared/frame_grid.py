"""The frame grid: frame k is the instant k / fps.

Extractors run at their own hop (10 ms); their rows are put on the grid by linear
interpolation *in time*, so frame k of every stream describes the instant k / fps for files
of any length (no integer-hop approximation that drifts, e.g. 533 samples for 16 kHz/30 fps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def n_frames(duration_s: float, fps: float) -> int:
    """Frames whose instant lies inside [0, duration): k / fps < duration."""
    if duration_s <= 0:
        return 0
    # The epsilon keeps an exact multiple (10.0 s at 30 fps -> 300, not 301) robust to
    # float rounding of n_samples / sample_rate.
    return int(math.ceil(duration_s * fps - 1e-9))


def frame_times(n: int, fps: float) -> np.ndarray:
    """(n,) float64 seconds of frames 0..n-1."""
    return np.arange(n, dtype=np.float64) / float(fps)


@dataclass(frozen=True)
class GridResult:
    """values: (T, D) float32 on the grid; clamped_start / clamped_end: frames whose time was
    before the first row's time or after the last one (they take that edge row)."""

    values: np.ndarray
    clamped_start: int
    clamped_end: int


def grid_neighbours(row_times: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows each time is interpolated between: lo, hi (T,) int64 row indices (hi = lo + 1)
    and hi's weight w (T,) float64, times outside the rows' span clamped to the edge rows.
    row_times (R,) increasing, R >= 2."""
    t = np.clip(times, row_times[0], row_times[-1])
    hi = np.searchsorted(row_times, t, side="right")
    hi = np.clip(hi, 1, len(row_times) - 1)
    lo = hi - 1
    span = row_times[hi] - row_times[lo]
    w = np.where(span > 0, (t - row_times[lo]) / np.where(span > 0, span, 1.0), 0.0)
    return lo, hi, w


def rows_to_grid(values: np.ndarray, row_times: np.ndarray, times: np.ndarray) -> GridResult:
    """Resample rows (R, D) stamped at increasing row_times (R,) onto times (T,).

    Linear interpolation between the two rows around each time; times outside the rows'
    span take the edge row and are counted. One row -> every frame takes it.
    """
    values = np.asarray(values)
    row_times = np.asarray(row_times, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != row_times.shape[0]:
        raise ValueError(f"values {values.shape} do not match row_times {row_times.shape}")
    if values.shape[0] == 0:
        raise ValueError("no rows to put on the grid")
    T = times.shape[0]
    clamped_start = int(np.count_nonzero(times < row_times[0] - 1e-9))
    clamped_end = int(np.count_nonzero(times > row_times[-1] + 1e-9))
    if values.shape[0] == 1:
        return GridResult(np.repeat(values.astype(np.float32), T, axis=0), clamped_start, clamped_end)
    lo, hi, w = grid_neighbours(row_times, times)
    w = w[:, None]
    out = values[lo] * (1.0 - w) + values[hi] * w
    return GridResult(out.astype(np.float32), clamped_start, clamped_end)
