"""Sweeps scored across folds of the takes (folds: K), with an amplitude floor, and the
warning for trials far shorter than the run their config is for."""

from __future__ import annotations

import json
import shutil

import pytest

from blendsync.shared.store import FeatureStore
from blendsync.train.core.data import load_training_data
from blendsync.train.sweep.compare import collect
from blendsync.train.sweep.folds import fold_name, write_fold_indexes
from blendsync.train.sweep.space import SpaceError, load_spec
from blendsync.train.sweep.study import SweepError, sweep
from tests.train.sweep.conftest import TINY_FIT


@pytest.fixture
def own_store(example_store, tmp_path):
    """A copy of the example store: fold indexes are written into the store."""
    return shutil.copytree(example_store, tmp_path / "own.zarr")


def test_folds_deal_the_captured_takes_into_validation_groups(own_store):
    store = FeatureStore(own_store)
    names = write_fold_indexes(store, "data_manifest", 3)
    assert names == [fold_name("data_manifest", i, 3) for i in range(3)] == [
        "data_manifest.fold1of3", "data_manifest.fold2of3", "data_manifest.fold3of3"]  # fmt: skip
    every = {f.key for f in load_training_data(store, "data_manifest").files("train")}
    every |= {f.key for f in load_training_data(store, "data_manifest").files("val")}
    held = []
    for name in names:
        ds = load_training_data(store, name)
        val, train = {f.key for f in ds.files("val")}, {f.key for f in ds.files("train")}
        assert len(val) == 3 and not val & train and val | train == every
        held.append(val)
    assert set().union(*held) == every  # every take is held out once
    before = store.read_index(names[0])
    assert write_fold_indexes(store, "data_manifest", 3) == names and store.read_index(names[0]) == before
    with pytest.raises(ValueError, match="10 folds need at least 10 captured takes .* has 9"):
        write_fold_indexes(store, "data_manifest", 10)


def test_a_trial_s_value_is_the_mean_of_its_folds_best_values(own_store, space_file, tmp_path):
    spec = load_spec(space_file(folds=3, space={"optim.lr": {"low": 1e-3, "high": 3e-3, "log": True}}))
    res = sweep(spec, own_store, tmp_path / "out", trials=2, threads=1, manifest="data_manifest")
    assert res.complete == 2, res.outcomes
    for o in res.outcomes:
        bests = []
        for i in range(3):
            run = tmp_path / "out" / "trials" / f"{o.number:04d}" / f"fold{i}"
            assert json.loads((run / "config.json").read_text())["manifest"] == f"data_manifest.fold{i + 1}of3"
            vals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            bests.append(max(r["metrics"]["skill"] for r in vals if r["kind"] == "val"))
        assert o.fold_values == pytest.approx(bests)
        assert o.value == pytest.approx(sum(bests) / 3)
        assert o.step == 3 * TINY_FIT["optim.max_steps"] and o.amplitude is not None
    assert (tmp_path / "out" / "best_config.yaml").is_file()
    # bstrain compare lists each trial once, with its folds' mean.
    runs = collect([tmp_path / "out"])
    assert [r.name for r in runs] == ["out/0000", "out/0001"]
    for r, o in zip(runs, res.outcomes):
        assert r.figures["skill"] == pytest.approx(o.value) and r.figures["steps"] == o.step
        assert r.config["optim"]["lr"] == pytest.approx(o_lr(tmp_path, o.number))


def o_lr(out, number: int) -> float:
    return json.loads((out / "out" / "trials" / f"{number:04d}" / "trial.json").read_text())["settings"]["optim.lr"]


def test_a_trial_below_the_amplitude_floor_fails_saying_so(own_store, space_file, tmp_path):
    spec = load_spec(space_file(min_amplitude=50))
    res = sweep(spec, own_store, tmp_path / "out", trials=1, threads=1)
    (o,) = res.outcomes
    assert o.state == "fail" and res.best is None
    assert "below the sweep's floor 50 (min_amplitude)" in o.error and o.amplitude is not None


def test_trials_cut_short_by_their_budget_are_warned_about(own_store, space_file, tmp_path):
    fit = {**TINY_FIT, "optim.max_steps": 400, "validation.every_steps": 1}
    short = sweep(load_spec(space_file(fit=fit, trial_cpu_s=0.01)), own_store, tmp_path / "a", trials=1, threads=1)
    assert short.complete == 1 and len(short.warnings) == 1
    assert "trial_cpu_s 0.01" in short.warnings[0] and "of the steps their config trains for" in short.warnings[0]
    whole = sweep(load_spec(space_file()), own_store, tmp_path / "b", trials=1, threads=1)
    assert whole.complete == 1 and whole.warnings == []


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"folds": 1}, "folds: 1 fold is the manifest's own split"),
        ({"folds": "all"}, "folds: expected an integer"),
        ({"folds": 51}, "folds: expected an integer >= 0 and <= 50"),
        ({"min_amplitude": -1}, "min_amplitude: expected a finite number >= 0"),
    ],
)
def test_bad_fold_settings_are_one_line(space_file, over, says):
    with pytest.raises(SpaceError, match=says):
        load_spec(space_file(**over))


def test_more_folds_than_takes_is_refused_before_any_trial(own_store, space_file, tmp_path):
    with pytest.raises(SweepError, match="20 folds need at least 20 captured takes"):
        sweep(load_spec(space_file(folds=20)), own_store, tmp_path / "out", trials=1, manifest="data_manifest")
    assert not (tmp_path / "out" / "trials").exists()


def test_a_sweep_file_without_folds_keeps_its_hash(space_file):
    plain = load_spec(space_file())
    assert "folds" not in plain.to_dict() and "min_amplitude" not in plain.to_dict()
    assert load_spec(space_file(folds=3)).hash != plain.hash
