"""One training step, and the batch handling around it, without host-device synchronisation.

The host knows from its numpy batch which rows are active and whether any window has
padding; those decisions are made there, so the step never reads a device value back (no
`.item()`, no branch on a tensor). Loss terms stay on the device and are summed there
(LossMeter); the trainer reads them every log interval. On CUDA, batches are copied from pinned
host memory with non_blocking copies.

Shapes as streaming.py documents: B streams, L window frames, K block frames, C channels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from blendsync.train.core.config import TrainConfig
from blendsync.train.loop.losses import loss_terms, total_loss


@dataclass(kw_only=True)
class DeviceBatch:
    """A batch on the device plus what the host decided about it.

    t: the streaming arrays as tensors; rows: (R,) int64 on the device, the active rows when
    only some are (None: run every row); padded: some window that runs has padding (else the
    model skips the attention mask); frames: real target frames in the batch; alpha_in_use:
    smoothing_alpha acts on some frame (a block of K > 1 or a carried previous frame)."""

    t: dict[str, torch.Tensor]
    rows: torch.Tensor | None
    padded: bool
    frames: int
    alpha_in_use: bool


def to_device(batch: dict[str, np.ndarray], device: torch.device) -> DeviceBatch:
    active = batch["active"]
    some = bool(active.any()) and not bool(active.all())
    # A batch with no active row (a rank out of windows) still runs whole, its loss masked to
    # 0, so every process takes part in the gradient all-reduce.
    run = np.flatnonzero(active) if some else np.arange(active.shape[0])
    pin = device.type == "cuda"

    def put(v: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(v)
        return x.pin_memory().to(device, non_blocking=True) if pin else x.to(device)

    t = {k: put(v) for k, v in batch.items()}
    rows = put(run.astype(np.int64)) if some else None
    return DeviceBatch(
        t=t,
        rows=rows,
        padded=not bool(batch["frame_mask"][run].all()),
        frames=int(batch["valid"].sum()),
        alpha_in_use=batch["target"].shape[1] > 1 or bool(batch["has_prev"][run].any()),
    )


def forward_rows(model, db: DeviceBatch, prev: torch.Tensor, amp: bool) -> torch.Tensor:
    """Smoothed predictions (B, K, C) float32; idle rows are not computed (zeros, masked by
    the loss and never carried)."""
    t = db.t
    rows = db.rows
    pick = (lambda x: x) if rows is None else (lambda x: x.index_select(0, rows))
    with torch.autocast(device_type=prev.device.type, dtype=torch.bfloat16, enabled=amp):
        out = model(
            pick(t["mel"]),
            pick(t["emotion"]),
            pick(t["frame_mask"]) if db.padded else None,
            pick(prev),
            pick(t["has_prev"]),
        )
    smoothed = out["smoothed"].float()
    if rows is None:
        return smoothed
    B, (_, K, C) = prev.shape[0], smoothed.shape
    return smoothed.new_zeros(B, K, C).index_copy(0, rows, smoothed)


def last_frames(pred: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, K, C), (B, K) -> (B, C): each row's last real frame (the state carried to the
    row's next block)."""
    last = (valid.sum(dim=1) - 1).clamp(min=0)
    return pred.gather(1, last[:, None, None].expand(-1, 1, pred.shape[2])).squeeze(1)


def carry(prev: torch.Tensor, pred: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """The next step's previous smoothed frame per stream (B, C): active rows move on."""
    return torch.where(t["active"][:, None], last_frames(pred, t["valid"]), prev)


def train_step(model, db: DeviceBatch, prev, cfg: TrainConfig, masks, amp: bool, augment=None):
    """One forward/backward, on features augmented by augment (augment.FeatureAugmenter, or
    None). Returns (loss, terms, smoothed (B, K, C) detached), all on the device."""
    if augment is not None:
        mel, emotion = augment(db.t["mel"], db.t["emotion"], db.t["frame_mask"])
        db = replace(db, t={**db.t, "mel": mel, "emotion": emotion})
    t = db.t
    pred = forward_rows(model, db, prev, amp)
    terms = loss_terms(pred, t["target"], prev, t["prev_target"], t["valid"], t["has_prev"], *masks)
    loss = total_loss(terms, cfg.loss)
    loss.backward()
    return loss, terms, pred.detach()


class LossMeter:
    """Sums of the loss and its terms on the device between two log records; pop() reads
    them back in one transfer."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def add(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        for k, v in {"loss": loss, **terms}.items():
            v = v.detach().float()
            self.sums[k] = v if k not in self.sums else self.sums[k] + v
        self.n += 1

    def pop(self) -> dict[str, float]:
        if not self.sums:
            return {}
        names = list(self.sums)
        values = torch.stack([self.sums[k] for k in names]).cpu().tolist()
        out = {k: v / max(self.n, 1) for k, v in zip(names, values)}
        self.sums, self.n = {}, 0
        return out


class NonFiniteLoss(ValueError):
    """The training loss became NaN or infinite: the run stops rather than save such weights."""


class NonFiniteGuard:
    """Finds the first step whose loss is not finite without a read-back per step: each step's
    finiteness flag stays on the device, with the batch's files on the host, until check()
    (every log interval, before every checkpoint, every step on a CPU where reading is free)."""

    def __init__(self):
        self.pending: list[tuple[int, torch.Tensor, list[str]]] = []

    def add(self, step: int, loss: torch.Tensor, files: list[str]) -> None:
        self.pending.append((step, torch.isfinite(loss.detach()).all(), files))

    def check(self) -> None:
        if not self.pending:
            return
        flags = torch.stack([p[1] for p in self.pending]).cpu().tolist()
        pending, self.pending = self.pending, []
        for (step, _, files), ok in zip(pending, flags):
            if not ok:
                shown = ", ".join(files[:8]) + (f", ... ({len(files)} files)" if len(files) > 8 else "")
                raise NonFiniteLoss(
                    f"the training loss is not finite at step {step} (batch files: {shown}); "
                    "training stopped, the last checkpoint is the last finite one. Check those "
                    "items (bsfeat verify) or lower optim.lr"
                )
