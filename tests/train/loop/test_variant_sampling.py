"""bstrain fit with stored audio variants (augment.variant_p): a take's variant walked instead
of the take, chosen per take and epoch from the seed; validation never sees them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny

from blendsync.shared.store import FeatureStore
from blendsync.train.core.checkpoint import load_checkpoint
from blendsync.train.core.config import TrainConfig
from blendsync.train.core.data import FileRef, hold_out_tails, load_training_data, variant_ranges
from blendsync.train.core.normalization import compute_normalizer
from blendsync.train.loop.streaming import WindowStream
from blendsync.train.loop.trainer import fit
from tests.helpers import REPO

EXAMPLE = REPO / "data" / "example"


@pytest.fixture(scope="module")
def augmented_store(tmp_path_factory):
    """Two captured training takes with a speed-up, a slow-down and a noisy variant each, and a
    validation take (the default features)."""
    from blendsync.featurize.audio_variants import parse_variants
    from blendsync.featurize.extract import extract
    from blendsync.shared.config import FeatureConfig
    from tests.helpers import write_manifest

    d = tmp_path_factory.mktemp("augmented")
    rows = [
        {"audio": EXAMPLE / "ava_take1.wav", "targets": EXAMPLE / "ava_take1.csv", "split": "train", "id": "a1"},
        {"audio": EXAMPLE / "bruno_take1.flac", "targets": EXAMPLE / "bruno_take1.csv", "split": "train", "id": "b1"},
        {"audio": EXAMPLE / "chen_take1.wav", "targets": EXAMPLE / "chen_take1.csv", "split": "val", "id": "c1"},
    ]
    man = write_manifest(d / "aug.csv", rows)
    variants = parse_variants(["speed:0.9", "speed:1.1", "noise:20"])
    assert extract(man, d / "f.zarr", FeatureConfig(), executor="serial", augment=variants).ok
    return d / "f.zarr"


def _stream(store_path, p: float, seed: int = 0) -> tuple[WindowStream, list[FileRef]]:
    store = FeatureStore(store_path)
    ds = load_training_data(store, None)
    files = ds.files("train")
    norm = compute_normalizer(store, files)
    s = TrainConfig().stream
    stream = WindowStream(store, files, norm, window=s.window, lookahead=s.lookahead, stride=1, streams=2,
                          block=s.frames_per_window, seed=seed, variants=variant_ranges(ds, files),
                          variant_p=p)  # fmt: skip
    return stream, files


def test_an_epoch_walks_each_take_or_one_of_its_variants_by_the_seed(augmented_store):
    ds = load_training_data(FeatureStore(augmented_store), None)
    assert {f.id for f in ds.files("train")} == {"a1", "b1"} and ds.files("val")[0].id == "c1"
    assert all(len(v) == 3 for v in ds.variants.values()) and len(ds.variants) == 2
    never, files = _stream(augmented_store, 0.0)
    assert all(never.walked(e) == files for e in range(5))
    always, _ = _stream(augmented_store, 1.0)
    for e in range(5):
        walked = always.walked(e)
        assert all(w.key in {v.key for v in ds.variants[f.key]} for w, f in zip(walked, files))
    half, _ = _stream(augmented_store, 0.5)
    epochs = [[w.key for w in half.walked(e)] for e in range(12)]
    assert epochs == [[w.key for w in _stream(augmented_store, 0.5)[0].walked(e)] for e in range(12)]
    originals = sum(k == f.key for ks in epochs for k, f in zip(ks, files))
    assert 4 <= originals <= 20  # of 24, about half
    # The walked variant's frames are what the schedule runs over.
    e = next(e for e in range(12) if epochs[e][0] != files[0].key)
    batches = list(half.epoch(e))
    assert len(batches) == half.steps(e)
    # Every frame of every walked range is a target once: the variant's, not the take's.
    assert sum(int(b["valid"].sum()) for b in batches) == sum(w.frames for w in half.walked(e))
    assert sum(w.frames for w in half.walked(e)) != sum(f.frames for f in files)


def test_a_variant_of_a_take_cut_before_its_held_out_tail_stops_at_the_scaled_cut(augmented_store):
    ds = load_training_data(FeatureStore(augmented_store), None)
    train, tails = hold_out_tails(ds.files("train"), 0.2)
    ranges = variant_ranges(ds, train)
    for i, f in enumerate(train):
        whole = next(w for w in ds.files("train") if w.key == f.key).frames
        for v, r in zip(ds.variants[f.key], ranges[i]):
            assert r.key == v.key and r.start == 0
            assert abs(r.frames - f.frames * v.frames / whole) <= 1
            assert r.frames < v.frames  # the tail's counterpart is never a training target


@pytest.mark.slow
def test_fit_trains_on_variants_and_resumes_bit_identically(augmented_store, tmp_path):
    cfg = tiny(optim={"epochs": 3}, augment={"variant_p": 0.5})
    whole = fit(augmented_store, cfg=cfg, out=tmp_path / "whole")
    plain = fit(augmented_store, cfg=tiny(optim={"epochs": 3}), out=tmp_path / "plain")
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["model"]
    p = load_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")["model"]
    assert not all(torch.equal(a[k], p[k]) for k in a)
    run = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert run["train_config"]["augment"]["variant_p"] == 0.5 and run["train_variants"] == 6
    part = fit(augmented_store, cfg=cfg, out=tmp_path / "part", stop_after_steps=whole.step // 2 + 1)
    assert part.interrupted
    fit(augmented_store, cfg=cfg, out=tmp_path / "part", resume=True)
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert plain.step > 0 and np.isfinite(whole.best["value"])


def test_variant_p_is_hashed_only_when_used():
    assert "variant_p" not in json.dumps(TrainConfig().hashed_dict())
    on = TrainConfig.from_dict({"augment": {"variant_p": 0.5}})
    assert on.hash != TrainConfig().hash
