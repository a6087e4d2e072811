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


def _wrong_shape(ck):
    name = next(k for k, v in ck["model"].items() if v.ndim == 2)
    ck["model"][name] = torch.zeros(3, 3)


def _edit_json(key, change):
    """An edit of the checkpoint's JSON entry key (its train or feature config) by change(doc)."""

    def edit(ck):
        doc = json.loads(ck[key])
        change(doc)
        ck[key] = json.dumps(doc)

    return edit


def _flip_a_bit(ck):
    name = next(k for k, v in ck["model"].items() if v.ndim == 2)
    w = ck["model"][name].clone()
    w.view(-1).view(torch.int32)[7] ^= 1 << 22  # one mantissa bit of one weight
    ck["model"][name] = w


def _set_statistic(key, index, value):
    return lambda ck: ck["normalizer"][key].__setitem__(index, value)


def _with_checksum(edit):
    def edited(ck):
        from blendsync.train.core.checkpoint import (
            CALIBRATION_CHECKSUM,
            CHECKSUM,
            calibration_checksum,
            content_checksum,
        )

        edit(ck)
        ck[CHECKSUM] = content_checksum(ck)
        ck[CALIBRATION_CHECKSUM] = calibration_checksum(ck)

    return edited


def _with_config_hash(edit):
    """An edit, then the train config's hash written again with the package's own function."""

    def edited(ck):
        from blendsync.train.core.config import TrainConfig

        edit(ck)
        ck["config_hash"] = TrainConfig.from_checkpoint_json(ck["config_json"]).hash

    return edited


CASES = {
    "missing key": (lambda ck: ck.pop("channels"), "missing channels"),
    "wrong type": (lambda ck: ck.update(feature_config_hash=123), "feature_config_hash is int"),
    "bad train config": (
        _edit_json("config_json", lambda cfg: cfg["model"].update(heads=0)),
        "train config (config_json) is invalid: invalid train config: model.heads must be >= 1",
    ),
    "bad feature config": (lambda ck: ck.update(feature_config_json="{not json"), "feature config"),
    "wrong tensor shape": (_wrong_shape, "model weights of the wrong shape"),
    "missing weight": (lambda ck: ck["model"].pop("smoothing_alpha"), "1 missing (smoothing_alpha)"),
    "short statistics": (lambda ck: ck["normalizer"].update(mel_mean=[0.0] * 3), "mel_mean has 3 values, expected 80"),
    # A checkpoint names its channels; it never makes a command read a file.
    "a file to read": (
        _edit_json("feature_config_json", lambda fc: fc["targets"].update(channels=None, channels_file="/etc/passwd")),
        "never a file to read (targets.channels_file: '/etc/passwd')",
    ),
    # Values no config file may hold are refused in a checkpoint by the same rules.
    "a window of 1e9 frames": (
        _edit_json("config_json", lambda cfg: cfg["stream"].update(window=10**9)),
        "train config (config_json) is invalid: invalid train config: stream.window must be <= 2048",
    ),
    # Every size at its bound (terabytes of weights if built): refused by the stored shapes,
    # never allocated.
    "a model of the largest sizes": (
        _with_config_hash(
            _edit_json(
                "config_json",
                lambda cfg: cfg["model"].update(d_model=4096, heads=256, mel_layers=64, emotion_layers=64, ff_mult=64),
            )
        ),
        "model weights do not match its config",
    ),
    "1e9 frames a second": (
        _edit_json("feature_config_json", lambda fc: fc.update(fps=1e9)),
        "fps must be <= 240",
    ),
    "a section that is no mapping": (
        _edit_json("config_json", lambda cfg: cfg.update(model=5)),
        "model must be a mapping of its settings, got int",
    ),
    "edited feature config": (
        _edit_json("feature_config_json", lambda fc: fc["emotion"].update(context_s=2.0)),
        "its feature config hashes to",
    ),
    "edited train config": (
        _edit_json("config_json", lambda cfg: cfg["optim"].update(lr=0.5)),
        "its train config hashes to",
    ),
    "channels not its config's": (
        lambda ck: ck.update(channels=ck["channels"][:24], still_channels=[]),
        "it has 24 channels, its feature config (test) 52",
    ),
    # One byte flipped in data.pkl, within a channel's name: the name is shown, not a count.
    "a channel name with a flipped byte": (
        lambda ck: ck.update(channels=[ck["channels"][0], "jawOpem", *ck["channels"][2:]]),
        "its channel 1 is 'jawOpem' where its feature config (test) has 'c1' (edited or damaged)",
    ),
    "NaN statistic": (
        _set_statistic("mel_std", 3, float("nan")),
        "mel_std has 1 values that are not finite and above 0",
    ),
    "zero standard deviation": (
        _set_statistic("emotion_std", 0, 0.0),
        "emotion_std has 1 values that are not finite and above 0 (first at index 0: 0.0)",
    ),
    "negative target spread": (
        _set_statistic("target_std", 5, -1.0),
        "target_std has 1 values that are not finite and not negative",
    ),
    # Finite in float64, where the check ran, but inf or 0 in the float32 the model uses.
    "a mean past float32": (_set_statistic("target_mean", 2, 1e308), "target_mean has 1 values that are not finite"),
    "a std below float32": (
        _set_statistic("mel_std", 4, 1e-308),
        "mel_std has 1 values that are not finite and above 0",
    ),
    "infinite mean": (_set_statistic("target_mean", 2, float("inf")), "target_mean has 1 values that are not finite"),
    "a flipped bit in a weight": (_flip_a_bit, "do not match the checksum written when it was saved"),
    # One byte flipped in data.pkl within the key "still_channels": the list is gone, and with it
    # the still channels' zeros; a mouth channel renamed changes the loss of a resumed run.
    "a renamed still-channels key": (
        lambda ck: ck.update(still_channens=ck.pop("still_channels")),
        "its still, mouth or expression channel lists do not match the checksum",
    ),
    "an edited mouth list": (
        lambda ck: ck.update(mouth=ck["mouth"][1:]),
        "its still, mouth or expression channel lists do not match the checksum",
    ),
    # Edited with its checksum written again (the package's own function): the values are checked too.
    "a NaN smoothing alpha": (
        _with_checksum(lambda ck: ck["model"].update(smoothing_alpha=torch.tensor(float("nan")))),
        "model weights hold NaN or infinite values: smoothing_alpha",
    ),
    "an edited calibrated gain": (
        lambda ck: ck.update(best_val={**(ck.get("best_val") or {}), "calibrated_gain": 9.0}),
        "its calibrated gain does not match the checksum written when it was saved",
    ),
    "a NaN calibrated gain": (
        _with_checksum(lambda ck: ck.update(best_val={**(ck.get("best_val") or {}), "calibrated_gain": float("nan")})),
        "its calibrated gain is nan, not a finite number >= 0",
    ),
    "infinite queries": (
        _with_checksum(lambda ck: ck["model"]["blendshape_queries"].view(-1).__setitem__(0, float("inf"))),
        "model weights hold NaN or infinite values: blendshape_queries",
    ),
    "a nudged statistic": (_set_statistic("mel_mean", 0, 0.125), "do not match the checksum"),
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


def test_a_checkpoint_carries_its_config_hash_and_checksum(trained):
    from blendsync.train.core.checkpoint import content_checksum
    from blendsync.train.core.config import TrainConfig

    _, last = trained
    ck = torch.load(last, weights_only=True)
    assert ck["config_hash"] == TrainConfig.from_checkpoint_json(ck["config_json"]).hash
    assert ck["content_sha256"] == content_checksum(ck) and len(ck["content_sha256"]) == 64


def test_a_checkpoint_written_before_checksums_loads_with_a_warning(trained, tmp_path, caplog):
    import logging

    _, last = trained
    old = _damaged(last, tmp_path / "old.pt", lambda ck: [ck.pop("content_sha256"), ck.pop("config_hash")])
    with caplog.at_level(logging.WARNING):
        load_checkpoint(old)
    assert "old.pt: written before checkpoints carried a checksum" in caplog.text


@pytest.mark.parametrize("case", ["a file to read", "NaN statistic", "a flipped bit in a weight"])
def test_no_command_uses_an_untrusted_checkpoint(trained, tmp_path, shared_data, capsys, case):
    """export wrote a sidecar holding /etc/passwd's lines, predict all-NaN curves and wrong
    curves from these (exit 0): now each exits 1 naming the file and writes nothing."""
    store, last = trained
    bad = _damaged(last, tmp_path / "bad.pt", CASES[case][0])
    audio = shared_data / "speech" / "cmu_arctic_a0007_16k.wav"
    for args in (
        ["predict", str(audio), "--checkpoint", str(bad), "--out", str(tmp_path / "p")],
        ["export", "--checkpoint", str(bad), "--format", "onnx", "--out", str(tmp_path / "m.onnx")],
        ["preview", str(audio), "--checkpoint", str(bad), "--out", str(tmp_path / "v.mp4"), "--no-progress"],
        ["stream", str(audio), "--checkpoint", str(bad), "--no-realtime", "--to", "127.0.0.1:9"],
        ["fit", "--store", str(store), "--init-from", str(bad), "--keep-normalization", "--out", str(tmp_path / "ft")],
    ):
        with pytest.raises(SystemExit) as e:
            main(["-q", *args])
        err = capsys.readouterr().err
        assert e.value.code == 1 and "bad.pt: malformed checkpoint" in err and CASES[case][1] in err, (args, err)
        assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt"]


def test_a_file_that_is_no_checkpoint_is_named_in_one_line(tmp_path):
    import pickle

    path = tmp_path / "other.pt"
    with open(path, "wb") as f:
        pickle.dump(CheckpointError("a pickled object"), f)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(f"{path}: not a readable blendsync checkpoint") and "\n" not in str(e.value)


def test_a_checkpoint_without_its_config_hash_loads_with_a_warning(trained, tmp_path, caplog):
    _, last = trained
    old = _damaged(last, tmp_path / "old.pt", lambda ck: ck.pop("config_hash"))
    load_checkpoint(old)
    assert "written before checkpoints carried their config's hash" in caplog.text
