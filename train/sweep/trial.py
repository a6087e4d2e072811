"""One trial of a sweep, where it runs (this process, or a Dask worker): a real bstrain fit
in the trial's own folder, its validations reported to the study, pruned when the study's
pruner says so, stopped at the sweep's CPU budget per trial.

The study's sampler never runs here: the parameters were drawn by the sweep (study.ask) and
sit in the storage with the trial, so a trial gives the same result wherever it runs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from blendsync.shared.files import write_atomically

log = logging.getLogger(__name__)

TRIAL_FILE = "trial.json"


@dataclass(frozen=True, kw_only=True)
class TrialJob:
    """Everything a worker needs, picklable (paths and text, no live objects)."""

    storage: str
    study: str
    trial_id: int
    number: int
    run_dir: str
    store: str
    manifest: str | None
    base_config_json: str
    settings: dict
    metric: str
    pruner_json: str
    trial_cpu_s: float = 0.0
    threads: int = 0  # torch threads (0: leave as is)
    device: str = "auto"
    # The fold indexes to train and score on in turn (train.sweep.folds), in fold{i}/ of
    # run_dir, the CPU budget shared evenly; () = one run on `manifest` in run_dir.
    folds: tuple[str, ...] = ()
    min_amplitude: float = 0.0


@dataclass(frozen=True, kw_only=True)
class TrialOutcome:
    number: int
    state: str  # "complete" | "pruned" | "fail"
    value: float | None
    step: int
    cpu_s: float
    wall_s: float
    run_dir: str
    error: str | None = None
    # Steps of the trial's schedule (its first fold's), whether or not its budget let it end.
    total_steps: int | None = None
    # Validation amplitude ratio at the best value (the folds' mean) and each fold's value.
    amplitude: float | None = None
    fold_values: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def open_storage(url: str):
    """The study's storage: SQLite waits up to a minute for a lock (the sweep and its
    parallel trials write to one file), other RDB URLs as Optuna opens them."""
    import optuna

    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


def storage_problem(e: BaseException) -> str:
    """A storage error in one line: the driver's reason (sqlalchemy's text adds the SQL and a
    link on further lines)."""
    lines = str(getattr(e, "orig", None) or e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def run_trial(job: TrialJob) -> TrialOutcome:
    """Train the trial's config; the best validation value (as best.pt keeps) is its value,
    with folds the mean of its folds' (the pruner sees the first fold's validations). Errors
    of the trial's own making (a config combination the trainer rejects, data it cannot use,
    a loss that goes non-finite) end it as failed, with the message, and so does an amplitude
    ratio below the sweep's floor."""
    import optuna
    import torch

    from blendsync.train.sweep.space import PrunerSpec

    c0, w0 = time.process_time(), time.perf_counter()
    threads = torch.get_num_threads()
    if job.threads:
        torch.set_num_threads(job.threads)
    run_dir = Path(job.run_dir)
    pruner = PrunerSpec(**json.loads(job.pruner_json)).build()
    study = optuna.load_study(study_name=job.study, storage=open_storage(job.storage), pruner=pruner)
    trial = optuna.trial.Trial(study, job.trial_id)
    runs = [(run_dir / f"fold{i}", m) for i, m in enumerate(job.folds)] or [(run_dir, job.manifest)]
    state, value, error, done = "fail", None, None, _Runs()
    try:
        for i, (out, manifest) in enumerate(runs):
            budget = job.trial_cpu_s / len(runs)
            res = _fit_one(job, out, manifest, trial if i == 0 else None, budget, done)
            if res.stopped_by_hook:
                state = "pruned"
                break
            if res.best is None or res.best["value"] is None:
                error = "no validation value (no validation frames, or the metric is undefined on them)"
                break
            done.add(res)
        else:
            state, value, error = _judge(job, done)
    except Exception as e:  # noqa: BLE001 (config, data, non-finite loss, storage: the trial fails alone)
        error = f"{type(e).__name__}: {e}"
        log.warning("trial %d failed: %s", job.number, error)
    finally:
        torch.set_num_threads(threads)
    out = TrialOutcome(
        number=job.number,
        state=state,
        value=value,
        step=done.step,
        cpu_s=round(time.process_time() - c0, 3),
        wall_s=round(time.perf_counter() - w0, 3),
        run_dir=str(run_dir),
        error=error,
        total_steps=done.total_steps,
        amplitude=done.amplitude,
        fold_values=tuple(done.values) if job.folds else (),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(run_dir / TRIAL_FILE, json.dumps({**out.to_dict(), "settings": job.settings}, indent=2))
    return out


class _Runs:
    """What a trial's runs have given so far: each one's best value and amplitude ratio at it,
    the steps trained and the first run's schedule."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.amplitudes: list[float | None] = []
        self.step, self.total_steps = 0, None

    def add(self, res) -> None:
        self.values.append(float(res.best["value"]))
        at_best = [r for r in res.history if r.get("kind") == "val" and r["step"] == res.best["step"]]
        self.amplitudes.append(at_best[-1]["metrics"].get("amplitude_ratio") if at_best else None)

    @property
    def amplitude(self) -> float | None:
        known = [a for a in self.amplitudes if a is not None]
        return float(sum(known) / len(known)) if known and len(known) == len(self.amplitudes) else None


def _fit_one(job: TrialJob, out: Path, manifest: str | None, trial, budget: float, done: _Runs):
    """One bstrain fit of the trial's config, stopped at `budget` CPU-s of its own (0: none),
    its validations reported to `trial` (None: not reported, not pruned)."""
    from blendsync.train.core.config import TrainConfig
    from blendsync.train.loop.trainer import fit
    from blendsync.train.sweep.space import overrides_for

    c0 = time.process_time()
    run = {"total_steps": None, "ending": False}

    def on_step(rec: dict) -> bool:
        run["total_steps"] = rec["total_steps"]
        run["ending"] = bool(budget) and time.process_time() - c0 >= budget
        return run["ending"]

    def on_validation(rec: dict) -> bool:
        """Report every validation; prune at any but the last (a trial that ran its whole
        schedule, or its whole CPU budget, is complete with its best value)."""
        value = rec["loss"] if job.metric == "loss" else rec["metrics"].get(job.metric)
        if value is None or trial is None:
            return False
        trial.report(float(value), rec["step"])
        last = run["ending"] or (run["total_steps"] is not None and rec["step"] >= run["total_steps"])
        return not last and trial.should_prune()

    res = fit(
        job.store,
        cfg=TrainConfig.from_json(job.base_config_json),
        out=out,
        manifest=manifest,
        overrides=overrides_for(job.settings, "sweep"),
        device=job.device,
        on_step=on_step,
        on_validation=on_validation,
    )
    done.step += res.step
    if done.total_steps is None:
        done.total_steps = run["total_steps"]
    return res


def _judge(job: TrialJob, done: _Runs) -> tuple[str, float | None, str | None]:
    """(state, value, error) of a trial whose runs all ended with a value."""
    from blendsync.train.sweep.folds import fold_value

    value = fold_value(done.values)
    amp = done.amplitude
    if job.min_amplitude and (amp is None or amp < job.min_amplitude):
        shown = "unknown" if amp is None else f"{amp:.3f}"
        return (
            "fail",
            value,
            f"amplitude ratio {shown} is below the sweep's floor {job.min_amplitude:g} (min_amplitude)",
        )
    return "complete", value, None
