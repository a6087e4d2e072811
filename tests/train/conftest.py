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


@pytest.fixture(scope="session")
def live_store(tmp_path_factory):
    """The example manifest featurized with the live feature config."""
    from blendsync.featurize.extract import extract
    from blendsync.shared.config import FEATURE_PRESETS
    from tests.helpers import REPO

    store = tmp_path_factory.mktemp("live") / "features.zarr"
    assert extract(REPO / "data_manifest.csv", store, FEATURE_PRESETS["live"], executor="serial").ok
    return store


@pytest.fixture(scope="session")
def live_checkpoint(live_store, tmp_path_factory):
    """A tiny live model (the live preset's shape at d 16) on the live features."""
    from blendsync.train.core.config import ConfigOverrides

    cfg = TrainConfig.from_dict({"model": {"dropout": 0.0}, "optim": {"epochs": 1, "warmup_steps": 2}})
    over = ConfigOverrides(preset="live", values={"model.d_model": 16, "stream.batch_streams": 4})
    run = tmp_path_factory.mktemp("live_run")
    fit(live_store, cfg=cfg, out=run, overrides=over, stop_after_steps=6)
    return run / "checkpoints" / "last.pt"


@pytest.fixture(scope="session")
def mixed_store(tmp_path_factory):
    """Two captured takes (train, val) and two takes of audio only (train): the default
    features. Read only: a test that writes into a store (a teacher's curves) copies it."""
    from blendsync.featurize.extract import extract
    from blendsync.shared.config import FeatureConfig
    from tests.helpers import REPO, write_manifest

    example = REPO / "data" / "example"
    d = tmp_path_factory.mktemp("mixed")
    rows = [
        {"audio": example / "ava_take1.wav", "targets": example / "ava_take1.csv", "split": "train", "id": "a1"},
        {"audio": example / "ava_take2.wav", "split": "train", "id": "a2"},
        {"audio": example / "bruno_take1.flac", "split": "train", "id": "b1"},
        {"audio": example / "chen_take1.wav", "targets": example / "chen_take1.csv", "split": "val", "id": "c1"},
    ]
    man = write_manifest(d / "mixed.csv", rows)
    assert extract(man, d / "f.zarr", FeatureConfig(), executor="serial").ok
    return d / "f.zarr"
