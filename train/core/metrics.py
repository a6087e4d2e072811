"""Validation metrics over every frame of a split (stride 1): errors overall and per channel
group, skill against a mean predictor, and how well the predicted motion follows the
target's: per-channel Pearson r and amplitude ratio (std of the prediction over std of the
target), summarised over the active channels.

A model can score a good error by hardly moving (on sparse targets the training mean is
close most of the time), so error and skill alone hide a flat face; the amplitude ratio
shows it (1 = as much movement as the target, 0 = none).
"""

from __future__ import annotations

import numpy as np

# A channel is active in a split when its target's standard deviation there is at least
# this (blendshape weights run 0-1): the curves that visibly move. Flat channels have no
# meaningful r or amplitude ratio.
ACTIVE_STD = 0.01


def motion_metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """pred, target (N, C) -> per-channel r and amplitude ratio (C,) (NaN for a channel whose
    target or prediction is constant), and the active mask (C,)."""
    p = pred.astype(np.float64) - pred.mean(axis=0)
    t = target.astype(np.float64) - target.mean(axis=0)
    sp, st = np.sqrt((p**2).mean(axis=0)), np.sqrt((t**2).mean(axis=0))
    # Below this a curve is constant (float rounding of a constant leaves ~1e-15).
    sp, st = np.where(sp < 1e-9, 0.0, sp), np.where(st < 1e-9, 0.0, st)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where((sp > 0) & (st > 0), (p * t).mean(axis=0) / (sp * st), np.nan)
        amp = np.where(st > 0, sp / st, np.nan)
    return {"r": r, "amplitude": amp, "active": st >= ACTIVE_STD}


def _summary(r: np.ndarray, amp: np.ndarray, active: np.ndarray) -> dict:
    """Mean r and median amplitude ratio over the active channels (None when there are none)."""
    n = int(active.sum())
    if n == 0:
        return {"active_channels": 0, "mean_r": None, "amplitude_ratio": None}
    rr = np.nan_to_num(r[active], nan=0.0)  # a flat prediction of a moving channel: r 0
    return {"active_channels": n, "mean_r": float(rr.mean()), "amplitude_ratio": float(np.median(amp[active]))}


def regression_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    train_mean: np.ndarray,
    channels: list[str],
    groups: dict[str, list[str]],
    still: list[str] | tuple = (),
) -> dict:
    """pred, target (N, C) over all validation frames; train_mean (C,) the mean predictor.
    still: the channels left out of training (predicted 0); "trained" holds the metrics over
    the others beside the top level's over all channels."""
    err = pred.astype(np.float64) - target
    se = err**2
    base_se = (train_mean[None, :].astype(np.float64) - target) ** 2
    out = {"frames": int(pred.shape[0]), "mse": float(se.mean()), "mae": float(np.abs(err).mean())}
    base = float(base_se.mean())
    out["mse_mean_predictor"] = base
    out["skill"] = float(1 - out["mse"] / base) if base > 0 else None
    mm = motion_metrics(pred, target)
    out.update(_summary(mm["r"], mm["amplitude"], mm["active"]))
    idx = {c: i for i, c in enumerate(channels)}

    def over(members) -> dict:
        cols = [idx[c] for c in members if c in idx]
        if not cols:
            return {
                "mse": None,
                "mae": None,
                "skill": None,
                "channels": 0,
                "active_channels": 0,
                "mean_r": None,
                "amplitude_ratio": None,
            }
        g_base = float(base_se[:, cols].mean())
        g_mse = float(se[:, cols].mean())
        return {
            "mse": g_mse,
            "mae": float(np.abs(err[:, cols]).mean()),
            "skill": float(1 - g_mse / g_base) if g_base > 0 else None,
            "channels": len(cols),
            **_summary(mm["r"][cols], mm["amplitude"][cols], mm["active"][cols]),
        }

    out["groups"] = {name: over(members) for name, members in groups.items()}
    out["still"] = list(still)
    out["trained"] = over([c for c in channels if c not in set(still)])
    mae = np.abs(err).mean(axis=0)
    nz = lambda x: None if np.isnan(x) else float(x)  # noqa: E731
    out["per_channel"] = {
        c: {
            "mae": float(mae[i]),
            "pearson_r": nz(mm["r"][i]),
            "amplitude_ratio": nz(mm["amplitude"][i]),
            "active": bool(mm["active"][i]),
        }
        for i, c in enumerate(channels)
    }
    return out
