"""openSMILE's functionals of one long file in pieces that run at once, stitched exactly.

One openSMILE pass is single-threaded and is most of a file's featurize time (about 2.5 s of
the 3 s for 120 s of 16 kHz speech on one core of the 2-core reference VM). A file is cut into
pieces of output rows; each piece's pass starts `WARM_UP_S` plus a context earlier and runs
`TAIL_S` past its last row, so that the stateful low-level descriptors (pitch smoothing,
jitter, shimmer, the 3-frame averages) have forgotten where the piece's audio began and do
not yet see where it ends. On real speech they agree bit for bit with the whole-file pass
after about 0.25 s (tests/shared/features/test_pieces.py); the warm-up is 3 s.

Agreement is checked, not assumed: neighbouring pieces both compute the rows around their
boundary, and those rows must be equal bit for bit; where they are not (a state that had not
converged), the file is computed in one pass instead. Either way the rows are the whole-file
pass's own, and so are their times (integer nanoseconds, as openSMILE's Python wrapper
makes them), so the feature config and its hash do not change.

Where only some rows are wanted (the rows a frame grid reads), each piece computes those of
its own rows plus the rows it is compared on; rows carry their file row index throughout.

The pieces run through a `mapper` (map(fn, items) -> results in order): a thread pool in
`bstrain predict`, the server's per-core compute slots in `bstrain serve`. openSMILE's C
code runs without Python's interpreter lock, so threads run in parallel.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

# openSMILE's low-level descriptors come every 10 ms.
LLD_RATE = 100
# Audio each later piece reads before its first row's context: the descriptors' state settles.
WARM_UP_S = 3.0
# Audio each earlier piece reads past its last row's context: no end-of-input effect reaches it.
TAIL_S = 1.0
# Rows each side of a boundary both pieces compute and must agree on.
CHECK_ROWS = 50
# No piece shorter than this: below it the warm-up and tail cost more than the parallelism gains.
MIN_PIECE_S = 20.0

Mapper = Callable[[Callable, Sequence], Iterable]


def serial_map(fn: Callable, items: Sequence) -> list:
    return [fn(x) for x in items]


@dataclass(frozen=True)
class Workers:
    """How one file's work is split: into up to `parts` pieces, run through `mapper`. The
    openSMILE pass here and the model's blocks (train.inference.predict) both use it."""

    parts: int = 1
    mapper: Mapper = serial_map


ONE_PASS = Workers()


@dataclass(frozen=True, kw_only=True)
class Piece:
    """openSMILE runs on samples [start_sample, stop_sample); its local row 0 is the file's
    row first_row; the file's rows [keep_from, keep_to) come from this piece (keep_to None:
    to the end), the rows within CHECK_ROWS of keep_from / keep_to are compared with the
    neighbour's."""

    start_sample: int
    stop_sample: int
    first_row: int
    keep_from: int
    keep_to: int | None


@dataclass(frozen=True)
class PieceRows:
    """values: (R, 88) float64 as openSMILE gives them; starts_ns: (R,) int64 window starts;
    index: (R,) int64 ascending, each row's index among all the pass's rows (0 … R - 1 where
    every row was computed)."""

    values: np.ndarray
    starts_ns: np.ndarray
    index: np.ndarray


def whole_file(n_samples: int) -> Piece:
    return Piece(start_sample=0, stop_sample=n_samples, first_row=0, keep_from=0, keep_to=None)


def plan(n_samples: int, sr: int, context_s: float, hop_s: float, parts: int) -> list[Piece]:
    """Pieces of roughly equal rows; one piece (the whole file) where parts < 2, the file is
    too short for two pieces of MIN_PIECE_S, or sr is not a whole number of samples per 10 ms."""
    whole = [whole_file(n_samples)]
    if parts < 2 or sr % LLD_RATE:
        return whole
    spf = sr // LLD_RATE  # samples per descriptor frame
    step = round(hop_s * LLD_RATE)  # descriptor frames per row
    context = round(context_s * LLD_RATE)
    rows = (n_samples // spf - context) // step  # about the whole pass's row count
    parts = min(parts, int(n_samples / sr // MIN_PIECE_S))
    if parts < 2 or rows < parts * 4 * CHECK_ROWS:
        return whole
    warm = math.ceil(WARM_UP_S * LLD_RATE / step) + CHECK_ROWS
    tail = math.ceil((context + TAIL_S * LLD_RATE) / step) + CHECK_ROWS
    bounds = [round(i * rows / parts) for i in range(parts + 1)]
    pieces = []
    for i in range(parts):
        first = 0 if i == 0 else max(0, bounds[i] - warm)
        last = i == parts - 1
        stop = n_samples if last else min(n_samples, (bounds[i + 1] + tail) * step * spf)
        pieces.append(
            Piece(
                start_sample=first * step * spf,
                stop_sample=stop,
                first_row=first,
                keep_from=bounds[i],
                keep_to=None if last else bounds[i + 1],
            )
        )
    return pieces


def piece_rows(pieces: Sequence[Piece], i: int, rows: np.ndarray) -> np.ndarray:
    """The file rows (K,) ascending that piece i computes of the wanted rows (ascending):
    those it keeps and those it is compared on with its neighbours."""
    p = pieces[i]
    keep = rows[(rows >= p.keep_from) & ((rows < p.keep_to) if p.keep_to is not None else True)]
    checks = [keep]
    if i:
        checks.append(np.arange(p.keep_from - CHECK_ROWS, p.keep_from + CHECK_ROWS))
    if p.keep_to is not None:
        checks.append(np.arange(p.keep_to - CHECK_ROWS, p.keep_to + CHECK_ROWS))
    return np.unique(np.concatenate(checks)).astype(np.int64)


def run_piece(
    run: Callable[..., PieceRows], y: np.ndarray, sr: int, piece: Piece, rows: np.ndarray | None = None
) -> PieceRows:
    """run(samples, sr, rows=local rows or None) -> openSMILE's rows and window starts
    (shared.features.smile), their times and indices made the file's."""
    local = None if rows is None else rows - piece.first_row
    got = run(y[piece.start_sample : piece.stop_sample], sr, rows=local)
    offset_ns = piece.start_sample * 1_000_000_000 // sr  # a whole number of 10 ms
    return PieceRows(got.values, got.starts_ns + offset_ns, got.index + piece.first_row)


def stitch(pieces: Sequence[Piece], got: Sequence[PieceRows]) -> PieceRows | None:
    """The whole pass's rows from the pieces' own, or None where neighbours disagree on the
    rows around their boundary (or one has too few rows to compare)."""
    if len(pieces) == 1:
        return got[0]
    values, starts, index = [], [], []
    for i, (p, g) in enumerate(zip(pieces, got, strict=True)):
        if i:
            gp = got[i - 1]
            a = (gp.index >= p.keep_from - CHECK_ROWS) & (gp.index < p.keep_from + CHECK_ROWS)
            b = (g.index >= p.keep_from - CHECK_ROWS) & (g.index < p.keep_from + CHECK_ROWS)
            if (
                np.count_nonzero(a) != 2 * CHECK_ROWS
                or np.count_nonzero(b) != 2 * CHECK_ROWS
                or not np.array_equal(gp.index[a], g.index[b])
                or not np.array_equal(gp.values[a], g.values[b], equal_nan=True)
                or not np.array_equal(gp.starts_ns[a], g.starts_ns[b])
            ):
                log.debug("functional pieces disagree at row %d: one pass instead", p.keep_from)
                return None
        keep = g.index >= p.keep_from
        if p.keep_to is not None:
            keep &= g.index < p.keep_to
        values.append(g.values[keep])
        starts.append(g.starts_ns[keep])
        index.append(g.index[keep])
    return PieceRows(np.concatenate(values), np.concatenate(starts), np.concatenate(index))


def functionals_in_pieces(
    run: Callable[..., PieceRows],
    y: np.ndarray,
    sr: int,
    context_s: float,
    hop_s: float,
    workers: Workers = ONE_PASS,
    rows: np.ndarray | None = None,
) -> PieceRows:
    """The rows of run(y, sr, rows=rows) (rows: file row indices (K,) ascending, None: all),
    computed as up to workers.parts pieces through its mapper."""
    pieces = plan(len(y), sr, context_s, hop_s, workers.parts)
    wanted = [None if rows is None else piece_rows(pieces, i, rows) for i in range(len(pieces))]
    got = list(workers.mapper(lambda job: run_piece(run, y, sr, *job), list(zip(pieces, wanted, strict=True))))
    whole = stitch(pieces, got)
    if whole is None:
        return run_piece(run, y, sr, whole_file(len(y)), rows)
    if rows is not None:  # without the rows computed for the comparisons only
        keep = np.isin(whole.index, rows)
        whole = PieceRows(whole.values[keep], whole.starts_ns[keep], whole.index[keep])
    return whole
