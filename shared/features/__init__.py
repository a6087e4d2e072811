"""Per-frame audio features: log-mel (librosa) and eGeMAPS functionals (openSMILE).

Both extractors run at a 10 ms hop and are put on the frame grid by time
(shared.frame_grid), never with an integer hop per video frame. A long file's openSMILE pass
can run in pieces on several cores with the same rows (pieces.py).
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass

import numpy as np

from blendsync.shared.config import EmotionConfig, FeatureConfig, MelConfig
from blendsync.shared.features.pieces import LLD_RATE, ONE_PASS, PieceRows, Workers, functionals_in_pieces
from blendsync.shared.features.smile import LLD_PERIOD_S, Functionals, abort_running, ns_to_seconds, pandas_ns
from blendsync.shared.frame_grid import frame_times, grid_neighbours, rows_to_grid
from blendsync.shared.interrupts import interruptible

log = logging.getLogger(__name__)

# eGeMAPSv02's functionals per row.
N_EMOTION = 88
# Rows listed up to the most a signal's length allows: how many openSMILE's end of input
# leaves is found by where the listed rows stop (a listed run computes the rows there are).
END_ROWS = 30


@dataclass(frozen=True)
class StreamOnGrid:
    """values: (T, D) float32 on the frame grid, with counts for the item's attrs."""

    values: np.ndarray
    counts: dict


def mel_rows(y: np.ndarray, sr: int, cfg: MelConfig) -> tuple[np.ndarray, np.ndarray]:
    """(N,) samples -> log-mel rows (R, n_mels) float32 and their centre times (R,) in s:
    librosa.feature.melspectrogram's values (hann window, centred frames, zero padding, power
    2), computed by librosa_mel without importing librosa (3.8 s and 190 MB saved)."""
    from blendsync.shared.features.librosa_mel import melspectrogram

    hop = int(round(cfg.hop_s * sr))
    S = melspectrogram(
        np.asarray(y),
        sr=sr,
        n_fft=cfg.n_fft,
        hop_length=hop,
        win_length=int(round(cfg.win_s * sr)),
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
    )
    rows = np.log(S + cfg.log_floor).T.astype(np.float32)
    # centre=True: row r is centred on sample r * hop.
    times = np.arange(rows.shape[0], dtype=np.float64) * hop / sr
    return rows, times


def mel_on_grid(y: np.ndarray, sr: int, times: np.ndarray, cfg: MelConfig) -> StreamOnGrid:
    """Log-mel at the instants times (T,) s, counted from y's first sample."""
    rows, row_times = mel_rows(y, sr, cfg)
    g = rows_to_grid(rows, row_times, times)
    return StreamOnGrid(g.values, {"mel_clamped_end_frames": g.clamped_end})


@functools.lru_cache(maxsize=8)
def _smile(feature_set: str, context_s: float | None, hop_s: float | None) -> Functionals:
    """The functionals extractor: windows of context_s every hop_s (None: one row over the
    whole signal)."""
    return Functionals(feature_set, context_s, hop_s)


def process_signal(smile: Functionals, y: np.ndarray, sr: int) -> PieceRows:
    """smile.run(y, sr) that Ctrl-C ends at once (shared.interrupts)."""
    return interruptible(smile.run, y, sr, stop=abort_running)


def emotion_feature_names(cfg: EmotionConfig) -> list[str]:
    return list(_smile(cfg.feature_set, None, None).feature_names)


@dataclass(frozen=True)
class EmotionRows:
    """values: (R, 88) float32 openSMILE rows, row r covering [start_r, start_r + context);
    ends: (R,) float64 s, the end of each row's context; index: (R,) int64 ascending, each
    row's index among all the pass's rows (0 … R - 1 where every row was computed)."""

    values: np.ndarray
    ends: np.ndarray
    index: np.ndarray


def emotion_rows(
    y: np.ndarray, sr: int, cfg: EmotionConfig, workers: Workers = ONE_PASS, rows: np.ndarray | None = None
) -> EmotionRows | None:
    """One openSMILE pass, of every row or of rows (K,) ascending only (the rows past the
    signal's last one are not computed). None when the file is shorter than one context
    (openSMILE then returns a NaN row).

    workers.parts > 1: a long file's pass is computed as up to that many pieces at once
    (shared.features.pieces), with the same rows and times as one pass."""
    smile = _smile(cfg.feature_set, cfg.context_s, cfg.hop_s)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Segment too short")
        # Ctrl-C in the main thread aborts the pieces wherever they run.
        got = interruptible(
            functionals_in_pieces, smile.run, y, sr, cfg.context_s, cfg.hop_s, workers, rows, stop=abort_running
        )
    values = got.values.astype(np.float32)
    if values.shape[0] == 1 and np.isnan(values).all():
        return None
    return EmotionRows(values, ns_to_seconds(got.starts_ns) + cfg.context_s, got.index)


def rows_read_by_grid(n_samples: int, sr: int, times: np.ndarray, cfg: EmotionConfig) -> np.ndarray | None:
    """The openSMILE rows (K,) ascending that gridding a file's rows onto times (T,) s
    (already shifted by the delay) reads: each time's two neighbours, row 0, and the last
    END_ROWS up to the most rows n_samples allow (the last row must be among them). At 30 fps
    over 10 ms rows that is 6 rows in 10; openSMILE computes the functionals of those only.
    None where that would save little or the rows are not whole descriptor frames apart."""
    step, size = round(cfg.hop_s / LLD_PERIOD_S), round(cfg.context_s / LLD_PERIOD_S)
    if step < 1 or abs(step * LLD_PERIOD_S - cfg.hop_s) > 1e-9 or abs(size * LLD_PERIOD_S - cfg.context_s) > 1e-9:
        return None
    most = (-(-n_samples * LLD_RATE // sr) - size) // step + 2  # more than the signal's rows
    if most < 4 * END_ROWS or not len(times):
        return None
    ends = ns_to_seconds(pandas_ns((np.arange(most, dtype=np.float64) * step) * LLD_PERIOD_S)) + cfg.context_s
    lo, hi, _ = grid_neighbours(ends, np.asarray(times, np.float64))
    rows = np.unique(np.concatenate([np.array([0, 1]), lo, hi, np.arange(most - END_ROWS, most)]))
    return rows if len(rows) < 0.9 * most else None


def grid_reads_only(got: EmotionRows, listed: np.ndarray, times: np.ndarray) -> bool:
    """Whether gridding got's rows onto times gives what every row would: row 0 and the
    last row are there (the listed rows stopped short of their end, inside the end rows),
    and every time's two neighbours are rows next to each other."""
    idx = got.index
    if len(idx) < 2 or idx[0] != 0 or not listed[-END_ROWS] <= idx[-1] < listed[-1]:
        return False
    lo, hi, _ = grid_neighbours(got.ends, times)
    return bool(np.all(idx[hi] - idx[lo] == 1))


def whole_file_functionals(y: np.ndarray, sr: int, cfg: EmotionConfig) -> np.ndarray:
    """(1, 88) functionals over the whole signal, for files shorter than one context."""
    smile = _smile(cfg.feature_set, None, None)
    return process_signal(smile, y, sr).values.astype(np.float32)[:1]


def emotion_on_grid(
    y: np.ndarray, sr: int, times: np.ndarray, cfg: EmotionConfig, workers: Workers = ONE_PASS
) -> StreamOnGrid:
    """The instant t (of times (T,) s, counted from y's first sample) gets the functionals
    of the context ending at t - cfg.delay_s.

    Instants before the first full context take the first window (cfg.before_first_context
    "first") or cfg.nonfinite_fill ("fill"); a signal shorter than the context takes one
    whole-signal row everywhere ("first") or the fill. Non-finite values get
    cfg.nonfinite_fill.

    openSMILE computes the functionals of the rows the grid reads only (rows_read_by_grid):
    the same values as of every row. Where the rows it gave do not cover the grid as
    planned, every row is computed instead.
    """
    shifted = times - cfg.delay_s
    listed = rows_read_by_grid(len(y), sr, shifted, cfg)
    got = emotion_rows(y, sr, cfg, workers, listed)
    if got is not None and listed is not None and not grid_reads_only(got, listed, shifted):
        log.debug("the listed openSMILE rows do not cover the grid: every row instead")
        got = emotion_rows(y, sr, cfg, workers)
    T = len(times)
    fill = cfg.before_first_context == "fill"
    if got is None:
        row, filled = (
            (np.full((1, N_EMOTION), cfg.nonfinite_fill, np.float32), 0)
            if fill
            else fill_nonfinite(whole_file_functionals(y, sr, cfg), cfg)
        )
        values = np.repeat(row, T, axis=0)
        counts = {
            "emotion_partial_context_frames": T if fill else 0,
            "emotion_whole_file_frames": 0 if fill else T,
            "emotion_clamped_end_frames": 0,
        }
    else:
        read = np.zeros(1, np.int64) if len(got.ends) < 2 else np.unique(grid_neighbours(got.ends, shifted)[:2])
        filled = int(np.count_nonzero(~np.isfinite(got.values[read])))
        rows, _ = fill_nonfinite(got.values, cfg)
        g = rows_to_grid(rows, got.ends, shifted)
        values = g.values
        if fill and g.clamped_start:
            values[: g.clamped_start] = np.float32(cfg.nonfinite_fill)
        counts = {
            "emotion_partial_context_frames": g.clamped_start,
            "emotion_whole_file_frames": 0,
            "emotion_clamped_end_frames": g.clamped_end,
        }
    # Counted in the openSMILE rows the grid reads (before gridding): values the fill replaced.
    counts["emotion_nonfinite_filled"] = filled
    return StreamOnGrid(values.astype(np.float32, copy=False), counts)


def fill_nonfinite(values: np.ndarray, cfg: EmotionConfig) -> tuple[np.ndarray, int]:
    bad = ~np.isfinite(values)
    n = int(np.count_nonzero(bad))
    if n:
        values = np.where(bad, np.float32(cfg.nonfinite_fill), values)
    return values, n


def compute_features(
    y: np.ndarray, sr: int, T: int, cfg: FeatureConfig, workers: Workers = ONE_PASS
) -> dict[str, StreamOnGrid]:
    """Frames 0 … T - 1 of a whole signal."""
    return features_at(y, sr, frame_times(T, cfg.fps), cfg, workers)


def features_at(
    y: np.ndarray, sr: int, times: np.ndarray, cfg: FeatureConfig, workers: Workers = ONE_PASS
) -> dict[str, StreamOnGrid]:
    """Both streams at the instants times (s from y's first sample): the gridding of whole
    files (compute_features) and of any segment of a signal with its frames' times within it."""
    return {"mel": mel_on_grid(y, sr, times, cfg.mel), "emotion": emotion_on_grid(y, sr, times, cfg.emotion, workers)}
