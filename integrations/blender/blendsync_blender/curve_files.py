"""Curve files read without numpy (Blender's Python need not have it): a Live Link Face CSV,
blendsync's JSON of curves, or a (T, C) .npy with its channel list. Every reader returns
Curves or raises CurveFileError with one line naming the file and what is wrong."""

from __future__ import annotations

import ast
import csv
import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

# The app's timecode: HH:MM:SS:FF.fff, FF frames at 60 fps, .fff a fraction of a frame.
TIMECODE = re.compile(r"^(\d+):(\d\d):(\d\d):(\d+(?:\.\d+)?)$")
TIMECODE_FPS = 60.0
# Head and eye rotations and emotion scores: columns of a Live Link Face CSV that are not
# shape keys.
NOT_SHAPE_KEYS = frozenset(
    "headyaw headpitch headroll lefteyeyaw lefteyepitch lefteyeroll righteyeyaw righteyepitch righteyeroll "
    "angry disgusted fearful happy neutral sad surprised".split()
)
# An interval off the median by more than this is jitter: the rows are re-spaced uniformly.
JITTER_TOLERANCE = 0.25


class CurveFileError(ValueError):
    """A curve file that cannot be imported: the message names the file and the problem."""


@dataclass(frozen=True)
class Curves:
    """channels (C names); times (T,) seconds from the first row, increasing; rows (T, C)
    values as tuples; fps: the rate the rows were written at (for reports and the scene)."""

    channels: tuple[str, ...]
    times: tuple[float, ...]
    rows: tuple[tuple[float, ...], ...]
    fps: float
    source: str

    @property
    def duration_s(self) -> float:
        return self.times[-1] if self.times else 0.0


def read_curves(path: str | Path, channels_file: str | Path | None = None, npy_fps: float = 30.0) -> Curves:
    """The curves in path by its suffix: .csv (Live Link Face), .json (blendsync), .npy (with
    channels_file, one name per line, and npy_fps: a .npy carries neither)."""
    p = Path(path)
    if not p.is_file():
        raise CurveFileError(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return read_livelink_csv(p)
    if suffix == ".json":
        return read_curves_json(p)
    if suffix == ".npy":
        if not channels_file:
            raise CurveFileError(f"{p}: a .npy has no channel names: give its channel list file")
        return read_npy(p, read_channel_list(channels_file), npy_fps)
    raise CurveFileError(f"{p}: not a curve file (.csv Live Link Face, .json blendsync or .npy)")


def read_channel_list(path: str | Path) -> tuple[str, ...]:
    """One name per line; an optional first line holding the count (as rig exports write it),
    checked against the names that follow. The format bstrain reads (--config channels_file)."""
    p = Path(path)
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise CurveFileError(f"{p}: cannot read the channel list ({e})") from None
    if lines and lines[0].isdigit():
        count, lines = int(lines[0]), lines[1:]
        if count != len(lines):
            raise CurveFileError(f"{p}: first line says {count} channels but {len(lines)} names follow")
    if not lines:
        raise CurveFileError(f"{p}: no channel names")
    return tuple(lines)


def parse_timecode(text: str) -> float | None:
    m = TIMECODE.match(text.strip())
    if not m:
        return None
    h, mi, s, ff = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + float(ff) / TIMECODE_FPS


def read_livelink_csv(p: Path) -> Curves:
    """A Live Link Face CSV: Timecode, BlendshapeCount, the curves by name (any order), then
    rotations (and emotion scores) that are not shape keys. Rows are placed by their
    timecodes; a file whose intervals jitter is re-spaced at its median rate."""
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            table = [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CurveFileError(f"{p}: cannot read as CSV ({e})") from None
    if not table:
        raise CurveFileError(f"{p}: empty file")
    header = [h.strip() for h in table[0]]
    lower = [h.lower() for h in header]
    if "timecode" not in lower or "blendshapecount" not in lower:
        raise CurveFileError(
            f"{p}: not a Live Link Face CSV (its header has no Timecode and BlendshapeCount columns: "
            f"{', '.join(header[:4])}{', ...' if len(header) > 4 else ''})"
        )
    tc, count = lower.index("timecode"), lower.index("blendshapecount")
    cols = [i for i, h in enumerate(lower) if i not in (tc, count) and h not in NOT_SHAPE_KEYS]
    if not cols:
        raise CurveFileError(f"{p}: no curve columns after Timecode and BlendshapeCount")
    stamps, rows = [], []
    for n, r in enumerate(table[1:], start=2):
        if len(r) != len(header):
            raise CurveFileError(f"{p}: line {n} has {len(r)} fields, the header {len(header)}")
        t = parse_timecode(r[tc])
        if t is None:
            raise CurveFileError(f"{p}: line {n}: not a timecode HH:MM:SS:FF.fff: {r[tc]!r}")
        try:
            values = tuple(float(r[i]) for i in cols)
        except ValueError:
            raise CurveFileError(f"{p}: line {n}: a curve value is not a number") from None
        if not all(math.isfinite(v) for v in values):
            raise CurveFileError(f"{p}: line {n}: a curve value is NaN or infinite")
        stamps.append(t)
        rows.append(values)
    times, order, fps = row_times(stamps, p)
    return Curves(tuple(header[i] for i in cols), times, tuple(rows[i] for i in order), fps, str(p))


# An interval within 10% of a whole multiple (>= 2) of the median is dropped capture frames; one
# under 1/1000 of it repeats the previous row; more than 5% of such intervals: an irregular
# clock. blendsync's reader (shared/targets.py) applies the same rules, so a take is timed alike.
WHOLE_MULTIPLE_TOLERANCE, REPEAT_TOLERANCE, MAX_IRREGULAR_FRACTION = 0.1, 1e-3, 0.05


def _median(v: list[float]) -> float:
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def row_times(stamps: list[float], p: Path) -> tuple[tuple[float, ...], list[int], float]:
    """Wall-clock stamps of the rows -> (times from the first, the rows' order, fps): sorted
    into time order (stable), a row repeating the previous time dropped, dropped capture
    frames (whole multiples of the median interval) kept as gaps; intervals that jitter by
    more than 25% of the median, or more than 5% of them irregular, re-space every row (in
    time order) at the median rate."""
    if len(stamps) < 2:
        raise CurveFileError(f"{p}: needs at least 2 rows to know the frame rate")
    t = [0.0]
    for a, b in zip(stamps, stamps[1:]):
        step = b - a
        t.append(t[-1] + (step + 86400 if step < -43200 else step))  # a take over midnight
    order = sorted(range(len(t)), key=t.__getitem__)
    times = [t[i] for i in order]
    steps = [b - a for a, b in zip(times, times[1:])]
    positive = [s for s in steps if s > 0]
    if not positive:
        raise CurveFileError(f"{p}: timecodes do not increase (every row has the same time)")
    med = _median(positive)
    ratio = [s / med for s in steps]
    repeat = [r < REPEAT_TOLERANCE for r in ratio]
    gap = [round(r) >= 2 and abs(r - round(r)) <= WHOLE_MULTIPLE_TOLERANCE for r in ratio]
    regular = [r for r, rep, g in zip(ratio, repeat, gap) if not rep and not g]
    dev = max((abs(r - 1) for r in regular), default=0.0)
    irregular = 1 - len(regular) / len(ratio)
    if dev > JITTER_TOLERANCE or irregular > MAX_IRREGULAR_FRACTION:
        return tuple(i * med for i in range(len(order))), order, 1.0 / med
    keep = [order[0]] + [i for i, rep in zip(order[1:], repeat) if not rep]
    return tuple(t[i] - t[keep[0]] for i in keep), keep, 1.0 / med


def read_curves_json(p: Path) -> Curves:
    """blendsync's JSON of curves: {"fps", "channels": [C], "values": [T rows of C]} (bstrain
    predict --format json, the server's format=json)."""
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CurveFileError(f"{p}: not JSON ({e})") from None
    if not isinstance(doc, dict) or not {"fps", "channels", "values"} <= set(doc):
        raise CurveFileError(f"{p}: not a blendsync curves JSON (needs fps, channels and values)")
    return curves_from_doc(doc, str(p))


def curves_from_doc(doc: dict, source: str) -> Curves:
    """The JSON object of curves (a file's or a server's answer) -> Curves."""
    if not isinstance(doc, dict):
        raise CurveFileError(f"{source}: not a JSON object of curves (fps, channels, values)")
    fps, channels, values = doc.get("fps"), doc.get("channels"), doc.get("values")
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not 0 < fps <= 1000:
        raise CurveFileError(f"{source}: fps must be a positive number, got {fps!r}")
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
        raise CurveFileError(f"{source}: channels must be a list of names")
    if not isinstance(values, list) or not values:
        raise CurveFileError(f"{source}: values must be a list of rows")
    rows = []
    for n, row in enumerate(values):
        if not isinstance(row, list) or len(row) != len(channels):
            raise CurveFileError(f"{source}: row {n} is not a list of {len(channels)} numbers")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row):
            raise CurveFileError(f"{source}: row {n} holds a value that is not a finite number")
        rows.append(tuple(float(v) for v in row))
    return Curves(tuple(channels), tuple(i / fps for i in range(len(rows))), tuple(rows), float(fps), source)


NPY_DTYPES = {"<f4": "f", "<f8": "d"}


def read_npy(p: Path, channels: tuple[str, ...], fps: float) -> Curves:
    """A (T, C) little-endian .npy (float32/64 as predict and rigs write them) whose C columns
    are channels in order, rows at fps."""
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CurveFileError(f"{p}: cannot read ({e.strerror})") from None
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise CurveFileError(f"{p}: not a .npy file")
    hlen_size = 2 if data[6] == 1 else 4
    try:
        (hlen,) = struct.unpack_from("<H" if hlen_size == 2 else "<I", data, 8)
        start = 8 + hlen_size + hlen
        # Arrays saved by Python 2's numpy write their sizes as longs: (1429L, 116L).
        header = ast.literal_eval(re.sub(r"(\d+)L\b", r"\1", data[8 + hlen_size : start].decode("latin1")))
    except (struct.error, ValueError, SyntaxError, MemoryError):
        raise CurveFileError(f"{p}: unreadable .npy header") from None
    if not isinstance(header, dict):
        raise CurveFileError(f"{p}: unreadable .npy header")
    descr, shape = header.get("descr"), tuple(header.get("shape", ()))
    if descr not in NPY_DTYPES:
        raise CurveFileError(f"{p}: dtype {descr!r} not read here; save float32 or float64 little-endian")
    if header.get("fortran_order") or len(shape) != 2 or not all(isinstance(n, int) for n in shape):
        raise CurveFileError(f"{p}: expected a (frames, channels) C-ordered array, got shape {shape}")
    T, C = shape
    if C != len(channels):
        raise CurveFileError(f"{p}: {C} columns but the channel list names {len(channels)}")
    if T < 1:
        raise CurveFileError(f"{p}: no frames")
    if not 0 < fps <= 1000:
        raise CurveFileError(f"{p}: fps must be positive, got {fps}")
    code = NPY_DTYPES[descr]
    if len(data) < start + T * C * struct.calcsize(code):
        raise CurveFileError(f"{p}: shorter than its header's {T} x {C} values (a truncated file?)")
    flat = struct.unpack_from(f"<{T * C}{code}", data, start)
    if not all(math.isfinite(v) for v in flat):
        raise CurveFileError(f"{p}: holds NaN or infinite values")
    rows = tuple(tuple(float(v) for v in flat[i * C : (i + 1) * C]) for i in range(T))
    return Curves(channels, tuple(i / fps for i in range(T)), rows, float(fps), str(p))
