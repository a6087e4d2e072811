"""Target curves: Live Link Face CSV, .npy/.npz arrays and HDF5 datasets -> (T, C) on the grid.

Every reader returns the curves with their own timestamps; putting them on the frame grid
is one resampling by time (shared.frame_grid), whatever the source rate.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from blendsync.shared.channels import ChannelSet, pascal_case
from blendsync.shared.frame_grid import frame_times, rows_to_grid

log = logging.getLogger(__name__)

LIVELINK_FPS = 60.0
_TIMECODE = re.compile(r"^\s*(\d+):(\d{2}):(\d{2})[:;.](\d+(?:\.\d*)?)\s*$")
_CONTAINER = re.compile(r"^(?P<path>.*?\.(?:h5|hdf5|npz))(?::(?P<key>[^:\\]+))?$", re.IGNORECASE)
ARRAY_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5")


class TargetError(ValueError):
    """A target file that cannot be used."""


@dataclass(frozen=True)
class TargetSpec:
    """Where a row's targets live: a file, an optional dataset/array name inside it, and an
    fps for formats that do not carry their own timing."""

    path: Path
    key: str | None = None
    fps: float | None = None
    # The array's column order by name (shared.channels.CHANNEL_ORDERS); None: the channel
    # set's own order, column for column.
    order: str | None = None

    @property
    def kind(self) -> str:
        s = self.path.suffix.lower()
        if s == ".csv":
            return "livelink"
        if s == ".npy":
            return "npy"
        if s == ".npz":
            return "npz"
        if s in (".h5", ".hdf5"):
            return "hdf5"
        return "unknown"

    def describe(self) -> str:
        return f"{self.path}:{self.key}" if self.key else str(self.path)

    @classmethod
    def parse(cls, text: str, base_dir: Path, fps: float | None = None, order: str | None = None) -> TargetSpec:
        m = _CONTAINER.match(text.strip())
        key = None
        raw = text.strip()
        if m:
            raw, key = m.group("path"), m.group("key")
            if key:
                key = key.strip().lstrip("/") or None
        p = Path(raw).expanduser()
        if not p.is_absolute():
            p = base_dir / p
        return cls(path=p, key=key, fps=fps, order=order)


@dataclass(frozen=True, kw_only=True)
class TargetCurves:
    """values: (N, C) float64 in channel-set order; times: (N,) seconds from the first row."""

    values: np.ndarray
    times: np.ndarray
    fps: float
    source_format: str
    notes: tuple[str, ...] = field(default=())

    @property
    def duration_s(self) -> float:
        return float(self.times[-1] + 1.0 / self.fps) if len(self.times) else 0.0


def time_scaled(curves: TargetCurves, speed: float) -> TargetCurves:
    """The curves of the take played `speed` times as fast: each row comes at its time /
    speed, at fps x speed (the same values)."""
    if speed == 1.0:
        return curves
    return replace(curves, times=curves.times / speed, fps=curves.fps * speed)


def parse_timecode(tc: str) -> float:
    """'HH:MM:SS:FF.fff' (FF frames at 60 fps, .fff a fraction of a frame) -> seconds."""
    m = _TIMECODE.match(tc)
    if not m:
        raise ValueError(f"not a timecode HH:MM:SS:FF[.fff]: {tc!r}")
    h, mi, s, ff = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + float(ff) / LIVELINK_FPS


# A row interval within this fraction of a whole multiple (>= 2) of the median is that many
# frames' worth of time: frames the capture dropped, not jitter.
WHOLE_MULTIPLE_TOLERANCE = 0.1
# An interval under this fraction of the median (timecodes carry 1/1000 of a frame) is the
# same time again: a repeated row.
REPEAT_TOLERANCE = 1e-3
# Dropped and repeated frames are rare events; when more intervals than this fraction look
# like them, the file's clock is irregular (jitter), not a capture with a few lost frames.
MAX_IRREGULAR_FRACTION = 0.05


@dataclass(frozen=True)
class RowTimes:
    """Which rows to use, in time order (rows (N,) int indices into the file's rows), their
    times (N,) in seconds from the first, the fps the intervals imply and the warnings given."""

    rows: np.ndarray
    times: np.ndarray
    fps: float
    notes: tuple[str, ...]


def times_from_timecodes(stamps: np.ndarray, source: str, jitter_tolerance: float) -> RowTimes:
    """Absolute timecode seconds (N,) of the file's rows -> the rows to use and their times.

    Real takes run at ~59.9 fps, so per-row stamps are used as they are. In order:
    - rows whose timecodes go backwards are sorted by time (stable), with a warning that
      names the first such line;
    - a row repeating the previous row's time is a repeated capture frame: dropped, counted;
    - an interval that is a whole multiple (>= 2) of the median, within 10%, is dropped
      capture frames: the timecodes are kept, so the frame grid interpolates across the gap
      and the rows around it keep their times; counted;
    - any other interval off the median by more than jitter_tolerance is jitter (some writers
      put something other than a frame fraction after the dot): every row is re-spaced
      uniformly at the median rate, as the file's row order gives them; so is a file where
      more than 5% of the intervals look like dropped or repeated frames (a writer with an
      irregular clock, not a capture that lost a few frames).
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    if len(stamps) < 2:
        raise TargetError(f"{source}: one row only; need at least 2 to know the frame rate")
    steps = np.diff(stamps)
    # A take that runs over midnight wraps its wall clock.
    steps = np.where(steps < -43200, steps + 86400, steps)
    rows, t, notes = _in_time_order(np.concatenate([[0.0], np.cumsum(steps)]), source)
    steps = np.diff(t)
    pos = steps[steps > 0]
    med = float(np.median(pos)) if len(pos) else 0.0
    if med <= 0:
        raise TargetError(f"{source}: timecodes do not increase (every row has the same time)")
    ratio = steps / med
    repeat = ratio < REPEAT_TOLERANCE
    whole = np.round(ratio)
    gap = (whole >= 2) & (np.abs(ratio - whole) <= WHOLE_MULTIPLE_TOLERANCE)
    regular = ~repeat & ~gap
    dev = float(np.max(np.abs(ratio[regular] - 1.0))) if regular.any() else 0.0
    irregular = float(np.mean(~regular))
    if dev > jitter_tolerance or irregular > MAX_IRREGULAR_FRACTION:
        dev = max(dev, float(np.max(np.abs(ratio - 1.0))))
        note = (
            f"{source}: row intervals jitter by up to {dev:.0%} of their median "
            f"({steps.min() * 1000:.1f}-{steps.max() * 1000:.1f} ms around {med * 1000:.2f} ms); "
            f"using uniform spacing at {1 / med:.3f} fps"
        )
        for n in notes:
            log.warning(n)
        log.warning(note)
        return RowTimes(rows, np.arange(len(t)) * med, 1.0 / med, (*notes, note))
    if repeat.any():
        notes.append(f"{source}: {int(repeat.sum())} repeated row(s) (the previous row's time again): dropped")
        keep = np.concatenate([[True], ~repeat])
        rows, t = rows[keep], t[keep]
    if gap.any():
        missing = int((whole[gap] - 1).sum())
        notes.append(
            f"{source}: {missing} capture frame(s) missing in {int(gap.sum())} gap(s) (intervals of whole "
            f"frames); interpolated across, timecodes kept"
        )
    for n in notes:
        log.warning(n)
    return RowTimes(rows, t, 1.0 / med, tuple(notes))


def _in_time_order(t: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(row order, times in it, notes): rows sorted by time (stable) where timecodes go
    backwards, with a note naming the first such line (data row i is line i + 2)."""
    rows = np.arange(len(t))
    back = np.flatnonzero(np.diff(t) < 0)
    if not len(back):
        return rows, t, []
    rows = np.argsort(t, kind="stable")
    moved = int(np.count_nonzero(rows != np.arange(len(t))))
    return (
        rows,
        t[rows],
        [
            f"{source}: timecodes go backwards at {len(back)} place(s) (first at line {back[0] + 3}); "
            f"{moved} rows sorted into time order"
        ],
    )


def read_livelink_csv(path: Path, channels: ChannelSet, jitter_tolerance: float = 0.25) -> TargetCurves:
    """Live Link Face CSV, by column name: Timecode, Blend[sS]hapeCount, the channel columns
    (PascalCase or the channel's own spelling, case-insensitive); other columns ignored."""
    src = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise TargetError(f"{src}: target file not found") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise TargetError(f"{src}: not a readable CSV ({e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise TargetError(f"{src}: empty CSV")
    header = [h.strip() for h in rows[0]]
    lower = {h.lower(): i for i, h in enumerate(header)}
    if "timecode" not in lower:
        raise TargetError(f"{src}: no Timecode column (columns: {header[:5]}...)")
    if "blendshapecount" not in lower:
        log.debug("%s: no BlendshapeCount column", src)
    cols, missing = [], []
    for name in channels.channels:
        i = lower.get(pascal_case(name).lower(), lower.get(name.lower()))
        if i is None:
            missing.append(name)
        cols.append(i)
    if missing:
        raise TargetError(
            f"{src}: missing {len(missing)} of {len(channels.channels)} channel columns of "
            f"channel set {channels.name!r}: {missing[:8]}{'...' if len(missing) > 8 else ''}"
        )
    body = rows[1:]
    if len(body) < 2:
        raise TargetError(f"{src}: {len(body)} data row(s); need at least 2")
    tci = lower["timecode"]
    stamps = np.empty(len(body))
    values = np.empty((len(body), len(cols)))
    for n, r in enumerate(body):
        line = n + 2
        if len(r) < len(header):
            raise TargetError(f"{src}: line {line} has {len(r)} fields, header has {len(header)}")
        try:
            stamps[n] = parse_timecode(r[tci])
        except ValueError as e:
            raise TargetError(f"{src}: line {line}: {e}") from None
        try:
            values[n] = [float(r[i]) for i in cols]
        except ValueError as e:
            raise TargetError(f"{src}: line {line}: non-numeric curve value ({e})") from None
    rt = times_from_timecodes(stamps, src, jitter_tolerance)
    return TargetCurves(
        values=values[rt.rows], times=rt.times, fps=rt.fps, source_format="livelink_csv", notes=rt.notes
    )


# Frame rates a capture can have: anything outside is a typo or a corrupt file.
FPS_RANGE = (1.0, 1000.0)


def fps_problem(fps) -> str | None:
    """None for a usable frame rate, else what is wrong with it (one message for every
    source: the manifest's targets_fps, an .npz entry, an HDF5 attribute)."""
    try:
        f = float(fps)
    except (TypeError, ValueError):
        return f"frame rate must be a number, got {fps!r}"
    lo, hi = FPS_RANGE
    if not (math.isfinite(f) and lo <= f <= hi):
        return f"frame rate must be in [{lo:g}, {hi:g}] fps, got {f:.6g}"
    return None


def read_array_targets(spec: TargetSpec, channels: ChannelSet) -> TargetCurves:
    """(N, C) arrays from .npy, .npz ([:name]) or HDF5 (:/dataset), uniformly spaced at fps
    (the manifest's targets_fps, else the file's own `fps`)."""
    src = spec.describe()
    readers = {"npy": _read_npy, "npz": _read_npz, "hdf5": _read_hdf5}
    if spec.kind not in readers:
        raise TargetError(f"{src}: unknown target format {spec.path.suffix!r}")
    try:
        arr, file_fps = readers[spec.kind](spec, src)
    except FileNotFoundError:
        raise TargetError(f"{src}: target file not found") from None
    except TargetError:
        raise
    except Exception as e:  # corrupt files raise a zoo of types (OSError, ValueError, BadZipFile)
        raise TargetError(f"{src}: cannot read targets ({type(e).__name__}: {e})") from None
    fps = spec.fps if spec.fps is not None else file_fps
    if fps is None:
        raise TargetError(f"{src}: no frame rate; give a targets_fps column or an fps in the file")
    bad = fps_problem(fps)
    if bad:
        raise TargetError(f"{src}: {bad}")
    arr = np.asarray(arr)
    if np.iscomplexobj(arr):
        raise TargetError(f"{src}: complex values (dtype {arr.dtype}); blendshape weights are real numbers")
    if arr.ndim != 2:
        raise TargetError(f"{src}: expected a 2-D (frames, channels) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise TargetError(f"{src}: expected numbers, got dtype {arr.dtype}")
    if spec.order is not None:
        arr = _columns_by_name(arr, spec.order, channels, src)
    if arr.shape[1] != len(channels.channels):
        raise TargetError(
            f"{src}: {arr.shape[1]} channels, but channel set {channels.name!r} has {len(channels.channels)}"
        )
    if arr.shape[0] < 2:
        raise TargetError(f"{src}: {arr.shape[0]} frame(s); need at least 2")
    return TargetCurves(
        values=arr.astype(np.float64), times=np.arange(arr.shape[0]) / fps, fps=float(fps), source_format=spec.kind
    )


def _columns_by_name(arr: np.ndarray, order: str, channels: ChannelSet, src: str) -> np.ndarray:
    """An array whose columns follow a named order -> the channel set's columns, by name
    (columns the set lacks, such as head rotations, are dropped)."""
    from blendsync.shared.channels import CHANNEL_ORDERS

    names = CHANNEL_ORDERS.get(order)
    if names is None:
        raise TargetError(f"{src}: unknown targets_order {order!r} (choose from {', '.join(CHANNEL_ORDERS)})")
    if arr.shape[1] != len(names):
        raise TargetError(f"{src}: {arr.shape[1]} columns, but order {order!r} has {len(names)}")
    where = {n: i for i, n in enumerate(names)}
    missing = [c for c in channels.channels if c not in where]
    if missing:
        raise TargetError(f"{src}: order {order!r} has no column for {missing[:5]} of channel set {channels.name!r}")
    return arr[:, [where[c] for c in channels.channels]]


def _read_npy(spec: TargetSpec, src: str) -> tuple[np.ndarray, float | None]:
    return np.load(spec.path, allow_pickle=False), None


def _read_npz(spec: TargetSpec, src: str) -> tuple[np.ndarray, float | None]:
    """The named array (or the only one besides `fps`) and the file's `fps` entry."""
    with np.load(spec.path, allow_pickle=False) as z:
        names = [k for k in z.files if k != "fps"]
        key = spec.key
        if key is None:
            if len(names) != 1:
                raise TargetError(f"{src}: holds arrays {names}; name one as {spec.path.name}:NAME")
            key = names[0]
        if key not in z.files:
            raise TargetError(f"{src}: no array {key!r} (has {z.files})")
        fps = float(np.asarray(z["fps"]).reshape(-1)[0]) if "fps" in z.files else None
        return z[key], fps


def _read_hdf5(spec: TargetSpec, src: str) -> tuple[np.ndarray, float | None]:
    """The dataset and an `fps` attribute on it (else on the file)."""
    import h5py

    if not spec.key:
        raise TargetError(f"{src}: name the dataset as {spec.path.name}:/DATASET")
    with h5py.File(spec.path, "r") as h:
        if spec.key not in h:
            raise TargetError(f"{src}: no dataset {spec.key!r}")
        ds = h[spec.key]
        if not isinstance(ds, h5py.Dataset):
            raise TargetError(f"{src}: {spec.key!r} is an HDF5 {type(ds).__name__.lower()}, not a dataset")
        attrs = ds.attrs if "fps" in ds.attrs else h.attrs
        fps = float(np.asarray(attrs["fps"]).reshape(-1)[0]) if "fps" in attrs else None
        return ds[()], fps


def read_targets(spec: TargetSpec, channels: ChannelSet, jitter_tolerance: float = 0.25) -> TargetCurves:
    if spec.kind == "livelink":
        curves = read_livelink_csv(spec.path, channels, jitter_tolerance)
    else:
        curves = read_array_targets(spec, channels)
    bad = ~np.isfinite(curves.values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise TargetError(
            f"{spec.describe()}: {int(bad.sum())} NaN/inf values (first at frame {r}, channel {channels.channels[c]!r})"
        )
    return curves


@dataclass(frozen=True)
class TargetsOnGrid:
    """values: (T, C) float32 in [0, 1]."""

    values: np.ndarray
    counts: dict


def targets_on_grid(curves: TargetCurves, fps: float, T: int) -> TargetsOnGrid:
    g = rows_to_grid(curves.values, curves.times, frame_times(T, fps))
    out_of_range = int(np.count_nonzero((g.values < 0) | (g.values > 1)))
    values = np.clip(g.values, 0.0, 1.0)
    return TargetsOnGrid(
        values.astype(np.float32),
        {"targets_clipped_values": out_of_range, "targets_clamped_end_frames": g.clamped_end},
    )
