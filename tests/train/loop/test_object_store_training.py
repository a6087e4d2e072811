"""bstrain on a store in an S3 bucket (moto's S3 server, see tests/conftest.py): the same
windows, the same training and evaluation as from a local directory."""

from __future__ import annotations

import numpy as np
import pytest

from blendsync.train.cli import main as bstrain
from blendsync.train.core.config import ConfigOverrides
from blendsync.train.loop.evaluation import evaluate_checkpoint
from blendsync.train.loop.trainer import fit
from tests.helpers import make_random_store, tiny


@pytest.mark.slow
def test_fit_and_evaluate_from_a_bucket_match_a_local_store(s3_bucket, tmp_path):
    lengths = [70, 90, 60, 80, 75]
    remote, keys = make_random_store(f"{s3_bucket}/s.zarr", lengths, channels=5, seed=4, learnable=True)
    local, _ = make_random_store(tmp_path / "s.zarr", lengths, channels=5, seed=4, learnable=True)
    assert not remote.is_local and remote.item_keys() == keys

    cfg = tiny(optim={"epochs": 1})
    a = fit(
        remote.location,
        cfg=cfg,
        out=tmp_path / "remote_run",
        overrides=ConfigOverrides(values={"stream.batch_streams": 2}),
    )
    b = fit(
        local.location,
        cfg=cfg,
        out=tmp_path / "local_run",
        overrides=ConfigOverrides(values={"stream.batch_streams": 2}),
    )
    la = [h["loss"] for h in a.history if h["kind"] == "train"]
    lb = [h["loss"] for h in b.history if h["kind"] == "train"]
    assert a.step == b.step > 0 and np.allclose(la, lb, rtol=1e-5)

    ev = evaluate_checkpoint(tmp_path / "remote_run" / "checkpoints" / "last.pt", remote.location)
    ev_local = evaluate_checkpoint(tmp_path / "remote_run" / "checkpoints" / "last.pt", local.location)
    for name in ("mse", "mae", "skill"):
        assert ev["metrics"][name] == pytest.approx(ev_local["metrics"][name], rel=1e-6)
    for fid, pred in ev["pred"].items():
        np.testing.assert_allclose(pred, ev_local["pred"][fid], rtol=1e-6, atol=1e-7)


def test_cli_names_a_store_that_is_not_there(s3_bucket, tmp_path, capsys):
    url = f"{s3_bucket}/nothing.zarr"
    with pytest.raises(SystemExit) as e:
        bstrain(["-q", "fit", "--store", url, "--out", str(tmp_path / "run"), "--no-progress"])
    assert e.value.code == 1
    assert f"{url}: not a feature store" in capsys.readouterr().err
