"""What predict writes for a file: Live Link Face CSV, .npy, JSON and a PNG of the curves,
each written whole or not at all (shared.files)."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blendsync.shared.channels import ARKIT_52, LIVELINK_ROTATIONS, pascal_case
from blendsync.shared.files import write_atomically
from blendsync.shared.targets import LIVELINK_FPS


def livelink_timecode(seconds: float) -> str:
    """Seconds from 0 -> 'HH:MM:SS:FF.fff' with FF frames at 60 fps and .fff a fraction of a
    frame, as the Live Link Face app writes them."""
    frames = round(seconds * LIVELINK_FPS * 1000) / 1000  # whole 1/1000ths of a frame
    whole_s = int(frames // LIVELINK_FPS)
    ff = frames - whole_s * LIVELINK_FPS
    h, m, s = whole_s // 3600, whole_s % 3600 // 60, whole_s % 60
    return f"{h:02d}:{m:02d}:{s:02d}:{ff:06.3f}"


def finite_curves(curves: np.ndarray) -> np.ndarray:
    """curves, or ValueError when any value is NaN or infinite: a curve file never holds a
    number made up for one (NaN printed with six decimals read 9.224192)."""
    bad = int(np.count_nonzero(~np.isfinite(curves)))
    if bad:
        raise ValueError(f"the curves hold {bad} non-finite value(s) (NaN or inf): nothing written")
    return curves


def livelink_csv(curves: np.ndarray, fps: float, channels: list[str], source: str = "") -> bytes:
    """curves (T, 52) in [0, 1] at fps -> a Live Link Face CSV: Timecode from
    00:00:00:00.000, BlendshapeCount 61, the 52 curves in the app's column order, then head
    and eye rotations written as zeros (the model predicts no rotations)."""
    finite_curves(curves)
    if list(channels) != list(ARKIT_52):
        raise ValueError(
            f"Live Link Face CSV needs the 52 ARKit channels; this model predicts {len(channels)} "
            "other channels: use --format npy or json"
        )
    zeros = ",".join(["0.000000"] * len(LIVELINK_ROTATIONS))
    header = ",".join(["Timecode", "BlendshapeCount", *map(pascal_case, ARKIT_52), *LIVELINK_ROTATIONS])
    values = six_decimals(np.clip(curves, 0.0, 1.0))
    lines = [header] + [f"{livelink_timecode(i / fps)},61,{row},{zeros}" for i, row in enumerate(values)]
    return ("\n".join(lines) + "\n").encode()


def six_decimals(v: np.ndarray) -> list[str]:
    """(T, C) values in [0, 1] -> T lines, each row's values as f"{x:.6f}" joined by commas.
    float32 rows are written as digits with numpy (formatting value by value was 0.2 s of a
    120 s file): v * 1e6 is exact in float64 (24 significant bits times 15625 * 2^6), so
    rounding it half to even is the correctly rounded decimal the format gives (tested
    against it). Other dtypes take the format itself."""
    if v.dtype != np.float32:
        return [",".join(f"{x:.6f}" for x in row) for row in v]
    T, C = v.shape
    k = np.rint(v.astype(np.float64) * 1e6).astype(np.int64)
    out = np.empty((T, C, 9), np.uint8)
    out[..., 0] = 48 + k // 1_000_000
    out[..., 1] = ord(".")
    for j in range(6):
        out[..., 2 + j] = 48 + (k // 10 ** (5 - j)) % 10
    out[..., 8] = ord(",")
    rows = out.reshape(T, 9 * C)[:, :-1]
    return [r.tobytes().decode("ascii") for r in rows]


def curves_json(curves: np.ndarray, fps: float, channels: list[str], source: str | None) -> bytes:
    """Curves as JSON, the one shape every JSON of curves has (predict --format json, the
    server's format=json; a WebSocket frame message carries one row of it as "values"):
    {"source": the audio's name or null, "fps": float, "channels": [C names],
    "frames": T, "values": [T rows of C numbers]}, row t at t / fps s of the audio, values
    rounded to 6 decimals (the Live Link Face CSV's precision)."""
    finite_curves(curves)
    doc = {
        "source": source,
        "fps": float(fps),
        "channels": list(channels),
        "frames": int(curves.shape[0]),
        "values": np.round(curves.astype(np.float64), 6).tolist(),
    }
    return json.dumps(doc).encode()


def curves_npy(curves: np.ndarray, fps: float, channels: list[str], source: str) -> bytes:
    finite_curves(curves)
    buf = io.BytesIO()
    np.save(buf, curves.astype(np.float32))
    return buf.getvalue()


def plot_prediction(
    path: Path, samples: np.ndarray, sr: int, curves: np.ndarray, fps: float, channels: list[str], title: str
) -> None:
    """The audio (N,) at sr and the preferred curves of (T, C) at fps, stacked, as a PNG
    (curve_plot: drawn straight into pixels, about 25 ms for a five-second line)."""
    from blendsync.train.core.plots import curve_channels
    from blendsync.train.inference.curve_plot import render

    names = curve_channels(channels, curves)
    write_atomically(path, render(samples, sr, curves, fps, channels, names, title))


def resample_curves(curves: np.ndarray, fps_in: float, fps_out: float, duration_s: float) -> np.ndarray:
    """(T, C) at fps_in -> (T', C) at fps_out by linear interpolation in time, T' frames
    covering [0, duration)."""
    from blendsync.shared.frame_grid import frame_times, n_frames, rows_to_grid

    if math.isclose(fps_in, fps_out):
        return curves
    T = n_frames(duration_s, fps_out)
    return np.clip(rows_to_grid(curves, frame_times(curves.shape[0], fps_in), frame_times(T, fps_out)).values, 0, 1)


@dataclass(frozen=True)
class CurveFormat:
    """A file predict can write for an audio file. encode(curves (T, C), fps, channel names,
    source audio) -> the file's bytes (the server answers with them); reorderable: its
    columns follow --channel-order (the Live Link Face CSV has the app's own)."""

    suffix: str
    encode: Callable[[np.ndarray, float, list[str], str | None], bytes]
    reorderable: bool
    doc: str

    def write(self, path: Path, curves: np.ndarray, fps: float, channels: list[str], source: str) -> None:
        """The file, whole or not at all (shared.files)."""
        write_atomically(path, self.encode(curves, fps, channels, source))


# predict --format: the one list of curve files (the CLI's choices are its keys).
CURVE_FORMATS: dict[str, CurveFormat] = {
    "livelink": CurveFormat(".csv", livelink_csv, False, "Live Link Face CSV (the 52 ARKit curves)"),
    "npy": CurveFormat(".npy", curves_npy, True, "(T, C) float32"),
    "json": CurveFormat(".json", curves_json, True, "channels, fps and values"),
}
