"""Window maths on a file's frame arrays: pure functions, no I/O.

The window for target frame k covers frames [k - L + 1 + lookahead, k + lookahead]. A file
is padded once with L - 1 - lookahead frames before and lookahead frames after, so window
k is the view padded[k : k + L], every frame of every file (also files shorter than a
window) is a target exactly once at stride 1, and no window is ever copied to be cut.
"""

from __future__ import annotations

import numpy as np


def pad_lengths(window: int, lookahead: int) -> tuple[int, int]:
    """(frames padded before, frames padded after) a file."""
    return window - 1 - lookahead, lookahead


def window_span(k: int, window: int, lookahead: int) -> tuple[int, int]:
    """[start, stop) frame range of the window whose target is frame k (may leave the file)."""
    return k - window + 1 + lookahead, k + lookahead + 1


def n_windows(n_frames: int, stride: int) -> int:
    return -(-n_frames // stride)


def pad_frames(arr: np.ndarray, window: int, lookahead: int, pad_value: float = 0.0) -> np.ndarray:
    """(T, D) -> (T + L - 1, D) with pad_value rows at both ends."""
    left, right = pad_lengths(window, lookahead)
    out = np.full((arr.shape[0] + left + right, arr.shape[1]), pad_value, dtype=arr.dtype)
    out[left : left + arr.shape[0]] = arr
    return out


def frame_mask(n_frames: int, window: int, lookahead: int) -> np.ndarray:
    """(T + L - 1,) bool: True where the padded array holds a real frame."""
    left, right = pad_lengths(window, lookahead)
    m = np.zeros(n_frames + left + right, dtype=bool)
    m[left : left + n_frames] = True
    return m


def cut(padded: np.ndarray, k: int, window: int) -> np.ndarray:
    """The window of target frame k as a view of the padded array: (L, ...)."""
    return padded[k : k + window]
