"""Real sweeps on the example store: Optuna studies in SQLite, every trial a fit run, in this
process and on a real Dask LocalCluster; pruning, resume after SIGKILL, the CPU budget."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import optuna
import pytest

from blendsync.train.core.config import TrainConfig
from blendsync.train.sweep.space import load_spec
from blendsync.train.sweep.study import SweepError, load_sweep, sweep
from blendsync.train.sweep.trial import open_storage
from tests.helpers import REPO

pytestmark = pytest.mark.slow


def _study(out):
    _, meta = load_sweep(out)
    return optuna.load_study(study_name=meta["study"], storage=open_storage(meta["storage"]))


def _results(out) -> dict:
    """{(params as sorted items): value} of the study's complete trials."""
    return {tuple(sorted(t.params.items())): t.value for t in _study(out).trials if t.value is not None}


@pytest.fixture(scope="module")
def local_sweep(example_store, tmp_path_factory):
    """3 trials drawn by a seeded random sampler, one after another in this process."""
    from tests.train.sweep.conftest import write_space

    d = tmp_path_factory.mktemp("sweep")
    spec = load_spec(write_space(d / "sweep.yaml", sampler="random"))
    res = sweep(spec, example_store, d / "out", trials=3, threads=1)
    return d / "out", res


def test_every_trial_is_a_fit_run_in_its_folder_and_the_best_config_runs_again(local_sweep):
    out, res = local_sweep
    assert (res.ended, res.complete, res.pruned, res.failed) == (3, 3, 0, 0)
    study = _study(out)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    for t in study.trials:
        folder = out / "trials" / f"{t.number:04d}"
        trial = json.loads((folder / "trial.json").read_text())
        config = json.loads((folder / "config.json").read_text())["train_config"]
        assert trial["state"] == "complete" and trial["value"] == pytest.approx(t.value)
        assert trial["settings"]["optim.lr"] == t.params["optim.lr"] == config["optim"]["lr"]
        assert config["loss"]["preset"] == t.params["loss.preset"] and config["seed"] == 0
        assert config["model"]["d_model"] == 16 and config["optim"]["max_steps"] == 4
        assert (folder / "checkpoints" / "best.pt").is_file()
        vals = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        vals = [r for r in vals if r["kind"] == "val"]
        assert [r["step"] for r in vals] == [2, 4]  # reported at every validation
        assert max(r["metrics"]["skill"] for r in vals) == pytest.approx(t.value)
        assert all(r["cpu_s"] > 0 and r["wall_s"] > 0 for r in vals)
        assert t.user_attrs["cpu_s"] >= vals[-1]["cpu_s"]
    best = json.loads((out / "best.json").read_text())
    assert best["number"] == study.best_trial.number and best["value"] == study.best_value
    again = TrainConfig.load(out / "best_config.yaml")
    best_cfg = json.loads((out / "trials" / f"{best['number']:04d}" / "config.json").read_text())["train_config"]
    assert again.to_dict() == best_cfg


def test_a_dask_cluster_gives_the_same_trials_as_this_process(local_sweep, example_store, tmp_path):
    """A cluster started apart (as --scheduler finds one) with two single-threaded worker
    processes, one torch thread per trial as the local run had: the same parameters and the
    same values, in whatever order the trials finished."""
    from distributed import LocalCluster

    from tests.train.sweep.conftest import write_space

    out, _ = local_sweep
    spec = load_spec(write_space(tmp_path / "sweep.yaml", sampler="random"))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        res = sweep(spec, example_store, tmp_path / "out", trials=3, scheduler=cluster.scheduler_address, threads=1)
    assert res.complete == 3
    assert _results(tmp_path / "out") == _results(out)


def test_a_trial_made_to_be_bad_is_pruned_at_its_first_validation(example_store, space_file, tmp_path):
    spec = load_spec(
        space_file(
            space={"optim.lr": {"low": 1e-4, "high": 2.0, "log": True}},
            pruner={"type": "median", "startup_trials": 1},
            enqueue=[{"optim.lr": 3e-3}, {"optim.lr": 2.0}],
        )
    )
    res = sweep(spec, example_store, tmp_path / "out", trials=2, threads=1)
    states = [o.state for o in res.outcomes]
    assert states == ["complete", "pruned"], res.outcomes
    assert res.outcomes[1].step == 2  # stopped at its first validation, of 4 steps
    trial = _study(tmp_path / "out").trials[1]
    assert trial.params == {"optim.lr": 2.0} and trial.intermediate_values.keys() == {2}
    assert trial.intermediate_values[2] < _study(tmp_path / "out").trials[0].intermediate_values[2]


def test_the_cpu_budget_starts_no_trial_once_spent(example_store, space_file, tmp_path):
    res = sweep(load_spec(space_file()), example_store, tmp_path / "out", trials=5, budget_cpu_s=0.5, threads=1)
    assert res.ended == 1 and res.budget_spent and res.cpu_s >= 0.5


def test_a_new_sweep_refuses_a_folder_that_holds_one_and_resume_a_different_search(
    local_sweep, example_store, space_file
):
    out, _ = local_sweep
    with pytest.raises(SweepError, match="already holds a sweep"):
        sweep(load_spec(space_file(sampler="random")), example_store, out, trials=3)
    with pytest.raises(SweepError, match="different sweep file"):
        sweep(load_spec(space_file(seed=5)), example_store, out, trials=3, resume=True)


def test_a_killed_sweep_resumes_without_losing_or_repeating_a_trial(example_store, space_file, tmp_path):
    out = tmp_path / "out"
    space = space_file(fit={**_fit(), "optim.max_steps": 12}, sampler="random")
    cmd = [sys.executable, "-m", "blendsync.train.cli", "-q", "sweep", "--store", str(example_store),
           "--space", str(space), "--out", str(out), "--trials", "3", "--threads", "1"]  # fmt: skip
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    # kill it inside trial 1: trial 0 has ended, trial 1 has saved a checkpoint
    while time.monotonic() < deadline and p.poll() is None:
        if (out / "trials" / "0000" / "trial.json").exists() and (out / "trials" / "0001" / "metrics.jsonl").exists():
            break
        time.sleep(0.05)
    assert p.poll() is None, "the sweep ended before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = _study(out).trials
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    first = (out / "trials" / "0000" / "trial.json").read_text()

    r = subprocess.run([*cmd[:cmd.index("--space")], "--out", str(out), "--trials", "3", "--threads", "1", "--resume"],
                       cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    after = _study(out).trials
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert after[1].user_attrs["interrupted"]
    assert after[2].params == before[1].params  # the trial that was running, run again
    assert after[2].user_attrs["requeued_from"] == 1
    assert after[3].params not in (after[0].params, after[2].params)  # the sampler draws on, not from the start
    assert after[0].value == before[0].value and (out / "trials" / "0000" / "trial.json").read_text() == first
    assert not (out / "trials" / "0001").exists()
    assert "3 trial(s) ended" in r.stdout


def test_a_second_sweep_process_on_one_folder_is_refused(local_sweep, example_store):
    import fcntl

    out, _ = local_sweep
    with open(out / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SweepError, match="another bstrain sweep is running on this folder"):
            sweep(None, example_store, out, trials=3, resume=True)


def test_a_trial_the_trainer_refuses_fails_alone_and_compare_lists_it(example_store, space_file, tmp_path):
    """Each choice is valid on its own; their combination (a width the heads do not divide)
    is refused when the trial starts."""
    from blendsync.train.sweep.compare import collect, table

    fit = {k: v for k, v in _fit().items() if k != "model.d_model"}
    spec = load_spec(
        space_file(
            fit=fit,
            space={"model.d_model": [16, 18], "model.heads": [2, 4]},
            enqueue=[{"model.d_model": 18, "model.heads": 4}],
        )
    )
    res = sweep(spec, example_store, tmp_path / "out", trials=1, threads=1)
    assert res.failed == 1 and res.outcomes[0].state == "fail"
    assert "model.d_model (18) must be divisible by heads (4)" in res.outcomes[0].error
    _, rows = table(collect([tmp_path / "out"]))
    assert [(r["run"], r["state"]) for r in rows] == [("out/0000", "fail")]


def _fit():
    from tests.train.sweep.conftest import TINY_FIT

    return dict(TINY_FIT)


@pytest.mark.parametrize(
    "url", ["sqlite:///:memory:", "sqlite://", "sqlite:///file::memory:?cache=shared", "sqlite:///x.db?mode=memory"]
)
def test_a_storage_that_does_not_persist_is_refused_before_anything_is_written(
    example_store, space_file, tmp_path, capsys, url
):
    from blendsync.train.cli import main

    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--store", str(example_store), "--space", str(space_file()), "--out", str(out),
              "--trials", "1", "--storage", url])  # fmt: skip
    err = capsys.readouterr().err
    assert e.value.code == 1 and "keeps the study in memory" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("kind", ["not a database", "no such folder"])
def test_a_storage_that_cannot_be_opened_is_one_line_naming_it(example_store, space_file, tmp_path, capsys, kind):
    from blendsync.train.cli import main

    db = tmp_path / "junk.db"
    db.write_text("this is no database\n" * 20)
    url = f"sqlite:///{db}" if kind == "not a database" else f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}"
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--store", str(example_store), "--space", str(space_file()), "--out", str(tmp_path / "s"),
              "--trials", "1", "--storage", url])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and "Traceback" not in err
    assert len(err.splitlines()) == 1 and url in err and "SQL" not in err and "sqlalche.me" not in err
    assert ("file is not a database" if kind == "not a database" else "unable to open database file") in err


def test_resume_names_a_broken_record_and_refuses_a_missing_study(local_sweep, example_store, tmp_path):
    import shutil

    out, _ = local_sweep
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sweep.json").write_text("{broken")
    with pytest.raises(SweepError, match=r"broken/sweep\.json: not a readable sweep record"):
        sweep(None, example_store, broken, trials=1, resume=True)
    lost = tmp_path / "lost"
    lost.mkdir()
    shutil.copy(out / "sweep.json", lost / "sweep.json")
    with pytest.raises(SweepError, match=r"lost/study\.db: the sweep's study is missing"):
        sweep(None, example_store, lost, trials=1, resume=True)
    assert not (lost / "study.db").exists()


def test_a_corrupt_study_costs_its_plots_with_one_line_saying_why(local_sweep, tmp_path, caplog):
    import shutil

    from blendsync.train.sweep.report import _sweep_plots

    out, _ = local_sweep
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "study.db").write_bytes(b"\x00garbage" * 512)
    assert _sweep_plots(copy, tmp_path / "plots", "s") == []
    (msg,) = [r.getMessage() for r in caplog.records if "no study plots" in r.getMessage()]
    assert "file is not a database" in msg and len(msg.splitlines()) == 1 and "SQL" not in msg
