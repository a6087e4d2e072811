"""Train config values: each checked on its own, with its key named."""

from __future__ import annotations

import pytest

from blendsync.train.core.config import TrainConfig


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"model": {"heads": 0}}, "model.heads must be >= 1, got 0"),
        ({"model": {"d_model": -32}}, "model.d_model must be >= 1, got -32"),
        ({"model": {"d_model": "big"}}, "model.d_model must be an integer, got 'big'"),
        ({"optim": {"lr": "fast"}}, "optim.lr must be a finite number, got 'fast'"),
        ({"optim": {"epochs": 2.5}}, "optim.epochs must be an integer, got 2.5"),
        ({"optim": {"epochs": -3}}, "optim.epochs must be >= 1, got -3"),
        ({"model": {"mel_layers": -1}}, "model.mel_layers must be >= 1"),
        ({"optim": {"warmup_steps": -10}}, "optim.warmup_steps must be >= 0"),
        ({"loss": {"mse": -1}}, "loss.mse must be >= 0"),
        ({"checkpoint": {"every_steps": -1}}, "checkpoint.every_steps must be >= 0"),
        ({"model": {"dropout": 2.0}}, r"model.dropout must be in \[0, 1\)"),
        ({"stream": {"pad_value": float("nan")}}, "stream.pad_value must be a finite number"),
        ({"model": {"d_model": 30, "heads": 4}}, "must be divisible by heads"),
        ({"optim": {"betas": 0.9}}, "optim.betas must be two numbers"),
        ({"seed": "abc"}, "seed must be an integer"),
        ({"compile": "yes"}, "compile must be true or false"),
        ({"stream": {"split_files": 1}}, "stream.split_files must be true or false"),
    ],
)
def test_every_config_value_is_checked_with_its_key_named(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict(bad)
