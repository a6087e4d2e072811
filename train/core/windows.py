"""Window and block maths on a file's frame arrays: pure functions, no I/O.

One window of L frames predicts a block of K consecutive frames (K = frames_per_window;
K = 1 is the method notes' one frame per window). The block whose first frame is f predicts
frames f … f + K - 1, and its window covers frames [f + K - L + lookahead, f + K - 1 + lookahead]:
the last frame of the block sits lookahead frames before the window's end, so block frame j
is window position L - K - lookahead + j.

A file is padded once with L - K - lookahead frames before and lookahead + K - 1 frames
after (L - 1 in all, whatever K), so the window of the block starting at f is the view
padded[f : f + L]; no window is ever copied to be cut.

Blocks start at frames 0, K·s, 2K·s, … (s = stride): at stride 1 every frame of every file
is a target exactly once (the last block of a file may reach past its end; those frames are
masked, never dropped); at stride s the first K of every K·s frames are targets.

Training may shift that grid by a phase p in [0, K·s) per file and epoch (block_starts): the
blocks start at p, p + K·s, …, and where frames before p are targets of the shifted pattern
a head block at frame 0 predicts them (its later frames are masked). The targets are then
the frames k with (k - p) mod K·s < K: still every frame once at stride 1, but a short take
is not cut into the same windows every epoch.
"""

from __future__ import annotations

import numpy as np


def check_block(window: int, lookahead: int, block: int) -> None:
    if block < 1 or block + lookahead > window:
        raise ValueError(
            f"frames per window must be in [1, window - lookahead] = [1, {window - lookahead}], got {block}"
        )


def pad_lengths(window: int, lookahead: int, block: int = 1) -> tuple[int, int]:
    """(frames padded before, frames padded after) a file."""
    return window - block - lookahead, lookahead + block - 1


def block_positions(window: int, lookahead: int, block: int = 1) -> tuple[int, int]:
    """[start, stop) window positions of the block's K frames."""
    return window - block - lookahead, window - lookahead


def window_span(first: int, window: int, lookahead: int, block: int = 1) -> tuple[int, int]:
    """[start, stop) frame range of the window of the block starting at frame `first` (may
    leave the file)."""
    return first + block - window + lookahead, first + block + lookahead


def block_step(block: int, stride: int) -> int:
    """Frames from one block's first frame to the next block's."""
    return block * stride


def head_length(block: int, stride: int, phase: int) -> int:
    """Target frames before the first shifted block (at frame `phase`): [0, phase - (s-1)·K)."""
    return max(0, phase - (stride - 1) * block)


def block_starts(n_frames: int, block: int = 1, stride: int = 1, phase: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(first frame, end of the real targets) of a file's blocks in time order, the grid
    shifted by `phase` in [0, K·s): a head block with targets [0, head) where head_length >
    0, then blocks at phase, phase + K·s, … (targets up to K frames, cut at the file's end)."""
    head = min(head_length(block, stride, phase), n_frames)
    regular = np.arange(phase, n_frames, block_step(block, stride), dtype=np.int64)
    starts = np.concatenate([[0], regular]) if head > 0 else regular
    stops = np.minimum(starts + block, n_frames).astype(np.int64)
    if head > 0:
        stops[0] = head
    return starts, stops


def n_blocks(n_frames: int, block: int = 1, stride: int = 1, phase: int = 0) -> int:
    """Blocks in a file of n_frames: ceil(T / (K·s)) without a phase."""
    head = 1 if min(head_length(block, stride, phase), n_frames) > 0 else 0
    return head + max(0, -(-(n_frames - phase) // block_step(block, stride)))


def target_frames(n_frames: int, block: int = 1, stride: int = 1, phase: int = 0) -> np.ndarray:
    """The frames of a file that are targets in one epoch, in time order."""
    k = np.arange(n_frames)
    return k[(k - phase) % block_step(block, stride) < block]


def prev_offset(block: int, stride: int) -> int:
    """Frames from the last frame of one block to the first frame of the next: the lag of
    the carried previous frame (stride s at K = 1, as in the method notes)."""
    return (stride - 1) * block + 1


def pad_frames(arr: np.ndarray, window: int, lookahead: int, pad_value: float = 0.0, block: int = 1) -> np.ndarray:
    """(T, D) -> (T + L - 1, D) with pad_value rows at both ends."""
    left, right = pad_lengths(window, lookahead, block)
    out = np.full((arr.shape[0] + left + right, arr.shape[1]), pad_value, dtype=arr.dtype)
    out[left : left + arr.shape[0]] = arr
    return out


def frame_mask(n_frames: int, window: int, lookahead: int, block: int = 1) -> np.ndarray:
    """(T + L - 1,) bool: True where the padded array holds a real frame."""
    left, right = pad_lengths(window, lookahead, block)
    m = np.zeros(n_frames + left + right, dtype=bool)
    m[left : left + n_frames] = True
    return m


def cut(padded: np.ndarray, first: int, window: int) -> np.ndarray:
    """The window of the block starting at frame `first` as a view of the padded array: (L, ...)."""
    return padded[first : first + window]
