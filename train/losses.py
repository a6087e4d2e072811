"""The six loss terms (DESIGN.md, Loss). Every term is a mean over its elements; a term
over an empty group or with no previous frame contributes 0, never NaN.

pred, target, prev_pred, prev_target: (B, C); valid, has_prev: (B,) bool;
mouth, expression: (C,) bool channel masks.
"""

from __future__ import annotations

import torch

from blendsync.train.config import LossWeights


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = mask.sum().to(x.dtype)
    return torch.where(mask, x, torch.zeros_like(x)).sum() / n.clamp(min=1.0)


def loss_terms(pred, target, prev_pred, prev_target, valid, has_prev, mouth, expression) -> dict[str, torch.Tensor]:
    rows = valid[:, None].expand_as(pred)
    err = pred - target
    se = err.pow(2)
    with_prev = (valid & has_prev)[:, None].expand_as(pred)
    dp = pred - prev_pred.detach()
    dt = target - prev_target
    return {
        "mse": _masked_mean(se, rows),
        "l1": _masked_mean(err.abs(), rows),
        "mouth": _masked_mean(se, rows & mouth[None, :]),
        "expression": _masked_mean(se, rows & expression[None, :]),
        "consistency": _masked_mean((dp - dt).pow(2), with_prev),
        "temporal": _masked_mean(dp.pow(2), with_prev),
    }


def total_loss(terms: dict[str, torch.Tensor], w: LossWeights) -> torch.Tensor:
    return (
        w.mse * terms["mse"] + w.l1 * terms["l1"] + w.mouth * terms["mouth"]
        + w.expression * terms["expression"] + w.consistency * terms["consistency"]
        + w.temporal * terms["temporal"]
    )
