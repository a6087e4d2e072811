#!/usr/bin/env python3
"""Regenerate k1_reference.json: what the one-frame-per-window model computes.

The committed file was written by the per-window model of the method notes (before frame
blocks existed); tests/train/test_frame_blocks.py checks that frames_per_window = 1
reproduces it: the model's outputs on fixed inputs, and a short training run's logged
losses, validation metrics and final parameters. Regenerate only after a deliberate change
to what K = 1 computes:

    .venv/bin/python tests/train/golden/make_k1_reference.py
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from blendsync.train.core.config import ModelConfig, StreamConfig, TrainConfig  # noqa: E402
from blendsync.train.loop.trainer import fit  # noqa: E402
from blendsync.train.core.model import BlendshapeModel  # noqa: E402
from tests.helpers import make_random_store  # noqa: E402

OUT = Path(__file__).with_name("k1_reference.json")
MODEL = {"d_model": 16, "heads": 2, "mel_layers": 1, "emotion_layers": 1, "dropout": 0.0}
L, LA, C = 20, 3, 7


def k1(stream: dict) -> dict:
    """The stream section with one frame per window (a key the per-window model lacks)."""
    if "frames_per_window" in {f.name for f in dataclasses.fields(StreamConfig)}:
        return {**stream, "frames_per_window": 1}
    return stream


def model_inputs():
    g = torch.Generator().manual_seed(0)
    mel = torch.randn(3, L, 80, generator=g)
    emo = torch.randn(3, L, 88, generator=g)
    mask = torch.ones(3, L, dtype=torch.bool)
    mask[0, :5] = False  # a window at a file start
    mask[2, -2:] = False  # and one at a file end
    prev = torch.rand(3, C, generator=g)
    has_prev = torch.tensor([False, True, True])
    return mel, emo, mask, prev, has_prev


def model_outputs() -> dict:
    torch.manual_seed(0)
    kw = {"frames_per_window": 1} if "frames_per_window" in BlendshapeModel.__init__.__code__.co_varnames else {}
    m = BlendshapeModel(n_mels=80, n_emotion=88, channels=C, window=L, cfg=ModelConfig(**MODEL), lookahead=LA, **kw)
    m.decoder.init_bias(torch.linspace(0.01, 0.6, C))
    m.train()  # dropout 0: deterministic, and the head is not clamped to [0, 1]
    with torch.no_grad():
        out = m(*model_inputs())
    return {k: out[k].reshape(3, C).tolist() for k in ("current", "smoothed")}


def training_run() -> dict:
    cfg = TrainConfig.from_dict({
        "preset": "custom", "model": MODEL,
        "stream": k1({"window": 24, "lookahead": 3, "batch_streams": 3, "stride": 2,
                      **({"phase_jitter": False} if "phase_jitter" in StreamConfig.__dataclass_fields__ else {})}),
        "optim": {"epochs": 2, "warmup_steps": 5, "lr": 2e-3},
        "diagnostics": {"every_steps": 0}, "seed": 3,
        # The loss and validation of the model before frame blocks (today's names for them).
        **({"loss": {"preset": "notes"}, "validation": {"holdout_tail": 0.0, "metric": "loss"}}
           if "validation" in TrainConfig.__dataclass_fields__ else {}),
        # ... and no augmentation, which it did not have.
        **({"augment": {"emotion_dropout": 0.0}} if "augment" in TrainConfig.__dataclass_fields__ else {}),
    })
    with tempfile.TemporaryDirectory() as tmp:
        fs, _ = make_random_store(Path(tmp) / "s.zarr", [30, 47, 12, 64, 25, 40, 33], channels=C, seed=5,
                                  learnable=True)
        r = fit(fs.root, cfg=cfg, out=Path(tmp) / "run", device="cpu")
        ck = torch.load(Path(tmp) / "run" / "checkpoints" / "last.pt", weights_only=True)
    keys = ("step", "loss", "mse", "l1", "mouth", "expression", "consistency", "temporal", "alpha")
    train = [{k: h[k] for k in keys} for h in r.history if h["kind"] == "train"]
    val = [{"step": h["step"], "loss": h["loss"], "mse": h["metrics"]["mse"], "skill": h["metrics"]["skill"]}
           for h in r.history if h["kind"] == "val"]
    params = {name: [float(t.double().sum()), float(t.double().abs().sum())] for name, t in ck["model"].items()}
    return {"steps": r.step, "train": train, "val": val, "params": params}


def main() -> None:
    torch.set_num_threads(1)
    doc = {"model": model_outputs(), "fit": training_run(), "torch": torch.__version__}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}: {doc['fit']['steps']} steps, {len(doc['fit']['val'])} validation records")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
