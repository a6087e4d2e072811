"""Fixtures of the training suites."""

from __future__ import annotations

import pytest

from blendsync.train.core.config import TrainConfig
from blendsync.train.loop.trainer import fit

KD = TrainConfig().stream.frames_per_window


@pytest.fixture(scope="session")
def checkpoint(example_store, tmp_path_factory):
    """A tiny model at the default frames per window."""
    cfg = TrainConfig.from_dict(
        {
            "preset": "custom",
            "model": {"d_model": 16, "heads": 2, "dropout": 0.0},
            "stream": {"window": KD + 16, "lookahead": 6, "batch_streams": 4},
            "optim": {"epochs": 1, "warmup_steps": 5},
        }
    )
    run = tmp_path_factory.mktemp("run")
    fit(example_store, cfg=cfg, out=run, stop_after_steps=15)
    return run / "checkpoints" / "last.pt"
