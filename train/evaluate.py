"""Score a checkpoint on a split of a store: the trainer's validation pass and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from blendsync.shared.store import FeatureStore
from blendsync.train.checkpoint import load_checkpoint
from blendsync.train.config import TrainConfig
from blendsync.train.data import load_dataset
from blendsync.train.loop import check_compatible, loss_channels, evaluate, split_metrics
from blendsync.train.model import BlendshapeModel, build_model
from blendsync.train.output_gain import apply_gain, gain_table, resolve_gain
from blendsync.train.streaming import Normalizer, WindowStream


def load_model(ckpt: dict, device="cpu") -> tuple[BlendshapeModel, TrainConfig, Normalizer]:
    """The checkpoint's model in eval mode, its config (frames per window included) and its
    input statistics."""
    cfg = TrainConfig.from_checkpoint_json(ckpt["config_json"])
    fc = json.loads(ckpt["feature_config_json"])
    model = build_model(cfg, fc["mel"]["n_mels"], len(ckpt["channels"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg, Normalizer.from_dict(ckpt["normalizer"])


def evaluate_checkpoint(checkpoint: str | Path, store_path: str | Path, *, manifest: str | None = None,
                        split: str = "val", device: str = "cpu", gain: float | str = 1.0) -> dict:
    """Returns {"terms", "metrics", "gains", "pred": {id: (T, C)}, "target": {id: (T, C)},
    "channels", "fps"} for the split. gain: the output gain applied before the metrics
    (output_gain; the loss terms are the model's own); "gains": the split's metrics at other
    gains (output_gain.gain_table)."""
    ckpt = load_checkpoint(checkpoint)
    gain = resolve_gain(gain, (ckpt.get("best_val") or {}).get("calibrated_gain"), checkpoint)
    store = FeatureStore(store_path)
    ds = load_dataset(store, manifest)
    check_compatible(ckpt, ds)
    files = ds.files(split)
    dev = torch.device(device)
    model, cfg, norm = load_model(ckpt, dev)
    s = cfg.stream
    stream = WindowStream(store, files, norm, window=s.window, lookahead=s.lookahead, stride=1,
                          streams=s.batch_streams, block=s.frames_per_window, pad_value=s.pad_value, prefetch=s.prefetch_files,
                          shuffle=False, split=False)
    terms, preds, targs = evaluate(model, stream, files, cfg, loss_channels(ds, norm, cfg, dev), dev, False, ds.channels)
    raw = np.concatenate([preds[i] for i in sorted(preds)])
    preds = {i: apply_gain(p, norm.target_mean, gain) for i, p in preds.items()}
    return {
        "gain": gain,
        "terms": terms,
        "metrics": split_metrics(preds, targs, norm, ds),
        "gains": gain_table(raw, np.concatenate([targs[i] for i in sorted(targs)]), norm.target_mean, ds.channels,
                            gains=(1.0, 1.5, 2.0, 3.0, gain)),
        "pred": {files[i].id: preds[i] for i in preds},
        "target": {files[i].id: targs[i] for i in targs},
        "channels": list(ds.channels),
        "fps": float(ds.feature_config["fps"]),
    }
