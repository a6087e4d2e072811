"""bstrain fit --teacher: audio-only rows trained on with a teacher's curves, computed once and
kept in the store under the teacher's checksum."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny

from blendsync.shared.store import FeatureStore
from blendsync.train.core.checkpoint import load_checkpoint
from blendsync.train.core.data import DataError, load_training_data
from blendsync.train.loop.teacher import TeacherError, teacher_curves
from blendsync.train.loop.trainer import fit
from tests.helpers import REPO

EXAMPLE = REPO / "data" / "example"


@pytest.fixture
def own_store(mixed_store, tmp_path):
    """A copy of the mixed store for one test: teachers' curves are kept in the store, and a
    test counting what a teacher computes must not see another test's."""
    import shutil

    return shutil.copytree(mixed_store, tmp_path / "own.zarr")


def _audio_only(store):
    ds = load_training_data(FeatureStore(store), None)
    return ds, ds.unlabelled["train"]


def test_a_teacher_s_curves_are_its_predictions_computed_once_and_keyed_by_it(own_store, checkpoint, live_checkpoint):
    from blendsync.train.inference.predict import Predictor

    store = FeatureStore(own_store)
    ds, files = _audio_only(own_store)
    keys = [f.key for f in files]
    first = teacher_curves(store, keys, checkpoint, channels=ds.channels, fps=30.0)
    assert (first.computed, first.reused) == (2, 0)
    want = Predictor.load(checkpoint).animate(EXAMPLE / "ava_take2.wav")["curves"]
    got = first.targets[files[0].key]
    assert got.shape == (files[0].frames, len(ds.channels))
    np.testing.assert_allclose(got, want[: files[0].frames], atol=1e-5)
    again = teacher_curves(store, keys, checkpoint, channels=ds.channels, fps=30.0)
    assert (again.computed, again.reused) == (0, 2)
    assert all(np.array_equal(again.targets[k], first.targets[k]) for k in keys)
    # Another teacher, of other features (live): its own curves, from the audio files.
    other = teacher_curves(store, keys, live_checkpoint, channels=ds.channels, fps=30.0)
    assert other.computed == 2 and other.teacher_id != first.teacher_id
    live = Predictor.load(live_checkpoint).animate(EXAMPLE / "ava_take2.wav")["curves"]
    np.testing.assert_allclose(other.targets[files[0].key], live[: files[0].frames], atol=1e-5)
    assert not np.allclose(other.targets[files[0].key], got)


def test_a_teacher_of_other_channels_is_refused_in_one_line(mixed_store, checkpoint):
    ds, files = _audio_only(mixed_store)
    with pytest.raises(TeacherError) as e:
        teacher_curves(FeatureStore(mixed_store), [files[0].key], checkpoint, channels=ds.channels[:10], fps=30.0)
    msg = str(e.value)
    assert "\n" not in msg and "it predicts 52 channels, the store's takes have 10" in msg and str(checkpoint) in msg
    with pytest.raises(TeacherError, match="its frames are 30 a second, the store's 60"):
        teacher_curves(FeatureStore(mixed_store), [files[0].key], checkpoint, channels=ds.channels, fps=60.0)


@pytest.mark.slow
def test_fit_with_a_teacher_trains_on_the_audio_only_rows_and_resumes_bit_identically(own_store, checkpoint, tmp_path):
    cfg = tiny(optim={"epochs": 1})
    plain = fit(own_store, cfg=cfg, out=tmp_path / "plain")
    whole = fit(own_store, cfg=cfg, out=tmp_path / "whole", teacher=checkpoint)
    assert whole.step > plain.step  # more windows an epoch: the audio-only takes
    run = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert run["teacher"]["files"] == 2 and run["teacher"]["checkpoint"] == str(checkpoint.resolve())
    part = fit(own_store, cfg=cfg, out=tmp_path / "part", teacher=checkpoint, stop_after_steps=whole.step // 2)
    assert part.interrupted
    fit(own_store, cfg=cfg, out=tmp_path / "part", resume=True)  # the run's own teacher
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(DataError, match="was started with the teacher .*: resume it without --teacher"):
        fit(own_store, cfg=cfg, out=tmp_path / "part", resume=True, teacher=tmp_path / "other.pt")


def test_a_teacher_without_audio_only_rows_is_refused(example_store, checkpoint, tmp_path):
    with pytest.raises(DataError, match="has no audio-only training rows"):
        fit(example_store, cfg=tiny(), out=tmp_path / "run", teacher=checkpoint)
