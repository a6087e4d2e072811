"""Validation metrics over every frame of a split (stride 1): errors overall and per channel
group, per-channel MAE and Pearson r, and skill against a mean predictor."""

from __future__ import annotations

import numpy as np


def regression_metrics(pred: np.ndarray, target: np.ndarray, train_mean: np.ndarray,
                       channels: list[str], groups: dict[str, list[str]]) -> dict:
    """pred, target (N, C) over all validation frames; train_mean (C,) the mean predictor."""
    err = pred.astype(np.float64) - target
    se = err**2
    out = {"frames": int(pred.shape[0]), "mse": float(se.mean()), "mae": float(np.abs(err).mean())}
    base = float(((train_mean[None, :].astype(np.float64) - target) ** 2).mean())
    out["mse_mean_predictor"] = base
    out["skill"] = float(1 - out["mse"] / base) if base > 0 else None
    idx = {c: i for i, c in enumerate(channels)}
    out["groups"] = {}
    for name, members in groups.items():
        cols = [idx[c] for c in members if c in idx]
        out["groups"][name] = (
            {"mse": float(se[:, cols].mean()), "mae": float(np.abs(err[:, cols]).mean()), "channels": len(cols)}
            if cols else {"mse": None, "mae": None, "channels": 0}
        )
    mae = np.abs(err).mean(axis=0)
    p = pred - pred.mean(axis=0)
    t = target - target.mean(axis=0)
    denom = np.sqrt((p**2).sum(axis=0) * (t**2).sum(axis=0))
    r = np.where(denom > 0, (p * t).sum(axis=0) / np.where(denom > 0, denom, 1), np.nan)
    out["per_channel"] = {
        c: {"mae": float(mae[i]), "pearson_r": (None if np.isnan(r[i]) else float(r[i]))}
        for i, c in enumerate(channels)
    }
    return out
