"""An output gain on the predicted movement: curves' = clip(mean + g·(curves − mean), 0, 1),
mean = the training targets' per-channel mean.

A model trained for low error moves the face less than the target does where it is unsure
(the error-optimal prediction shrinks towards the mean by about the correlation it
achieves), so animators may want more movement than the lowest error gives. g > 1 trades
error for movement; `bstrain evaluate` shows that trade on held-out data (gain_table) and
`bstrain predict --gain` applies it.
"""

from __future__ import annotations

import logging

import numpy as np

from blendsync.train.core.metrics import regression_metrics

log = logging.getLogger(__name__)


def apply_gain(curves: np.ndarray, mean: np.ndarray, gain: float) -> np.ndarray:
    """curves (T, C), mean (C,) -> (T, C) float32, in [0, 1] (blendshape weights)."""
    if gain == 1.0:
        return curves
    out = mean[None, :] + gain * (curves - mean[None, :])
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def calibrate_gain(pred: np.ndarray, target: np.ndarray, mean: np.ndarray) -> float | None:
    """The gain with the lowest squared error on these frames (pred, target (N, C)), in
    closed form before clipping: sum((p - m)(t - m)) / sum((p - m)^2). Fitted on validation
    data; None when the prediction does not move."""
    p = pred.astype(np.float64) - mean[None, :]
    t = target.astype(np.float64) - mean[None, :]
    denom = float((p * p).sum())
    if denom <= 1e-12:
        return None
    return float(max((p * t).sum() / denom, 0.0))


def gain_table(
    pred: np.ndarray,
    target: np.ndarray,
    mean: np.ndarray,
    channels: list[str],
    gains: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0),
) -> list[dict]:
    """Skill, mean r and amplitude ratio of the split at each gain, plus the gain whose
    amplitude ratio is 1 (1 / the ratio at gain 1, before clipping) where the model moves at
    all: pred, target (N, C) over the split's frames."""
    base = regression_metrics(pred, target, mean, channels, {})
    gains = list(gains)
    if base["amplitude_ratio"]:
        gains.append(round(1.0 / base["amplitude_ratio"], 2))
    rows = []
    for g in sorted(set(gains)):
        m = regression_metrics(apply_gain(pred, mean, g), target, mean, channels, {})
        rows.append({"gain": g, "skill": m["skill"], "mean_r": m["mean_r"], "amplitude_ratio": m["amplitude_ratio"]})
    return rows


# The output gain's range, everywhere one is taken (predict, stream, the server): beyond 10 the
# face only slams between 0 and 1, and an unbounded one overflowed to NaN curves.
MAX_GAIN = 10.0


def check_gain(value, name: str = "gain") -> float:
    """A gain given as a number or its text -> float in [0, MAX_GAIN]; ValueError naming `name`."""
    if isinstance(value, bool) or (isinstance(value, str) and "_" in value):
        value = None  # (float() reads "1_0" as 10)
    try:
        g = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number from 0 to {MAX_GAIN:g}, got {value!r}") from None
    if not 0.0 <= g <= MAX_GAIN:  # NaN fails too
        raise ValueError(f"{name} must be a number from 0 to {MAX_GAIN:g}, got {value!r}")
    return g


def resolve_gain(gain: float | str, calibrated: float | None, checkpoint) -> float:
    if gain == "calibrated":
        if calibrated is None:
            raise ValueError(
                f"{checkpoint} has no calibrated gain (it was kept without validation data): give --gain a number"
            )
        g = check_gain(calibrated, f"{checkpoint}: its calibrated gain")
        log.info("output gain %.3f (calibrated on validation data)", g)
        return g
    return check_gain(gain, "--gain")
