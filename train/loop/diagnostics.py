"""Gradient diagnostics (docs/design.md, Gradient diagnostics): per-parameter norms, warnings for missing, zero or
exploding gradients, the smoothing-alpha gradient and the mel/emotion balance ratio."""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger(__name__)

EXPLODING = 10.0
# With a history of earlier reports: exploding = this many times the parameter's median norm.
EXPLODING_RATIO = 10.0
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


def warn_on(
    report: dict, step: int, alpha_in_use: bool = True, history: dict[str, list[float]] | None = None
) -> list[str]:
    """alpha_in_use: some row of the batch had a previous window (else smoothing_alpha had
    nothing to act on and a zero gradient is expected, e.g. on the first step).

    history (the trainer's, updated here): earlier norms per parameter. A norm's size depends
    on the loss's unit (target units, or errors divided by each channel's spread: about 100x
    larger for a channel that moves by 0.01), so with a history a gradient is exploding when
    it is not finite or over EXPLODING_RATIO times its own median so far (after two
    reports); without one, when it is over EXPLODING."""
    msgs = []
    for name, n in report["norms"].items():
        if name == "smoothing_alpha" and not alpha_in_use:
            continue
        if n is None:
            msgs.append(f"step {step}: no gradient for {name}")
            continue
        if n == 0:
            msgs.append(f"step {step}: zero gradient for {name}")
        elif not math.isfinite(n):
            msgs.append(f"step {step}: non-finite gradient for {name}")
        elif history is None:
            if n > EXPLODING:
                msgs.append(f"step {step}: exploding gradient for {name} (norm {n:.3g} > {EXPLODING})")
        else:
            seen = history.setdefault(name, [])
            if len(seen) >= 2:
                typical = sorted(seen)[len(seen) // 2]
                if n > EXPLODING_RATIO * typical:
                    msgs.append(
                        f"step {step}: exploding gradient for {name} (norm {n:.3g}, "
                        f"{n / typical:.0f}x its median {typical:.3g} so far)"
                    )
            seen.append(n)
    r = report["stream_balance"]
    if r is not None and not BALANCE_WARN[0] <= r <= BALANCE_WARN[1]:
        msgs.append(
            f"step {step}: stream imbalance |grad mel_weights| / |grad emotion_weights| = {r:.3g} "
            f"(healthy 0.5-2, warned outside {BALANCE_WARN[0]}-{BALANCE_WARN[1]})"
        )
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
