"""sweep.yaml: read whole, every problem one line naming its key, before any trial runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from blendsync.train.core.config import TrainConfig
from blendsync.train.sweep.space import SpaceError, SweepSpec, load_spec, parse_spec, resolve_config
from tests.helpers import REPO

GOOD = {
    "metric": "skill",
    "fit": {"epochs": 10},
    "space": {
        "optim.lr": {"low": 1.0e-4, "high": 3.0e-3, "log": True},
        "loss.preset": ["default", "mse", "notes"],
        "augment.emotion_dropout": {"low": 0.0, "high": 0.6},
        "stream.frames_per_window": [32, 64, 128],
        "model.d_model": {"low": 16, "high": 64, "step": 16},
    },
}


def test_the_documented_file_reads_with_fit_option_names_and_kinds():
    spec = parse_spec(GOOD, TrainConfig())
    assert dict(spec.fit) == {"optim.epochs": 10}
    kinds = {p.key: p.kind for p in spec.space}
    assert kinds == {
        "optim.lr": "float",
        "loss.preset": "choice",
        "augment.emotion_dropout": "float",
        "stream.frames_per_window": "choice",
        "model.d_model": "int",
    }
    assert spec.direction == "maximize" and spec.pruner.kind == "median" and spec.sampler == "tpe"
    assert parse_spec({**GOOD, "metric": "loss"}, TrainConfig()).direction == "minimize"


def test_stored_form_round_trips_and_hash_is_stable():
    spec = parse_spec(
        {
            **GOOD,
            "fit": {"epochs": 10, "validate_every": 5, "max_steps": 100},
            "enqueue": [{"optim.lr": 1e-3}],
            "pruner": {"type": "hyperband"},
        },
        TrainConfig(),
    )
    assert (spec.pruner.min_steps, spec.pruner.max_steps) == (5, 100)
    again = SweepSpec.from_stored(yaml.safe_load(spec.to_json()))
    assert again == spec and again.hash == spec.hash
    assert parse_spec({**GOOD, "seed": 1}, TrainConfig()).hash != spec.hash


def test_trial_settings_resolve_to_the_config_a_fit_would_run():
    spec = parse_spec(GOOD, TrainConfig())
    cfg = resolve_config(TrainConfig(), spec.trial_settings({"optim.lr": 2e-3, "loss.preset": "notes"}))
    assert cfg.optim.lr == 2e-3 and cfg.loss.preset == "notes" and cfg.loss.l1 == 0.1 and cfg.optim.epochs == 10
    assert cfg.validation.metric == "skill" and cfg.seed == 0


@pytest.mark.parametrize(
    "change, says",
    [
        ({"space": {"optim.lrr": {"low": 1e-4, "high": 1e-3}}}, "did you mean optim.lr"),
        ({"space": {"lr": [1e-3]}}, "space.lr: unknown config key; did you mean optim.lr?"),
        ({"fit": {"optim.epoch": 3}}, "fit.optim.epoch: unknown config key"),
        ({"spaces": {}}, "unknown key(s) ['spaces']"),
        ({"space": {"optim.lr": {"low": 1e-3, "high": 1e-3}}}, "space.optim.lr: empty range: low 0.001"),
        ({"space": {"loss.preset": []}}, "space.loss.preset: no choices"),
        ({"space": {"optim.lr": {"low": -1.0, "high": 1e-3}}}, "space.optim.lr: -1.0 is rejected by the"),
        ({"space": {"loss.preset": ["default", "huber"]}}, "space.loss.preset: 'huber' is rejected"),
        ({"space": {"stream.frames_per_window": [64, 512]}}, "space.stream.frames_per_window: 512 is rejected"),
        ({"space": {"optim.lr": {"low": 0.0, "high": 1e-3, "log": True}}}, "space.optim.lr: a log range needs low > 0"),
        ({"space": {"optim.lr": {"low": 1e-4}}}, "space.optim.lr: a range has low and high"),
        ({"fit": {"optim.lr": 1e-3}}, "space.optim.lr: also set under fit"),
        ({"fit": {"optim.weight_decay": -1.0}}, "fit: optim.weight_decay"),
        ({"metric": "accuracy"}, "metric: 'accuracy' is not a validation metric"),
        ({"pruner": "asha"}, "pruner.type: 'asha'"),
        ({"enqueue": [{"optim.lr": 1.0}]}, "enqueue[0].optim.lr: 1.0 is outside space.optim.lr"),
        ({"space": {}}, "space: expected a mapping of config keys"),
        ({"fit": {"validation.metric": "loss"}}, "fit.validation.metric: the sweep's metric sets it"),
        ({"direction": "minimize"}, "direction: skill is maximized"),
        ({"pruner": "hyperband"}, "pruner: hyperband counts its rungs in optimiser steps"),
        ({"fit": {"epochs": 3, "optim.epochs": 4}}, "fit.optim.epochs: optim.epochs is given twice"),
        ({"space": {"optim.lr": {"low": 1e-4, "high": 1e-3, "log": "yes"}}}, "log must be true or false"),
        ({"enqueue": [{"model.d_model": 20}]}, "enqueue[0].model.d_model: 20 is outside space.model.d_model"),
        ({"enqueue": [{"model.d_model": 32.5}]}, "enqueue[0].model.d_model: 32.5 is outside"),
        ({"seed": 10**35}, "seed: expected an integer >= 0 and <= 4294967295, got 1000000000000000000000"),
        ({"enqueue": [{"optim.lr": 1e-3}] * 20_000}, "enqueue: 20000 trials; at most 1000 are run first"),
    ],
)  # fmt: skip
def test_a_bad_file_is_one_line_naming_the_key(change, says):
    with pytest.raises(SpaceError) as e:
        parse_spec({**GOOD, **change}, TrainConfig())
    assert says in str(e.value) and "\n" not in str(e.value)


def test_the_cli_refuses_a_bad_file_with_one_line_and_exit_1(tmp_path, example_store):
    bad = tmp_path / "sweep.yaml"
    bad.write_text(yaml.safe_dump({**GOOD, "space": {"optim.lr": {"low": 0.1, "high": 0.01}}}))
    p = subprocess.run(
        [sys.executable, "-m", "blendsync.train.cli", "sweep", "--store", str(example_store), "--space", str(bad),
         "--out", str(tmp_path / "sw")],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "space.optim.lr: empty range" in lines[0], p.stderr
    assert not (tmp_path / "sw").exists()  # nothing started


def test_unreadable_and_non_yaml_files_name_the_file(tmp_path):
    with pytest.raises(SpaceError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "x.yaml").write_text("space: [unclosed")
    with pytest.raises(SpaceError, match=r"x\.yaml: not YAML"):
        load_spec(tmp_path / "x.yaml")
    (tmp_path / "deep.yaml").write_text("x: " + "[" * 5000 + "]" * 5000)
    with pytest.raises(SpaceError, match=r"deep\.yaml: nested too deeply"):
        load_spec(tmp_path / "deep.yaml")


def test_a_key_written_twice_and_a_file_that_is_not_text_are_refused_with_the_file(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("metric: skill\nspace:\n  optim.lr: [0.001]\n  optim.lr: [0.002]\n")
    with pytest.raises(SpaceError, match=r"twice\.yaml: not YAML: .*key 'optim.lr' written twice \(line 4\)"):
        load_spec(twice)
    binary = tmp_path / "sweep.yaml"
    binary.write_bytes(b"metric: skill\n\xff\xfe\x00")
    with pytest.raises(SpaceError, match=r"sweep\.yaml: not a UTF-8 text file"):
        load_spec(binary)
