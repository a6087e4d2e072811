"""bstrain compare on real run folders and a real sweep: the table, its files and plots."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest

from blendsync.train.core.config import ConfigOverrides, TrainConfig
from blendsync.train.loop.trainer import fit
from blendsync.train.sweep.compare import CompareError, collect, differing_keys, table
from tests.helpers import REPO
from tests.train.sweep.conftest import TINY_FIT


def _run(store, out, **values):
    over = ConfigOverrides.from_settings([(k, v, k) for k, v in {**TINY_FIT, **values}.items()])
    fit(store, cfg=TrainConfig(), out=out, overrides=over)
    return out


@pytest.fixture(scope="module")
def two_runs(example_store, tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return _run(example_store, d / "a", **{"optim.lr": 1e-3}), _run(example_store, d / "b", **{"optim.lr": 3e-3})


def test_two_runs_list_exactly_the_keys_that_differ(two_runs):
    runs = collect(list(two_runs))
    assert differing_keys(runs) == ["optim.lr"]
    columns, rows = table(runs)
    assert columns[-1] == "optim.lr" and [r["optim.lr"] for r in rows] == [1e-3, 3e-3]
    for r, folder in zip(rows, two_runs):
        recs = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        vals = [x for x in recs if x["kind"] == "val"]
        best = max(vals, key=lambda x: x["metrics"]["skill"])
        assert r["skill"] == best["metrics"]["skill"] and r["mean_r"] == best["metrics"]["mean_r"]
        assert r["val_loss"] == best["loss"] and r["best_step"] == best["step"]
        assert r["steps"] == 4 and r["cpu_s"] == recs[-1]["cpu_s"] > 0 and r["wall_s"] > 0
    assert differing_keys(collect([two_runs[0], two_runs[0]])) == []


def test_a_sorted_table_puts_the_best_first(two_runs):
    _, rows = table(collect(list(two_runs)), sort="skill")
    assert rows[0]["skill"] >= rows[1]["skill"]


def test_a_folder_that_is_no_run_is_named(tmp_path):
    with pytest.raises(CompareError, match=f"{tmp_path}: not a run folder"):
        collect([tmp_path])


def test_the_cli_on_a_sweep_and_a_run_writes_table_csv_json_plots_and_one_page(
    two_runs, example_store, space_file, tmp_path
):
    space = space_file(sampler="random")
    cli = [sys.executable, "-m", "blendsync.train.cli", "-q"]
    r = subprocess.run([*cli, "sweep", "--store", str(example_store), "--space", str(space), "--out",
                        str(tmp_path / "sw"), "--trials", "2", "--jobs", "2"],
                       cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "2 trial(s) ended" in r.stdout and "best: trial" in r.stdout and "best_config.yaml" in r.stdout
    r = subprocess.run([*cli, "compare", str(tmp_path / "sw"), str(two_runs[0]), "--csv", str(tmp_path / "t.csv"),
                        "--json", str(tmp_path / "t.json"), "--plots", str(tmp_path / "plots"),
                        "--html", str(tmp_path / "report.html")],
                       cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["run", "state", "skill", "mean_r"] and len(lines) == 4
    assert lines[1].startswith("sw/0000") and "complete" in lines[1]
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [x["run"] for x in rows] == ["sw/0000", "sw/0001", str(two_runs[0])]
    doc = json.loads((tmp_path / "t.json").read_text())
    assert "optim.lr" in doc["differing_keys"] and "seed" not in doc["differing_keys"]
    assert all(len(x["curve"]) == 2 for x in doc["runs"])
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["skill_vs_cpu.png", "skill_vs_steps.png", "sw-history.png", "sw-importances.png"]
    page = (tmp_path / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched
    assert "sw/0001" in page and "optim.lr" in page


def _copy(run, dst):
    import shutil

    shutil.copytree(run, dst)
    return dst


@pytest.mark.parametrize(
    "damage,phrase",
    [
        (lambda r: (r / "metrics.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 50), "metrics.jsonl: unreadable"),
        (lambda r: (r / "config.json").write_bytes(b"\xff\xfe{"), "config.json: unreadable"),
        (lambda r: (r / "config.json").write_text("[1, 2, 3]"), "config.json: not a JSON object"),
        (lambda r: (r / "config.json").write_text('{"a":' * 100000 + "1" + "}" * 100000), "nested too deeply"),
    ],
)
def test_a_run_whose_files_cannot_be_read_is_named_and_the_others_are_listed(
    two_runs, tmp_path, capsys, damage, phrase
):
    from blendsync.train.cli import main

    bad = _copy(two_runs[1], tmp_path / "bad")
    damage(bad)
    with pytest.raises(SystemExit) as e:
        main(["compare", str(two_runs[0]), str(bad)])
    out = capsys.readouterr()
    assert e.value.code == 2 and str(two_runs[0]) in out.out and "Traceback" not in out.err
    (line,) = [x for x in out.err.splitlines() if x.startswith("skipped: ")]
    assert str(bad) in line and phrase in line


def test_lines_that_are_not_records_are_passed_over(two_runs, tmp_path):
    odd = _copy(two_runs[0], tmp_path / "odd")
    with open(odd / "metrics.jsonl", "a") as f:
        f.write('[1,2,3]\nnull\n"text"\n{"kind": "val", "step": "x", "loss": "low", "metrics": [1]}\n')
        f.write('{"kind": "val", "step": 99, "loss": "low", "metrics": {"skill": "high"}}\n')
        f.write("[" * 200000 + "\n")
    (row,) = table(collect([odd]))[1]
    (want,) = table(collect([two_runs[0]]))[1]
    assert {k: row[k] for k in ("skill", "best_step", "val_loss")} == {
        k: want[k] for k in ("skill", "best_step", "val_loss")
    }
    assert row["steps"] == 99


def test_a_broken_sweep_record_costs_its_plots_not_the_table(tmp_path, caplog):
    from blendsync.train.sweep.report import _sweep_plots

    (tmp_path / "sweep.json").write_text("{broken")
    assert _sweep_plots(tmp_path, tmp_path / "plots", "s") == []
    assert "no study plots: its sweep record cannot be read" in caplog.text


def test_a_run_given_twice_is_listed_once(two_runs):
    a, b = two_runs
    assert [r.name for r in collect([a, b, a, a / "."])] == [str(a), str(b)]
