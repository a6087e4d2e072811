"""bstrain fit end to end: real stores, real training, real checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from blendsync.train.cli import main
from blendsync.train.core.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from blendsync.train.core.config import ConfigOverrides, TrainConfig
from blendsync.train.core.data import DataError
from blendsync.train.loop.trainer import fit
from tests.helpers import KD, make_random_store, tiny


@pytest.mark.slow
def test_small_preset_overfits_a_tiny_store(tmp_path):
    """Five short files, the small preset's sizes: training loss falls by at least 90%."""
    fs, _ = make_random_store(tmp_path / "s.zarr", [12] * 5, channels=5, seed=3, learnable=True)
    cfg = TrainConfig.from_dict(
        {
            "preset": "small",
            "model": {"dropout": 0.0},
            "stream": {"window": 32, "lookahead": 4, "stride": 1, "frames_per_window": 4},
            "optim": {"epochs": 60, "warmup_steps": 20, "lr": 1e-3, "min_lr_ratio": 0.1},
            "diagnostics": {"every_steps": 0},
        }
    )
    r = fit(
        fs.root,
        cfg=cfg,
        out=tmp_path / "run",
        overrides=ConfigOverrides(preset="small", values={"stream.batch_streams": 2}),
    )
    losses = [h["loss"] for h in r.history if h["kind"] == "train"]
    first, last = np.mean(losses[:2]), np.mean(losses[-3:])
    assert last <= 0.1 * first, (first, last)


@pytest.mark.slow
def test_cli_trains_two_epochs_and_writes_every_output(example_store, tmp_path):
    cfgp = tmp_path / "train.yaml"
    cfgp.write_text(tiny().to_yaml())
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "-q",
                "fit",
                "--store",
                str(example_store),
                "--config",
                str(cfgp),
                "--out",
                str(out),
                "--epochs",
                "2",
                "--no-progress",
            ]
        )
    assert e.value.code == 0
    for name in (
        "config.json",
        "metrics.jsonl",
        "loss_curves.png",
        "val_curves.png",
        "stream_weights.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert list((out / "tb").glob("events.out.tfevents.*"))
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in recs if r["kind"] == "val"]
    assert [v["epoch"] for v in vals] == [0, 1]
    m = vals[-1]["metrics"]
    for k in ("mse", "mae", "skill", "mse_mean_predictor"):
        assert k in m
    assert set(m["groups"]) == {"mouth", "expression", "other"}
    assert set(m["per_channel"]["jawOpen"]) == {"mae", "pearson_r", "amplitude_ratio", "active"}
    for k in ("mean_r", "amplitude_ratio", "active_channels"):
        assert k in m and k in m["groups"]["mouth"]
    train = [r for r in recs if r["kind"] == "train"]
    assert {"mse", "l1", "mouth", "expression", "consistency", "temporal"} <= set(train[0])
    with pytest.raises(SystemExit) as e:  # an existing run is not overwritten
        main(["-q", "fit", "--store", str(example_store), "--out", str(out), "--no-progress"])
    assert e.value.code == 1
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ck["epoch"] == 2 and len(ck["channels"]) == 52 and ck["feature_config_hash"]
    stream = json.loads(ck["config_json"])["stream"]
    assert (
        stream["window"] == KD + 16
        and stream["frames_per_window"] == KD == Checkpoint.load(out / "checkpoints" / "last.pt").frames_per_window
    )


def _params(run):
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def test_stopped_mid_epoch_and_resumed_is_bit_identical(example_store, tmp_path):
    """At the default frames per window."""
    cfg = tiny(optim={"epochs": 2}, checkpoint={"every_steps": 0})
    whole = fit(example_store, cfg=cfg, out=tmp_path / "whole")
    steps = whole.step
    part = fit(example_store, cfg=cfg, out=tmp_path / "part", stop_after_steps=steps // 2 + 3)
    assert part.interrupted
    ck = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert ck["step_in_epoch"] > 0  # stopped inside an epoch
    done = fit(example_store, cfg=TrainConfig(), out=tmp_path / "part", resume=True)
    assert done.step == steps
    a, b = _params(tmp_path / "whole"), _params(tmp_path / "part")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the run's CPU and wall seconds go on from the checkpoint's across the resume
    recs = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    for clock in ("cpu_s", "wall_s"):
        seconds = [r[clock] for r in recs]
        assert seconds == sorted(seconds) and seconds[0] > 0, clock


def test_a_store_without_targets_is_refused(tmp_path, make_audio):
    from blendsync.featurize.extract import extract
    from blendsync.shared.config import FeatureConfig
    from tests.helpers import write_manifest

    make_audio("a.wav", 2.0)
    man = write_manifest(tmp_path / "m.csv", [{"audio": "a.wav", "split": "val"}])
    store = tmp_path / "f.zarr"
    extract(man, store, FeatureConfig(), executor="serial")
    with pytest.raises(DataError, match="has targets .1 audio-only.: the store was made without targets"):
        fit(store, cfg=tiny(), out=tmp_path / "r1")


def test_a_checkpoint_refuses_a_store_of_another_feature_config(example_store, tmp_path):
    from blendsync.shared.store import FeatureStore
    from blendsync.train.core.data import load_training_data

    run = tmp_path / "r2"
    fit(example_store, cfg=tiny(optim={"epochs": 1}), out=run, stop_after_steps=2)
    ck = Checkpoint.load(run / "checkpoints" / "last.pt")
    ck.feature_config_hash = "0123456789abcdef"
    with pytest.raises(DataError, match=r"0123456789abcdef.*|.*0123456789abcdef"):
        ck.check_compatible(load_training_data(FeatureStore(example_store), None))


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)


@pytest.mark.slow
def test_custom_rig_head_does_not_collapse(shared_data, tmp_path):
    """Real sparse 116-channel targets: train on one take, predict the other. The held-out
    predictions beat a mean predictor (skill > 0), are not constant, and their per-channel
    means stay within 2x of the targets' where active."""
    from blendsync.featurize.extract import extract
    from blendsync.shared.config import FeatureConfig
    from tests.helpers import write_manifest

    d = shared_data / "custom_rig"
    cfg = FeatureConfig.from_dict({"targets": {"channels_file": str(d / "channel_names.txt")}})
    man = write_manifest(
        tmp_path / "rig.csv",
        [
            {
                "audio": str(d / "1114_3_15.wav"),
                "targets": str(d / "bs_value_1114_3_15.npy"),
                "targets_fps": 30,
                "split": "train",
                "id": "t15",
            },
            {
                "audio": str(d / "1114_3_16.wav"),
                "targets": str(d / "bs_value_1114_3_16.npy"),
                "targets_fps": 30,
                "split": "val",
                "id": "t16",
            },
        ],
    )
    store = tmp_path / "rig.zarr"
    assert extract(man, store, cfg, executor="serial").ok
    # One training take on one stream (split_files off), blocks of the default K frames at
    # stride 1: 1472 / K steps an epoch.
    r = fit(store, cfg=tiny(optim={"epochs": 25, "lr": 3e-3}, stream={"split_files": False}), out=tmp_path / "run")
    from blendsync.train.loop.evaluation import evaluate_checkpoint

    ev = evaluate_checkpoint(r.run_dir / "checkpoints" / "best.pt", store, split="val")
    pred, target = ev["pred"]["t16"], ev["target"]["t16"]
    train_mean = load_checkpoint(r.run_dir / "checkpoints" / "best.pt")["normalizer"]["target_mean"]
    train_mean = np.asarray(train_mean)
    held_mean = target.mean(axis=0)
    # Active: used in both takes at a comparable level (a channel whose level differs by more
    # than 2x between the takes measures the data, not the head).
    ratio = np.maximum(train_mean, 1e-9) / np.maximum(held_mean, 1e-9)
    active = (train_mean > 1e-2) & (held_mean > 1e-2) & (ratio < 2) & (ratio > 0.5)
    assert active.sum() >= 5
    p_mean, t_mean = pred.mean(axis=0)[active], held_mean[active]
    assert (pred.std(axis=0)[active] > 1e-6).all()  # not constant
    # A collapsed head sits near 0 (or 0.5) everywhere. After this short run the predicted
    # level is within 2x of the held-out level on most active channels, and above zero on all.
    within = (p_mean <= 2 * t_mean) & (p_mean >= t_mean / 2)
    assert within.mean() >= 0.8 and (p_mean > t_mean / 10).all(), np.c_[p_mean, t_mean]
    assert ev["metrics"]["frames"] == target.shape[0]
    assert ev["metrics"]["skill"] > 0, ev["metrics"]["skill"]  # beats the mean predictor on the other take
