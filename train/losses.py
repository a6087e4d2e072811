"""The six loss terms (DESIGN.md, Loss). Every term is a mean over its elements; a term
over an empty group or with no previous frame contributes 0, never NaN.

pred, target: (B, K, C) a block of K frames per stream; valid: (B, K) bool (real frames of
active streams); prev_pred, prev_target: (B, C) the frame before each block (the carried
smoothed output and its target); has_prev: (B,) bool; mouth, expression: (C,) bool channel
masks. The velocity terms compare consecutive frames: inside the block, and across its
start with the carried frame where has_prev. The earlier frame of each pair is detached, so
no gradient flows into the past.
"""

from __future__ import annotations

import torch

from blendsync.train.config import LossWeights


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = mask.sum().to(x.dtype)
    return torch.where(mask, x, torch.zeros_like(x)).sum() / n.clamp(min=1.0)


def loss_terms(pred, target, prev_pred, prev_target, valid, has_prev, mouth, expression) -> dict[str, torch.Tensor]:
    rows = valid[..., None].expand_as(pred)
    err = pred - target
    se = err.pow(2)
    earlier_pred = torch.cat([prev_pred[:, None], pred[:, :-1]], dim=1).detach()
    earlier_target = torch.cat([prev_target[:, None], target[:, :-1]], dim=1)
    # Frame j > 0 of a block always follows frame j - 1 (valid frames are a prefix of a block).
    has_earlier = torch.cat([has_prev[:, None], torch.ones_like(valid[:, 1:])], dim=1)
    with_prev = (valid & has_earlier)[..., None].expand_as(pred)
    dp = pred - earlier_pred
    dt = target - earlier_target
    return {
        "mse": _masked_mean(se, rows),
        "l1": _masked_mean(err.abs(), rows),
        "mouth": _masked_mean(se, rows & mouth),
        "expression": _masked_mean(se, rows & expression),
        "consistency": _masked_mean((dp - dt).pow(2), with_prev),
        "temporal": _masked_mean(dp.pow(2), with_prev),
    }


def total_loss(terms: dict[str, torch.Tensor], w: LossWeights) -> torch.Tensor:
    return (
        w.mse * terms["mse"] + w.l1 * terms["l1"] + w.mouth * terms["mouth"]
        + w.expression * terms["expression"] + w.consistency * terms["consistency"]
        + w.temporal * terms["temporal"]
    )
