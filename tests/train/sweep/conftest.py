"""A tiny sweep's settings: 4 steps of a 16-wide model per trial, validated every 2 steps."""

from __future__ import annotations

import pytest
import yaml

from blendsync.train.core.config import TrainConfig

KD = TrainConfig().stream.frames_per_window
TINY_FIT = {
    "preset": "custom",
    "model.d_model": 16,
    "model.dropout": 0.0,
    "stream.window": KD + 16,
    "stream.batch_streams": 4,
    "optim.epochs": 1,
    "optim.max_steps": 4,
    "optim.warmup_steps": 0,
    "validation.every_steps": 2,
    "diagnostics.every_steps": 0,
}


def write_space(path, **over) -> object:
    doc = {
        "metric": "skill",
        "fit": dict(TINY_FIT),
        "space": {"optim.lr": {"low": 1.0e-4, "high": 3.0e-3, "log": True}, "loss.preset": ["default", "mse"]},
        "pruner": "none",
        "seed": 0,
        **over,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def space_file(tmp_path):
    return lambda **over: write_space(tmp_path / "sweep.yaml", **over)
