"""Scoring: the validation pass the trainer runs, the metrics of a split, and `bstrain
evaluate` (a checkpoint scored on a split of a store) built from the same two."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from blendsync.shared.store import FeatureStore
from blendsync.train.core.checkpoint import Checkpoint
from blendsync.train.core.config import LOSS_TERMS, TrainConfig
from blendsync.train.core.data import DataError, FileRef, TrainingData, load_training_data
from blendsync.train.core.metrics import regression_metrics
from blendsync.train.core.normalization import Normalizer, still_mask
from blendsync.train.core.output_gain import apply_gain, gain_table, resolve_gain
from blendsync.train.loop.losses import channel_scale, loss_terms, total_loss
from blendsync.train.loop.step import carry, forward_rows, to_device
from blendsync.train.loop.streaming import WindowStream


@dataclass(frozen=True)
class LossChannels:
    """The per-channel inputs of loss_terms after its per-frame arguments: mouth (C,) bool,
    expression (C,) bool, scale (C,) float or None, active (C,) bool (False: a still channel,
    out of the loss) or None when every channel is trained."""

    mouth: torch.Tensor
    expression: torch.Tensor
    scale: torch.Tensor | None
    active: torch.Tensor | None = None

    def __iter__(self):
        return iter((self.mouth, self.expression, self.scale, self.active))


def loss_channels(
    ds: TrainingData, norm: Normalizer, cfg: TrainConfig, device, still: list[str] | tuple = ()
) -> LossChannels:
    mouth = torch.tensor([c in set(ds.mouth) for c in ds.channels], device=device)
    expr = torch.tensor([c in set(ds.expression) for c in ds.channels], device=device)
    if cfg.loss.scale != "none" and norm.target_std is None:
        raise DataError("this checkpoint's statistics have no target spread: score or resume it with loss.scale: none")
    scale = channel_scale(cfg.loss, norm.target_std) if cfg.loss.scale != "none" else None
    active = (~still_mask(ds.channels, still)).to(device) if still else None
    return LossChannels(mouth, expr, None if scale is None else torch.from_numpy(scale).to(device), active)


@torch.no_grad()
def validation_pass(
    model,
    stream: WindowStream,
    files: list[FileRef],
    cfg: TrainConfig,
    masks: LossChannels,
    device,
    amp: bool,
    channels: list[str],
) -> tuple[dict, dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Every frame of every file at stride 1 with carried state. Returns (loss terms averaged
    over target frames, predictions per file (T, C), targets per file (T, C))."""
    was_training = model.training
    model.eval()
    preds = {i: np.zeros((f.frames, len(channels)), np.float32) for i, f in enumerate(files)}
    targs = {i: np.zeros((f.frames, len(channels)), np.float32) for i, f in enumerate(files)}
    sums = {k: 0.0 for k in (*LOSS_TERMS, "loss")}
    n = 0
    prev = torch.zeros(stream.streams, len(channels), device=device)
    for batch in stream.epoch(0):
        db = to_device(batch, device)
        b = db.t
        pred = forward_rows(model, db, prev, amp)
        terms = loss_terms(pred, b["target"], prev, b["prev_target"], b["valid"], b["has_prev"], *masks)
        values = torch.stack([terms[k] for k in LOSS_TERMS] + [total_loss(terms, cfg.loss)]).cpu().tolist()
        for k, v in zip((*LOSS_TERMS, "loss"), values):
            sums[k] += v * db.frames
        n += db.frames
        prev = carry(prev, pred, b)
        p = pred.cpu().numpy()
        for row in np.flatnonzero(batch["active"]):
            f, k = int(batch["file"][row]), int(batch["frame"][row])
            n_real = int(batch["valid"][row].sum())
            preds[f][k : k + n_real] = p[row, :n_real]
            targs[f][k : k + n_real] = batch["target"][row, :n_real]
    model.train(was_training)
    return {k: v / max(n, 1) for k, v in sums.items()}, preds, targs


def split_metrics(
    preds: dict[int, np.ndarray],
    targs: dict[int, np.ndarray],
    norm: Normalizer,
    ds: TrainingData,
    still: list[str] | tuple = (),
) -> dict:
    """regression_metrics over every frame of a split, with the channel set's groups, over all
    channels and over the trained ones (still: the others)."""
    grouped = set(ds.mouth) | set(ds.expression)
    groups = {"mouth": ds.mouth, "expression": ds.expression, "other": [c for c in ds.channels if c not in grouped]}
    P = np.concatenate([preds[i] for i in sorted(preds)])
    T = np.concatenate([targs[i] for i in sorted(targs)])
    return regression_metrics(P, T, norm.target_mean, ds.channels, groups, still)


def evaluate_checkpoint(
    checkpoint: str | Path,
    store_path: str | Path,
    *,
    manifest: str | None = None,
    split: str = "val",
    device: str = "cpu",
    gain: float | str = 1.0,
) -> dict:
    """Returns {"terms", "metrics", "gains", "pred": {id: (T, C)}, "target": {id: (T, C)},
    "channels", "fps"} for the split. gain: the output gain applied before the metrics
    (output_gain; the loss terms are the model's own); "gains": the split's metrics at other
    gains (output_gain.gain_table)."""
    ck = Checkpoint.load(checkpoint)
    gain = resolve_gain(gain, ck.calibrated_gain, checkpoint)
    store = FeatureStore(store_path)
    ds = load_training_data(store, manifest)
    ck.check_compatible(ds)
    files = ds.files(split)
    dev = torch.device(device)
    model, cfg, norm = ck.build_model(dev), ck.config, ck.normalizer
    s = cfg.stream
    stream = WindowStream(
        store,
        files,
        norm,
        window=s.window,
        lookahead=s.lookahead,
        stride=1,
        streams=s.batch_streams,
        block=s.frames_per_window,
        pad_value=s.pad_value,
        prefetch=s.prefetch_files,
        shuffle=False,
        split=False,
    )
    terms, preds, targs = validation_pass(
        model, stream, files, cfg, loss_channels(ds, norm, cfg, dev, ck.still), dev, False, ds.channels
    )
    raw = np.concatenate([preds[i] for i in sorted(preds)])
    preds = {i: apply_gain(p, norm.target_mean, gain) for i, p in preds.items()}
    return {
        "gain": gain,
        "terms": terms,
        "metrics": split_metrics(preds, targs, norm, ds, ck.still),
        "gains": gain_table(
            raw,
            np.concatenate([targs[i] for i in sorted(targs)]),
            norm.target_mean,
            ds.channels,
            gains=(1.0, 1.5, 2.0, 3.0, gain),
        ),
        "pred": {files[i].id: preds[i] for i in preds},
        "target": {files[i].id: targs[i] for i in targs},
        "channels": list(ds.channels),
        "fps": ck.fps,
    }
