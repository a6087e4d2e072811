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
    """Train the trial's config; the best validation value (as best.pt keeps) is its value.
    Errors of the trial's own making (a config combination the trainer rejects, data it
    cannot use, a loss that goes non-finite) end it as failed, with the message."""
    import optuna
    import torch

    from blendsync.train.core.config import TrainConfig
    from blendsync.train.loop.trainer import fit
    from blendsync.train.sweep.space import PrunerSpec, overrides_for

    c0, w0 = time.process_time(), time.perf_counter()
    threads = torch.get_num_threads()
    if job.threads:
        torch.set_num_threads(job.threads)
    run_dir = Path(job.run_dir)
    pruner = PrunerSpec(**json.loads(job.pruner_json)).build()
    study = optuna.load_study(study_name=job.study, storage=open_storage(job.storage), pruner=pruner)
    trial = optuna.trial.Trial(study, job.trial_id)

    run = {"total_steps": None, "ending": False}

    def on_step(rec: dict) -> bool:
        run["total_steps"] = rec["total_steps"]
        run["ending"] = bool(job.trial_cpu_s) and time.process_time() - c0 >= job.trial_cpu_s
        return run["ending"]

    def on_validation(rec: dict) -> bool:
        """Report every validation; prune at any but the last (a trial that ran its whole
        schedule, or its whole CPU budget, is complete with its best value)."""
        value = rec["loss"] if job.metric == "loss" else rec["metrics"].get(job.metric)
        if value is None:
            return False
        trial.report(float(value), rec["step"])
        last = run["ending"] or (run["total_steps"] is not None and rec["step"] >= run["total_steps"])
        return not last and trial.should_prune()

    state, value, step, error = "fail", None, 0, None
    try:
        res = fit(
            job.store,
            cfg=TrainConfig.from_json(job.base_config_json),
            out=run_dir,
            manifest=job.manifest,
            overrides=overrides_for(job.settings, "sweep"),
            device=job.device,
            on_step=on_step,
            on_validation=on_validation,
        )
        step = res.step
        if res.stopped_by_hook:
            state = "pruned"
        elif res.best is None or res.best["value"] is None:
            error = "no validation value (no validation frames, or the metric is undefined on them)"
        else:
            state, value = "complete", float(res.best["value"])
    except Exception as e:  # noqa: BLE001 (config, data, non-finite loss, storage: the trial fails alone)
        error = f"{type(e).__name__}: {e}"
        log.warning("trial %d failed: %s", job.number, error)
    finally:
        torch.set_num_threads(threads)
    out = TrialOutcome(
        number=job.number,
        state=state,
        value=value,
        step=step,
        cpu_s=round(time.process_time() - c0, 3),
        wall_s=round(time.perf_counter() - w0, 3),
        run_dir=str(run_dir),
        error=error,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(run_dir / TRIAL_FILE, json.dumps({**out.to_dict(), "settings": job.settings}, indent=2))
    return out
