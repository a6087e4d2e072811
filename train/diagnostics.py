"""Gradient diagnostics (DESIGN.md): per-parameter norms, warnings for missing, zero or
exploding gradients, the smoothing-alpha gradient and the mel/emotion balance ratio."""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger(__name__)

EXPLODING = 10.0
BALANCE_WARN = (0.1, 10.0)


def grad_report(model: torch.nn.Module) -> dict:
    norms: dict[str, float | None] = {}
    for name, p in model.named_parameters():
        norms[name] = None if p.grad is None else float(p.grad.detach().norm())
    att = model.dual_stream_attention
    gm = att.mel_weights.grad
    ge = att.emotion_weights.grad
    ratio = None
    if gm is not None and ge is not None and float(ge.norm()) > 0:
        ratio = float(gm.norm() / ge.norm())
    a = model.smoothing_alpha.grad
    return {
        "norms": norms,
        "smoothing_alpha_grad": None if a is None else float(a),
        "stream_balance": ratio,
        "total_norm": math.sqrt(sum(v * v for v in norms.values() if v is not None)),
    }


def warn_on(report: dict, step: int, alpha_in_use: bool = True) -> list[str]:
    """alpha_in_use: some row of the batch had a previous window (else smoothing_alpha had
    nothing to act on and a zero gradient is expected, e.g. on the first step)."""
    msgs = []
    for name, n in report["norms"].items():
        if name == "smoothing_alpha" and not alpha_in_use:
            continue
        if n is None:
            msgs.append(f"step {step}: no gradient for {name}")
        elif n == 0:
            msgs.append(f"step {step}: zero gradient for {name}")
        elif n > EXPLODING:
            msgs.append(f"step {step}: exploding gradient for {name} (norm {n:.3g} > {EXPLODING})")
    r = report["stream_balance"]
    if r is not None and not BALANCE_WARN[0] <= r <= BALANCE_WARN[1]:
        msgs.append(f"step {step}: stream imbalance |grad mel_weights| / |grad emotion_weights| = {r:.3g} "
                    f"(healthy 0.5-2, warned outside {BALANCE_WARN[0]}-{BALANCE_WARN[1]})")
    for m in msgs:
        log.warning(m)
    return msgs


def normalize_stream_grads(model: torch.nn.Module) -> None:
    """L2-normalise the two stream-weight gradients so neither stream dominates."""
    att = model.dual_stream_attention
    for p in (att.mel_weights, att.emotion_weights):
        if p.grad is not None:
            n = p.grad.norm()
            if n > 0:
                p.grad.div_(n)
