"""The training step's host-side decisions, device-side loss sums, carried state, and
torch.compile parity on the CPU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from blendsync.train.core.config import TrainConfig
from blendsync.train.loop.step import LossMeter, carry, last_frames, to_device
from blendsync.train.loop.trainer import fit
from tests.helpers import make_random_store


def _batch(B=4, L=10, K=3, C=2):
    return {
        "mel": np.zeros((B, L, 80), np.float32),
        "emotion": np.zeros((B, L, 88), np.float32),
        "frame_mask": np.ones((B, L), bool),
        "target": np.zeros((B, K, C), np.float32),
        "valid": np.ones((B, K), bool),
        "active": np.ones(B, bool),
        "prev_target": np.zeros((B, C), np.float32),
        "has_prev": np.zeros(B, bool),
        "file": np.zeros(B, np.int64),
        "frame": np.zeros(B, np.int64),
    }


def test_host_decides_rows_padding_and_frames_from_the_numpy_batch():
    b = _batch()
    db = to_device(b, torch.device("cpu"))
    assert db.rows is None and not db.padded and db.frames == 12 and db.alpha_in_use  # K > 1
    b["active"][[1, 3]] = False
    b["valid"][[1, 3]] = False
    b["valid"][2, 1:] = False
    b["frame_mask"][1, :4] = False  # padding only in an idle row: the rows that run have none
    db = to_device(b, torch.device("cpu"))
    assert db.rows.tolist() == [0, 2] and not db.padded and db.frames == 4
    b["frame_mask"][2, -1] = False
    assert to_device(b, torch.device("cpu")).padded
    b["active"][:] = False  # a rank out of blocks still runs every row (DDP all-reduce)
    assert to_device(b, torch.device("cpu")).rows is None
    one = _batch(K=1)
    assert not to_device(one, torch.device("cpu")).alpha_in_use
    one["has_prev"][0] = True
    assert to_device(one, torch.device("cpu")).alpha_in_use


def test_carried_state_is_each_rows_last_real_frame():
    pred = torch.arange(2 * 3 * 1, dtype=torch.float32).view(2, 3, 1)
    valid = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(last_frames(pred, valid), torch.tensor([[1.0], [5.0]]))
    prev = torch.tensor([[-1.0], [-2.0]])
    t = {"active": torch.tensor([False, True]), "valid": valid}
    torch.testing.assert_close(carry(prev, pred, t), torch.tensor([[-1.0], [5.0]]))


def test_loss_meter_means_between_reads():
    m = LossMeter()
    for v in (1.0, 2.0, 6.0):
        m.add(torch.tensor(v), {"mse": torch.tensor(v / 2)})
    assert m.pop() == {"loss": 3.0, "mse": 1.5}
    assert m.pop() == {}


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile (inductor) on the CPU needs a C++ compiler; .ci/run installs g++",
)
@pytest.mark.slow
def test_compiled_training_matches_eager_on_the_cpu(tmp_path):
    """compile: true trains the same model: the same losses and parameters as eager within
    float rounding, over a few steps with padding, blocks, carried state and idle-free rows."""
    fs, _ = make_random_store(tmp_path / "s.zarr", [20] * 6, channels=4, seed=2, learnable=True)
    base = {
        "preset": "custom",
        "model": {"d_model": 16, "heads": 2, "dropout": 0.0},
        "stream": {"window": 24, "lookahead": 3, "batch_streams": 2, "frames_per_window": 5},
        "optim": {"epochs": 1, "warmup_steps": 2, "lr": 2e-3},
        "diagnostics": {"every_steps": 0},
    }
    from torch._dynamo.utils import counters

    runs = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        counters.clear()
        cfg = TrainConfig.from_dict({**base, "compile": compiled})
        out = tmp_path / f"run-{compiled}"
        runs[compiled] = fit(fs.root, cfg=cfg, out=out, stop_after_steps=6)
        assert json.loads((out / "config.json").read_text())["train_config"]["compile"] is compiled
        assert (counters["stats"]["unique_graphs"] > 0) is compiled  # really compiled, or really not
    torch._dynamo.reset()
    eager, comp = ([h for h in runs[c].history if h["kind"] == "train"] for c in (False, True))
    assert [h["step"] for h in eager] == [h["step"] for h in comp]
    for a, b in zip(eager, comp):
        for k in ("loss", "mse", "consistency", "temporal"):
            assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-6), k
    pa = torch.load(tmp_path / "run-False" / "checkpoints" / "last.pt", weights_only=True)["model"]
    pb = torch.load(tmp_path / "run-True" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for name in pa:
        torch.testing.assert_close(pb[name], pa[name], rtol=1e-3, atol=1e-4)
