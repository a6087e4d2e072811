"""Channels that never move in the training split: out of the loss, predicted as constant 0."""

from __future__ import annotations

import json
import logging

import numpy as np
import torch
from helpers import make_random_store, tiny

from blendsync.train.core.checkpoint import Checkpoint
from blendsync.train.loop.evaluation import evaluate_checkpoint
from blendsync.train.loop.losses import loss_terms
from blendsync.train.loop.trainer import fit

TERMS = ("mse", "l1", "mouth", "expression", "consistency", "temporal", "amplitude")


def test_the_loss_of_the_trained_channels_alone():
    g = torch.Generator().manual_seed(0)
    B, K, C = 3, 5, 4
    pred, target = torch.rand(B, K, C, generator=g), torch.rand(B, K, C, generator=g)
    prev_p, prev_t = torch.rand(B, C, generator=g), torch.rand(B, C, generator=g)
    valid = torch.ones(B, K, dtype=torch.bool)
    valid[0, 3:] = False
    has_prev = torch.tensor([True, False, True])
    mouth, expr = torch.tensor([True, True, False, False]), torch.tensor([False, False, True, True])
    active = torch.tensor([True, False, True, True])
    pred_far = pred.clone()
    pred_far[..., 1] += 100.0  # a still channel's error must not count
    got = loss_terms(pred_far, target, prev_p, prev_t, valid, has_prev, mouth, expr, None, active)
    keep = active.nonzero().flatten()
    want = loss_terms(
        pred[..., keep], target[..., keep], prev_p[:, keep], prev_t[:, keep], valid, has_prev, mouth[keep], expr[keep]
    )
    for k in TERMS:
        assert torch.allclose(got[k], want[k]), k


def test_still_channels_are_named_kept_and_predicted_zero(tmp_path, caplog):
    # c3 is 0 everywhere, c4 moves but never above 0.05; c0-c2 move.
    fs, _ = make_random_store(tmp_path / "s.zarr", [400, 380, 390], channels=5, learnable=True, scale={3: 0.0, 4: 0.04})
    with caplog.at_level(logging.INFO, logger="blendsync"):
        r = fit(fs.root, cfg=tiny(optim={"epochs": 1}), out=tmp_path / "run")
    assert "2 of 5 channels never exceed 0.05 in the training split" in caplog.text and "c3, c4" in caplog.text
    ck = Checkpoint.load(r.run_dir / "checkpoints" / "last.pt")
    assert ck.still == ["c3", "c4"]
    assert json.loads((r.run_dir / "config.json").read_text())["still_channels"] == ["c3", "c4"]
    model = ck.build_model()
    out = model(torch.randn(2, ck.window, 80), torch.randn(2, ck.window, 88), None)["smoothed"]
    assert torch.equal(out[..., 3:], torch.zeros_like(out[..., 3:])) and out[..., :3].abs().sum() > 0
    ev = evaluate_checkpoint(r.run_dir / "checkpoints" / "last.pt", fs.root, split="val")
    m = ev["metrics"]
    assert m["still"] == ["c3", "c4"] and m["trained"]["channels"] == 3
    assert np.all(np.concatenate(list(ev["pred"].values()))[:, 3:] == 0)
    P = np.concatenate(list(ev["pred"].values()))[:, :3]
    T = np.concatenate(list(ev["target"].values()))[:, :3]
    # The same sum in another order (a column subset of all channels): equal to rounding.
    assert np.isclose(m["trained"]["mse"], float(((P.astype(np.float64) - T) ** 2).mean()), rtol=1e-12, atol=0)


def test_still_max_zero_trains_every_channel(tmp_path):
    fs, _ = make_random_store(tmp_path / "s.zarr", [400, 380], channels=4, learnable=True, scale={3: 0.0})
    r = fit(fs.root, cfg=tiny(optim={"epochs": 1}, loss={"still_max": 0.0}), out=tmp_path / "run")
    assert Checkpoint.load(r.run_dir / "checkpoints" / "last.pt").still == []
