"""The loss terms (docs/design.md, The loss; docs/training.md, Loss). Every term is a mean over its
elements; a term over an empty group or with no previous frame contributes 0, never NaN.

pred, target: (B, K, C) a block of K frames per stream; valid: (B, K) bool (real frames of
active streams); prev_pred, prev_target: (B, C) the frame before each block (the carried
smoothed output and its target); has_prev: (B,) bool; mouth, expression: (C,) bool channel
masks; scale: (C,) per-channel divisor of every error (loss.scale), or None for target
units; active: (C,) bool, the channels trained (False: still in the training split,
loss.still_max), or None for all. The velocity terms compare consecutive frames: inside the block, and across its
start with the carried frame where has_prev. The earlier frame of each pair is detached, so
no gradient flows into the past.
"""

from __future__ import annotations

import numpy as np
import torch

from blendsync.train.core.config import LOSS_TERMS, LossConfig


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = mask.sum().to(x.dtype)
    return torch.where(mask, x, torch.zeros_like(x)).sum() / n.clamp(min=1.0)


def channel_scale(cfg: LossConfig, target_std: np.ndarray) -> np.ndarray | None:
    """(C,) divisor of each channel's errors: its training-target spread floored at
    scale_floor (a channel that never moves is not blown up), or None for target units."""
    if cfg.scale == "none":
        return None
    return np.maximum(np.asarray(target_std, np.float32), np.float32(cfg.scale_floor))


def _spread_gap(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, active: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean over (active) channels of (std of pred - std of target)^2 over the batch's real frames."""
    w = valid.reshape(-1, 1).to(pred.dtype)
    n = w.sum()
    p, t = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])

    def std(x):
        mean = (x * w).sum(0) / n.clamp(min=1.0)
        return (((x - mean) ** 2 * w).sum(0) / n.clamp(min=1.0) + 1e-8).sqrt()

    gaps = (std(p) - std(t)).pow(2)
    gap = gaps.mean() if active is None else _masked_mean(gaps, active)
    return torch.where(n >= 2, gap, torch.zeros_like(gap))


def loss_terms(
    pred,
    target,
    prev_pred,
    prev_target,
    valid,
    has_prev,
    mouth,
    expression,
    scale: torch.Tensor | None = None,
    active: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    if scale is not None:
        pred, target = pred / scale, target / scale
        prev_pred, prev_target = prev_pred / scale, prev_target / scale
    rows = valid[..., None].expand_as(pred)
    if active is not None:
        rows = rows & active
    err = pred - target
    se = err.pow(2)
    earlier_pred = torch.cat([prev_pred[:, None], pred[:, :-1]], dim=1).detach()
    earlier_target = torch.cat([prev_target[:, None], target[:, :-1]], dim=1)
    # Frame j > 0 of a block always follows frame j - 1 (valid frames are a prefix of a block).
    has_earlier = torch.cat([has_prev[:, None], torch.ones_like(valid[:, 1:])], dim=1)
    with_prev = (valid & has_earlier)[..., None].expand_as(pred)
    if active is not None:
        with_prev = with_prev & active
    dp = pred - earlier_pred
    dt = target - earlier_target
    return {
        "mse": _masked_mean(se, rows),
        "l1": _masked_mean(err.abs(), rows),
        "mouth": _masked_mean(se, rows & mouth),
        "expression": _masked_mean(se, rows & expression),
        "consistency": _masked_mean((dp - dt).pow(2), with_prev),
        "temporal": _masked_mean(dp.pow(2), with_prev),
        "amplitude": _spread_gap(pred, target, valid, active),
    }


def total_loss(terms: dict[str, torch.Tensor], w: LossConfig) -> torch.Tensor:
    """The weighted sum; terms with weight 0 are left out (not even multiplied by 0)."""
    used = [getattr(w, k) * terms[k] for k in LOSS_TERMS if getattr(w, k)]
    return torch.stack(used).sum() if used else terms["mse"] * 0.0
