"""bstrain's options: the fit options that set config keys (their help is the key's own
description, --set reaches any key), the choices taken from their registries, and a CLI that
answers --help without loading torch."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from blendsync.train.cli import cli, main
from blendsync.train.core.config import (
    LOSS_PRESETS,
    ConfigOverrides,
    TrainConfig,
    parse_setting,
    preset_names,
    setting_keys,
)
from blendsync.train.inference.export import FORMATS as EXPORT_FORMATS
from blendsync.train.inference.outputs import CURVE_FORMATS
from blendsync.train.loop.finetune import InitFrom, fine_tune_config
from tests.helpers import make_random_store, tiny


@pytest.mark.parametrize(
    "text,key,value",
    [
        ("optim.lr=3e-4", "optim.lr", 3e-4),
        ("optim.epochs=7", "optim.epochs", 7),
        ("optim.betas=[0.9, 0.99]", "optim.betas", [0.9, 0.99]),
        ("compile=true", "compile", True),
        ("loss.preset=notes", "loss.preset", "notes"),
        ("augment.emotion_dropout = 0", "augment.emotion_dropout", 0),
    ],
)
def test_set_reads_values_as_yaml_numbers_included(text, key, value):
    assert parse_setting(text) == (key, value)


def test_set_refuses_unknown_keys_with_a_suggestion_and_text_without_a_value():
    with pytest.raises(ValueError, match=r"unknown config key 'lr'; did you mean optim.lr\?"):
        parse_setting("lr=0.1")
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_setting("optim.lr")


def test_keys_over_a_preset_in_order_and_sizes_make_the_preset_custom():
    o = ConfigOverrides.from_settings(
        [("preset", "small", "--preset"), ("optim.epochs", 3, "--epochs"), ("model.d_model", 64, "--set model.d_model")]
    )
    cfg, why = o.resolve(TrainConfig(), "cpu")
    assert (cfg.preset, cfg.model.d_model, cfg.model.heads, cfg.optim.epochs) == ("custom", 64, 2, 3)
    assert "--set model.d_model" in why
    same, _ = ConfigOverrides.from_settings([("optim.lr", 0.01, "--set optim.lr")]).resolve(TrainConfig(), "cpu")
    assert same.preset == "small" and same.optim.lr == 0.01
    with pytest.raises(ValueError, match=r"optim.epochs given twice \(--epochs and --set optim.epochs\)"):
        ConfigOverrides.from_settings([("optim.epochs", 3, "--epochs"), ("optim.epochs", 4, "--set optim.epochs")])


def test_a_loss_preset_keeps_the_files_departures_and_the_sets_over_it():
    o = ConfigOverrides.from_settings(
        [("loss.preset", "notes", "--loss"), ("loss.amplitude", 0.3, "--set loss.amplitude")],
        written_loss={"consistency": 0.7},
    )
    cfg, _ = o.resolve(TrainConfig.from_dict({"loss": {"consistency": 0.7}}), "cpu")
    notes = LOSS_PRESETS["notes"]
    assert (cfg.loss.preset, cfg.loss.l1, cfg.loss.temporal) == ("notes", notes.l1, notes.temporal)
    assert cfg.loss.consistency == 0.7 and cfg.loss.amplitude == 0.3


def test_fine_tuning_refuses_a_set_that_changes_the_model(tmp_path):
    from blendsync.train.core.checkpoint import Checkpoint
    from blendsync.train.loop.trainer import fit

    fs, _ = make_random_store(tmp_path / "s.zarr", [300], channels=5, seed=0)
    fs.write_index("m", {"entries": [{"key": fs.item_keys()[0], "split": "train", "id": "a"}]})
    r = fit(fs.root, cfg=tiny(optim={"max_steps": 1}), out=tmp_path / "base")
    init = InitFrom(
        path=r.run_dir / "checkpoints/last.pt", checkpoint=Checkpoint.load(r.run_dir / "checkpoints/last.pt")
    )
    asked = ConfigOverrides.from_settings([("model.d_model", 64, "--set model.d_model")])
    with pytest.raises(ValueError, match=r"--set model.d_model would change it"):
        fine_tune_config(tiny(), init, asked)
    kept = fine_tune_config(tiny(), init, ConfigOverrides.from_settings([("optim.lr", 1e-4, "--set optim.lr")]))
    assert kept.model == init.checkpoint.config.model


def test_fit_options_are_described_by_the_keys_they_set():
    fit = cli.commands["fit"]
    keyed = {p.opts[0]: p.help for p in fit.params if p.help and " Sets " in p.help}
    assert set(keyed) == {
        "--preset", "--epochs", "--max-steps", "--batch-streams", "--stride", "--frames-per-window", "--loss",
        "--validate-every", "--patience", "--compile", "--seed",
    }  # fmt: skip
    keys = setting_keys()
    for flag, help_ in keyed.items():
        key = help_.split(" Sets ")[1].split(" ")[0]
        assert help_.startswith(keys[key].metadata["blendsync.doc"]), flag


def test_choices_come_from_their_registries():
    def choices(command: str, option: str) -> list[str]:
        param = next(p for p in cli.commands[command].params if option in p.opts)
        assert isinstance(param.type, click.Choice)
        return list(param.type.choices)

    assert choices("fit", "--preset") == list(preset_names())
    assert choices("fit", "--loss") == list(LOSS_PRESETS)
    assert choices("predict", "--format") == list(CURVE_FORMATS)
    assert choices("export", "--format") == list(EXPORT_FORMATS)


@pytest.mark.slow
def test_cli_set_reaches_the_runs_config_and_resume_refuses_it(tmp_path, capsys):
    fs, keys = make_random_store(tmp_path / "s.zarr", [300, 280], channels=5, seed=0)
    fs.write_index("m", {"entries": [{"key": k, "split": "train", "id": f"t{i}"} for i, k in enumerate(keys)]})
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(tiny().to_yaml())
    args = ["-q", "fit", "--store", str(fs.root), "--config", str(cfgp), "--out", str(tmp_path / "run"),
            "--no-progress", "--max-steps", "2", "--set", "loss.temporal=0.25", "--set", "optim.lr=3e-4"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["train_config"]
    assert (cfg["loss"]["temporal"], cfg["optim"]["lr"], cfg["optim"]["max_steps"]) == (0.25, 3e-4, 2)
    with pytest.raises(SystemExit) as e:
        main(["-q", "fit", "--store", str(fs.root), "--out", str(tmp_path / "run"), "--resume", "--set", "seed=3"])
    assert e.value.code == 1 and "--set seed would be ignored" in capsys.readouterr().err
    bad = CliRunner().invoke(cli, ["fit", "--store", str(fs.root), "--set", "optim.lrr=1"])
    assert bad.exit_code != 0 and "unknown config key 'optim.lrr'" in bad.output


def test_help_answers_without_loading_torch():
    code = "import sys; from blendsync.train.cli import cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
