"""Curves onto the scene's frames: rows at the file's own times -> one value per channel at
every scene frame, by linear interpolation in time (a capture's rows are not on the scene's
frame grid, and its rate need not be the scene's)."""

from __future__ import annotations

import bisect

from .curve_files import Curves


def scene_rate(fps: int, fps_base: float) -> float:
    """Blender's frame rate: render.fps / render.fps_base (29.97 is 30 / 1.001)."""
    return fps / fps_base


# Blender's frame rate presets (render.fps, render.fps_base).
PRESETS = (
    (23.976, (24, 1.001)),
    (24.0, (24, 1.0)),
    (25.0, (25, 1.0)),
    (29.97, (30, 1.001)),
    (30.0, (30, 1.0)),
    (48.0, (48, 1.0)),
    (50.0, (50, 1.0)),
    (59.94, (60, 1.001)),
    (60.0, (60, 1.0)),
    (120.0, (120, 1.0)),
)


def rate_for_scene(fps: float) -> tuple[int, float]:
    """(render.fps, render.fps_base) for a file's rate: the nearest of Blender's presets within
    0.5% (a Live Link Face take runs at about 59.9 fps: the scene gets 59.94, and the curves are
    resampled onto it by their times), else the nearest whole rate and the base that makes it
    exact."""
    near = min(PRESETS, key=lambda p: abs(p[0] - fps))
    if abs(near[0] - fps) <= 0.005 * fps:
        return near[1]
    whole = max(1, round(fps))
    return (whole, 1.0) if abs(fps - whole) < 1e-3 else (whole, whole / fps)


def on_frames(curves: Curves, fps: float, columns: list[int], gain: float = 1.0) -> list[list[float]]:
    """Values at scene frames 0, 1, ... (frame k at k / fps s of the file) while k / fps is within
    the file: (K, len(columns)) as rows of floats, each the channel's value times gain."""
    times = curves.times
    K = int(curves.duration_s * fps + 1e-6) + 1
    out = []
    for k in range(K):
        t = k / fps
        j = min(max(bisect.bisect_right(times, t) - 1, 0), len(times) - 1)
        if j + 1 < len(times) and times[j + 1] > times[j]:
            w = (t - times[j]) / (times[j + 1] - times[j])
            w = min(max(w, 0.0), 1.0)
            a, b = curves.rows[j], curves.rows[j + 1]
            out.append([(a[c] + w * (b[c] - a[c])) * gain for c in columns])
        else:
            out.append([curves.rows[j][c] * gain for c in columns])
    return out
