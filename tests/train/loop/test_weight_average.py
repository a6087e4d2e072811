"""optim.ema_decay: the validated and saved weights are the moving average of the trained ones;
a resumed run continues both exactly; configs without it keep their hashes."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny

from blendsync.train.core.checkpoint import load_checkpoint
from blendsync.train.core.config import TrainConfig
from blendsync.train.loop.trainer import fit
from blendsync.train.loop.weight_average import WeightAverage


def test_the_average_moves_part_of_the_way_each_step():
    model = torch.nn.Linear(3, 2)
    avg = WeightAverage(model, decay=0.9)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    avg.update()  # first update: decay min(0.9, 2 / 11)
    d = 2 / 11
    torch.testing.assert_close(avg.average.weight, d * before + (1 - d) * model.weight.detach())
    for _ in range(100):
        avg.update()
    torch.testing.assert_close(avg.average.weight, model.weight.detach(), atol=1e-4, rtol=0)
    assert not avg.average.weight.requires_grad


def test_a_config_without_averaging_keeps_its_hash_and_one_with_it_has_another():
    base = TrainConfig()
    assert "ema_decay" not in base.hashed_dict()["optim"]
    assert base.hash == TrainConfig.from_checkpoint_json(base.to_json()).hash
    old = base.to_dict()
    del old["optim"]["ema_decay"]  # a checkpoint written before the setting
    assert TrainConfig.from_checkpoint_json(__import__("json").dumps(old)).hash == base.hash
    assert base.replace(optim={"ema_decay": 0.99}).hash != base.hash


@pytest.mark.slow
def test_averaged_training_saves_the_average_and_resumes_bit_identically(example_store, tmp_path):
    cfg = tiny(optim={"epochs": 1, "ema_decay": 0.9})
    whole = fit(example_store, cfg=cfg, out=tmp_path / "whole")
    part = fit(example_store, cfg=cfg, out=tmp_path / "part", stop_after_steps=whole.step // 2 + 1)
    assert part.interrupted
    fit(example_store, cfg=TrainConfig(), out=tmp_path / "part", resume=True)
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        assert torch.equal(a["trained_model"][k], b["trained_model"][k]), k
    assert a["weight_average"] == b["weight_average"] == {"updates": whole.step}
    assert not all(torch.equal(a["model"][k], a["trained_model"][k]) for k in a["model"])
