"""Checkpoints that load safely but are malformed: every command that reads one exits 1 with a
message naming the file and what is wrong, never a KeyError or size-mismatch traceback."""

from __future__ import annotations

import json

import pytest
import torch

from blendsync.train.cli import main
from blendsync.train.core.checkpoint import CheckpointError, load_checkpoint
from blendsync.train.loop.trainer import fit
from tests.helpers import make_random_store, tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    fs, _ = make_random_store(d / "s.zarr", [300, 280], channels=52)
    fit(fs.root, cfg=tiny(optim={"epochs": 1}), out=d / "run", stop_after_steps=2)
    return fs.root, d / "run" / "checkpoints" / "last.pt"


def _damaged(src, dst, edit):
    ck = torch.load(src, weights_only=True)
    edit(ck)
    torch.save(ck, dst)
    return dst


def _bad_config(ck):
    cfg = json.loads(ck["config_json"])
    cfg["model"]["heads"] = 0
    ck["config_json"] = json.dumps(cfg)


def _wrong_shape(ck):
    name = next(k for k, v in ck["model"].items() if v.ndim == 2)
    ck["model"][name] = torch.zeros(3, 3)


CASES = {
    "missing key": (lambda ck: ck.pop("channels"), "missing channels"),
    "wrong type": (lambda ck: ck.update(feature_config_hash=123), "feature_config_hash is int"),
    "bad train config": (
        _bad_config,
        "train config (config_json) is invalid: invalid train config: model.heads must be >= 1",
    ),
    "bad feature config": (lambda ck: ck.update(feature_config_json="{not json"), "feature config"),
    "wrong tensor shape": (_wrong_shape, "model weights of the wrong shape"),
    "missing weight": (lambda ck: ck["model"].pop("smoothing_alpha"), "1 missing (smoothing_alpha)"),
    "short statistics": (lambda ck: ck["normalizer"].update(mel_mean=[0.0] * 3), "mel_mean has 3 values, expected 80"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_checkpoint_is_named_with_what_is_wrong(trained, tmp_path, case):
    _, last = trained
    edit, phrase = CASES[case]
    bad = _damaged(last, tmp_path / "bad.pt", edit)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bad)
    assert str(bad) in str(e.value) and "malformed checkpoint" in str(e.value) and phrase in str(e.value)


def test_every_command_exits_1_on_a_malformed_checkpoint(trained, tmp_path, shared_data, capsys):
    store, last = trained
    bad = _damaged(last, tmp_path / "bad.pt", _wrong_shape)
    audio = shared_data / "speech" / "cmu_arctic_a0007_16k.wav"
    for args in (
        ["predict", str(audio), "--checkpoint", str(bad), "--out", str(tmp_path / "p")],
        ["evaluate", "--checkpoint", str(bad), "--store", str(store), "--split", "train"],
        ["export", "--checkpoint", str(bad), "--format", "torchscript", "--out", str(tmp_path / "m.pt")],
    ):
        with pytest.raises(SystemExit) as e:
            main(["-q", *args])
        assert e.value.code == 1, args
        err = capsys.readouterr().err
        assert "bad.pt: malformed checkpoint: model weights of the wrong shape" in err and "Traceback" not in err


def test_resume_from_a_checkpoint_without_training_state_is_refused(trained, tmp_path, capsys):
    store, last = trained
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    _damaged(last, run / "checkpoints" / "last.pt", lambda ck: ck.pop("optimizer"))
    with pytest.raises(SystemExit) as e:
        main(["-q", "fit", "--store", str(store), "--out", str(run), "--resume", "--no-progress"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "last.pt: cannot resume from it: missing optimizer" in err and "Traceback" not in err


def test_a_checkpoint_written_before_the_typed_record_still_loads(trained, tmp_path):
    # Such files also held window, lookahead, frames_per_window and fps at the top level.
    from blendsync.train.core.checkpoint import Checkpoint

    _, last = trained
    old = _damaged(
        last, tmp_path / "old.pt", lambda ck: ck.update(window=144, lookahead=6, frames_per_window=128, fps=30.0)
    )
    ck = Checkpoint.load(old)
    assert (ck.window, ck.lookahead, ck.fps) == (144, 6, 30.0) and ck.training is not None
