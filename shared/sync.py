"""Audio/curve sync: the lag between a take's audio and its curves, and the shift that removes it.

Curves whose audio came out of a .mov are often a few frames off; a model trained on them
learns to be late (or early). The estimate cross-correlates a mouth-opening signal from the
targets (the mean of the sync channels) with the audio's log-energy envelope on the frame
grid, over lags of up to max_lag_s either way.

Sign: a lag of +L frames means the curves lead the audio by L frames (targets[t] matches the
audio's energy at t + L). Real mouths open slightly before the sound, so small positive lags
are natural; shifting by the lag (shift_targets) brings the take to lag 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

# Channel names (lower case, letters and digits only) that open the mouth: the ARKit ones
# and the usual spellings of custom rigs ("jaw_open", "MouthOpen", "mouthLowerDownLeft").
_OPENING = re.compile(r"^(jawopen|mouthopen|mouthlowerdown)")

# Curves whose opening signal never rises above this are silent: no estimate.
SILENT_BELOW = 0.02

# Bumped when estimate_lag changes: --auto-sync keys carry it, so shifts made by another
# estimator are not reused.
ESTIMATOR_VERSION = 2

# The narrowest search worth making (a take shorter than 4x this has no estimate).
MIN_SEARCH_S = 0.5

# Lags this close to the peak are its own shoulder, not a rival: the peak's confidence
# compares it with the best correlation further away than this.
SHOULDER_S = 0.12


@dataclass(frozen=True)
class SyncConfig:
    """channels: the mouth-opening channels (empty: found by name in the channel set).
    tolerance_frames: lags within it are reported as in sync and never shifted.
    min_confidence: below it an estimate is shown but not acted on (no shift, not listed)."""

    channels: tuple[str, ...] = ()
    max_lag_s: float = 1.5
    tolerance_frames: int = 2
    min_confidence: float = 0.25

    def __post_init__(self) -> None:
        if not (self.max_lag_s > 0 and math.isfinite(self.max_lag_s)):
            raise ValueError(f"sync max_lag_s must be > 0, got {self.max_lag_s}")
        if self.tolerance_frames < 0:
            raise ValueError(f"sync tolerance_frames must be >= 0, got {self.tolerance_frames}")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"sync min_confidence must be in [0, 1], got {self.min_confidence}")

    def to_dict(self) -> dict:
        return {
            "channels": list(self.channels),
            "max_lag_s": self.max_lag_s,
            "tolerance_frames": self.tolerance_frames,
            "min_confidence": self.min_confidence,
        }

    def key_doc(self) -> dict:
        """What an --auto-sync item's cache key holds of the sync: everything that decides its shift."""
        return {**self.to_dict(), "estimator": ESTIMATOR_VERSION}

    def opening_channels(self, names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        """The sync channels among names. ValueError when channels were given and one is not
        in the channel set (a typo must not silently estimate from nothing)."""
        if self.channels:
            missing = [c for c in self.channels if c not in names]
            if missing:
                raise ValueError(
                    f"sync channels {missing} are not in the channel set "
                    f"({len(names)} channels, e.g. {list(names[:4])})"
                )
            return tuple(self.channels)
        return tuple(n for n in names if _OPENING.match(re.sub(r"[^a-z0-9]", "", n.lower())))


@dataclass(frozen=True, kw_only=True)
class SyncEstimate:
    """lag_frames is None when there is nothing to estimate from (reason says why).
    correlation: Pearson r at the lag; confidence in [0, 1]: the share of the headroom above
    the best rival (the best correlation more than SHOULDER_S from the peak, or 0) that the
    peak takes: 0 when a rival lag fits as well, 1 for a perfect fit no other lag approaches."""

    lag_frames: int | None
    fps: float
    correlation: float | None = None
    confidence: float | None = None
    channels: tuple[str, ...] = ()
    reason: str = ""

    @property
    def lag_s(self) -> float | None:
        return None if self.lag_frames is None else self.lag_frames / self.fps

    def trusted(self, cfg: SyncConfig) -> bool:
        return self.lag_frames is not None and (self.confidence or 0.0) >= cfg.min_confidence

    def out_of_sync(self, cfg: SyncConfig) -> bool:
        """A confident lag beyond the tolerance: listed by bsfeat info, shifted by --auto-sync."""
        return self.trusted(cfg) and abs(self.lag_frames) > cfg.tolerance_frames

    def to_doc(self) -> dict:
        return {
            "lag_frames": self.lag_frames,
            "lag_s": self.lag_s,
            "correlation": self.correlation,
            "confidence": self.confidence,
            "channels": list(self.channels),
            "reason": self.reason,
        }

    @classmethod
    def from_doc(cls, d: dict, fps: float) -> SyncEstimate:
        lag = d.get("lag_frames")
        return cls(
            lag_frames=None if lag is None else int(lag),
            fps=fps,
            correlation=d.get("correlation"),
            confidence=d.get("confidence"),
            channels=tuple(d.get("channels") or ()),
            reason=d.get("reason") or "",
        )

    def describe(self) -> str:
        if self.lag_frames is None:
            return f"no estimate ({self.reason})"
        lead = "curves lead" if self.lag_frames > 0 else "curves lag" if self.lag_frames < 0 else "in step"
        return (
            f"lag {self.lag_frames:+d} frames ({1000 * self.lag_s:+.0f} ms, {lead}), r {self.correlation:.2f}, "
            f"confidence {self.confidence:.2f}"
        )


def log_energy(mel: np.ndarray) -> np.ndarray:
    """mel (T, n_mels) log power -> (T,) log of the summed power: the audio's envelope."""
    m = mel.astype(np.float64)
    top = m.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(m - top).sum(axis=1, keepdims=True)))[:, 0]


def lag_correlations(signal: np.ndarray, energy: np.ndarray, max_lag: int) -> np.ndarray:
    """(2 * max_lag + 1,) Pearson r of signal[t] with energy[t + L] for L = -max_lag … max_lag,
    each over the frames both cover."""
    T = len(signal)
    out = np.full(2 * max_lag + 1, np.nan)
    for i, L in enumerate(range(-max_lag, max_lag + 1)):
        a = signal[max(0, -L) : T - max(0, L)]
        b = energy[max(0, L) : T - max(0, -L)]
        if len(a) < 3 or a.std() < 1e-9 or b.std() < 1e-9:
            continue
        out[i] = float(np.corrcoef(a, b)[0, 1])
    return out


def estimate_lag(
    mel: np.ndarray,
    targets: np.ndarray,
    channel_names: list[str] | tuple[str, ...],
    fps: float,
    cfg: SyncConfig = SyncConfig(),
) -> SyncEstimate:
    """mel (T, n_mels), targets (T, C) on one frame grid at fps -> the lag of the curves.
    ValueError only for sync channels missing from channel_names."""
    chans = cfg.opening_channels(channel_names)
    if not chans:
        return SyncEstimate(
            lag_frames=None, fps=fps, reason="no mouth-opening channel in this channel set: name them (--sync-channels)"
        )
    cols = [list(channel_names).index(c) for c in chans]
    signal = targets[:, cols].astype(np.float64).mean(axis=1)
    energy = log_energy(mel)
    # Searched: max_lag_s either way, or a quarter of the take where that is shorter (a lag
    # needs most of the take to overlap), but never less than MIN_SEARCH_S.
    max_lag = max(1, min(int(round(cfg.max_lag_s * fps)), len(signal) // 4))
    least = max(1, int(round(min(MIN_SEARCH_S, cfg.max_lag_s) * fps)))
    if signal.max(initial=0.0) < SILENT_BELOW or signal.std() < 1e-6:
        return SyncEstimate(
            lag_frames=None, fps=fps, channels=chans, reason=f"the curves ({', '.join(chans)}) do not move"
        )
    if energy.std() < 1e-6:
        return SyncEstimate(lag_frames=None, fps=fps, channels=chans, reason="the audio is silent")
    if max_lag < least:
        return SyncEstimate(
            lag_frames=None,
            fps=fps,
            channels=chans,
            reason=f"too short ({len(signal)} frames; needs {4 * least} for ±{least / fps:.2g} s)",
        )
    r = lag_correlations(signal, energy, max_lag)
    if not np.isfinite(r).any():
        return SyncEstimate(lag_frames=None, fps=fps, channels=chans, reason="no lag has a defined correlation")
    best = int(np.nanargmax(r))
    peak = float(r[best])
    shoulder = max(1, int(round(SHOULDER_S * fps)))
    far = np.concatenate([r[: max(0, best - shoulder)], r[best + shoulder + 1 :]])
    far = far[np.isfinite(far)]
    rival = float(far.max()) if far.size else -1.0
    floor = max(rival, 0.0)
    confidence = float(np.clip((peak - floor) / (1.0 - floor), 0.0, 1.0)) if floor < 1.0 else 0.0
    if best in (0, len(r) - 1):  # the peak is at the edge: the real lag may lie beyond the search
        confidence = 0.0
    return SyncEstimate(
        lag_frames=best - max_lag, fps=fps, correlation=round(peak, 4), confidence=round(confidence, 4), channels=chans
    )


def shift_targets(targets: np.ndarray, lag_frames: int) -> np.ndarray:
    """(T, C) curves that lead the audio by lag_frames -> (T, C) in step with it: frame t takes
    the curves of frame t - lag_frames; frames shifted in from outside repeat the edge frame."""
    T = targets.shape[0]
    src = np.clip(np.arange(T) - int(lag_frames), 0, T - 1)
    return np.ascontiguousarray(targets[src])


@dataclass(frozen=True)
class StoredSync:
    """What an item records of its sync: the estimate of its curves as read, and the shift
    applied to them (0 unless extracted with --auto-sync)."""

    estimate: SyncEstimate
    shift_frames: int
    auto_sync: bool

    @classmethod
    def from_doc(cls, d: dict, fps: float) -> StoredSync:
        return cls(SyncEstimate.from_doc(d, fps), int(d.get("shift_frames") or 0), bool(d.get("auto_sync")))
