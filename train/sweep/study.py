"""bstrain sweep: an Optuna study over train config keys, each trial a real fit run.

The sweep (this process) draws every trial's parameters (study.ask) and records its end
(study.tell); the trials run here one at a time, or N at once on a Dask cluster (a
LocalCluster of --jobs processes, or the cluster at --scheduler) against the same storage
(SQLite in the sweep folder by default; any Optuna RDB URL). Layout of a sweep folder:

    sweep.json            the checked sweep file, store, manifest, storage and study name
    study.db              the study (default storage)
    trials/0000/ ...      one bstrain fit run folder per trial, with trial.json (its settings,
                          state, value, CPU and wall seconds)
    best_config.yaml      the best trial's whole train config, for bstrain fit --config
    best.json             the best trial: number, value, parameters, folder

A killed sweep resumes (resume=True): finished trials are kept; a trial that was running is
marked failed and run again with the same parameters in a fresh folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from blendsync.shared.files import write_atomically
from blendsync.train.core.config import TrainConfig
from blendsync.train.sweep.space import SweepSpec
from blendsync.train.sweep.trial import TrialJob, TrialOutcome, open_storage, run_trial

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
TRIALS_DIR = "trials"
INTERRUPTED = "interrupted"  # user attribute of a trial a killed sweep left running


class SweepError(ValueError):
    """A sweep that cannot start or resume; the message says why."""


@dataclass(kw_only=True)
class SweepResult:
    out: Path
    ended: int  # trials ended (complete, pruned or failed by their own error), this session and before
    complete: int
    pruned: int
    failed: int
    cpu_s: float  # CPU seconds of every ended trial
    best: dict | None  # {"number", "value", "params", "run_dir", "config"}
    budget_spent: bool = False
    outcomes: list[TrialOutcome] = field(default_factory=list)


def trial_dir(out: Path, number: int) -> Path:
    return out / TRIALS_DIR / f"{number:04d}"


def sweep(
    spec: SweepSpec | None,
    store: str | Path,
    out: str | Path,
    *,
    trials: int,
    manifest: str | None = None,
    base: TrainConfig | None = None,
    storage: str | None = None,
    scheduler: str | None = None,
    jobs: int = 1,
    threads: int = 0,
    budget_cpu_s: float = 0.0,
    resume: bool = False,
    device: str = "auto",
    on_trial: Callable[[TrialOutcome], None] | None = None,
) -> SweepResult:
    """Run trials until `trials` have ended in the study (or the CPU budget of ended trials
    is spent: no trial starts after that). spec is None on resume (the stored one is used).
    threads: torch threads per trial (0: the machine's cores divided among the parallel
    trials)."""
    import optuna

    out = Path(out)
    spec, meta = _open_sweep(spec, out, store, manifest, base, storage, resume)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=meta["study"],
        storage=open_storage(meta["storage"]),
        sampler=spec.sampler_object(),
        pruner=spec.pruner.build(),
        direction=spec.direction,
        load_if_exists=True,
    )
    if resume:
        _requeue_interrupted(study, out)
    elif spec.enqueue and not study.trials:
        for params in spec.enqueue:
            study.enqueue_trial(dict(params))
    base_cfg = TrainConfig.from_json(meta["base_config"])
    parallel = max(1, jobs)
    with _executor(scheduler, jobs) as (submit, wait_one, slots):
        parallel = slots or parallel
        per_trial = threads or max(1, _cores() // parallel)
        running: dict = {}
        outcomes: list[TrialOutcome] = []
        spent_out = False
        while True:
            ended, cpu = _ended(study)
            spent_out = bool(budget_cpu_s) and cpu >= budget_cpu_s
            while len(running) < parallel and ended + len(running) < trials and not spent_out:
                trial = study.ask()
                for p in spec.space:
                    p.suggest(trial)
                job = _job(spec, meta, trial, out, base_cfg, per_trial, device)
                log.info("trial %d: %s", trial.number, _show(trial.params))
                running[submit(job)] = trial
            if not running:
                break
            handle, outcome = wait_one(list(running))
            trial = running.pop(handle)
            if isinstance(outcome, BaseException):  # the worker died under it, or could not start it
                outcome = TrialOutcome(
                    number=trial.number, state="fail", value=None, step=0, cpu_s=0.0, wall_s=0.0,
                    run_dir=str(trial_dir(out, trial.number)), error=f"{type(outcome).__name__}: {outcome}",
                )  # fmt: skip
            _tell(study, trial, outcome)
            outcomes.append(outcome)
            if on_trial:
                on_trial(outcome)
    return _result(study, spec, out, outcomes, spent_out, base_cfg)


def _open_sweep(spec, out: Path, store, manifest, base, storage, resume) -> tuple[SweepSpec, dict]:
    """(the spec, the sweep's record): written on a fresh sweep, read and checked on resume."""
    path = out / SWEEP_FILE
    if resume:
        if not path.is_file():
            raise SweepError(f"{out} holds no sweep to resume ({SWEEP_FILE} not found)")
        meta = json.loads(path.read_text())
        stored = SweepSpec.from_stored(meta["spec"])
        if spec is not None and spec.hash != stored.hash:
            raise SweepError(
                f"{out} was started with a different sweep file (search {stored.hash}, given {spec.hash}): resume "
                "without --space, or start a new sweep with --out"
            )
        if str(Path(store).resolve()) != meta["store"]:
            raise SweepError(f"{out} sweeps the store {meta['store']}, not {store}")
        return stored, meta
    if spec is None:
        raise SweepError("a new sweep needs a sweep file (--space)")
    if path.exists():
        raise SweepError(f"{out} already holds a sweep: continue it with --resume, or pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    base = base or TrainConfig()
    meta = {
        "spec": spec.to_dict(),
        "store": str(Path(store).resolve()),
        "manifest": manifest,
        "storage": storage or f"sqlite:///{(out / 'study.db').resolve()}",
        "study": f"sweep-{spec.hash}",
        "base_config": base.to_json(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_atomically(path, json.dumps(meta, indent=2))
    return spec, meta


def _requeue_interrupted(study, out: Path) -> None:
    """Trials a killed sweep left running or waiting: failed (marked interrupted) and queued
    again with their parameters; their folders move aside so that the re-run starts clean."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
        d = trial_dir(out, t.number)
        if d.exists():
            shutil.rmtree(d)
        log.warning("trial %d was running when the sweep stopped: it runs again (%s)", t.number, _show(t.params))


def _ended(study) -> tuple[int, float]:
    """(trials ended other than by a kill, their CPU seconds)."""
    from optuna.trial import TrialState

    n, cpu = 0, 0.0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED)
        ):
            n += 1
            cpu += float(t.user_attrs.get("cpu_s", 0.0))
    return n, cpu


def _job(spec: SweepSpec, meta: dict, trial, out: Path, base: TrainConfig, threads: int, device: str) -> TrialJob:
    import dataclasses

    return TrialJob(
        storage=meta["storage"],
        study=meta["study"],
        trial_id=trial._trial_id,
        number=trial.number,
        run_dir=str(trial_dir(out, trial.number).resolve()),
        store=meta["store"],
        manifest=meta["manifest"],
        base_config_json=base.to_json(),
        settings=spec.trial_settings(trial.params),
        metric=spec.metric,
        pruner_json=json.dumps(dataclasses.asdict(spec.pruner)),
        trial_cpu_s=spec.trial_cpu_s,
        threads=threads,
        device=device,
    )


def _tell(study, trial, outcome: TrialOutcome) -> None:
    from optuna.trial import TrialState

    for k in ("cpu_s", "wall_s", "step", "run_dir"):
        study._storage.set_trial_user_attr(trial._trial_id, k, getattr(outcome, k))
    if outcome.error:
        study._storage.set_trial_user_attr(trial._trial_id, "error", outcome.error)
    if outcome.state == "complete":
        study.tell(trial, outcome.value)
    else:
        study.tell(trial, state=TrialState.PRUNED if outcome.state == "pruned" else TrialState.FAIL)
    value = "" if outcome.value is None else f" {outcome.value:.4f}"
    log.info(
        "trial %d %s%s after %d steps, %.1f CPU-s%s",
        outcome.number,
        outcome.state,
        value,
        outcome.step,
        outcome.cpu_s,
        f": {outcome.error}" if outcome.error else "",
    )


def _result(study, spec: SweepSpec, out: Path, outcomes, spent: bool, base: TrainConfig) -> SweepResult:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    ended, cpu = _ended(study)
    count = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED)}
    failed = sum(t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED) for t in trials)
    best = None
    if count[TrialState.COMPLETE]:
        t = study.best_trial
        run_dir = trial_dir(out, t.number)
        config = json.loads((run_dir / "config.json").read_text())["train_config"]
        best = {"number": t.number, "value": t.value, "params": t.params, "run_dir": str(run_dir), "config": config}
        header = (
            f"# The best trial of the sweep in {out}: trial {t.number}, validation {spec.metric} {t.value:.4f}\n"
            f"# searched: {_show(t.params)}\n# bstrain fit --config this-file --store ... runs it again in full.\n"
        )
        write_atomically(out / "best_config.yaml", header + yaml.safe_dump(config, sort_keys=False))
        write_atomically(out / "best.json", json.dumps({k: v for k, v in best.items() if k != "config"}, indent=2))
    return SweepResult(
        out=out,
        ended=ended,
        complete=count[TrialState.COMPLETE],
        pruned=count[TrialState.PRUNED],
        failed=failed,
        cpu_s=cpu,
        best=best,
        budget_spent=spent,
        outcomes=outcomes,
    )


def _show(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _InProcess:
    """Trials one after another in this process (a handle is the finished outcome)."""

    def submit(self, job: TrialJob):
        return _Done(run_trial(job))

    @staticmethod
    def wait_one(handles: list) -> tuple:
        return handles[0], handles[0].outcome


@dataclass(eq=False)
class _Done:
    outcome: TrialOutcome


class _OnDask:
    def __init__(self, client):
        self.client = client

    def submit(self, job: TrialJob):
        # pure=False: two trials never share a result; retries=0: a trial a worker loses is
        # failed, not silently re-run on another (a resume re-runs it).
        return self.client.submit(run_trial, job, pure=False, retries=0, key=f"trial-{job.study}-{job.number}")

    @staticmethod
    def wait_one(handles: list) -> tuple:
        from distributed import wait

        done = wait(handles, return_when="FIRST_COMPLETED").done
        future = next(iter(done))
        try:
            return future, future.result()
        except Exception as e:  # noqa: BLE001 (a lost worker: the trial fails, the sweep goes on)
            return future, e


class _executor:
    """(submit, wait_one, parallel slots or 0): in process for one job, else on Dask."""

    def __init__(self, scheduler: str | None, jobs: int):
        self.scheduler, self.jobs = scheduler, jobs
        self._cm = None

    def __enter__(self) -> tuple:
        if not self.scheduler and self.jobs <= 1:
            ex = _InProcess()
            return ex.submit, ex.wait_one, 1
        from blendsync.shared.cluster import dask_client

        self._cm = dask_client(self.jobs if not self.scheduler else None, self.scheduler)
        client = self._cm.__enter__()
        slots = sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values())
        ex = _OnDask(client)
        return ex.submit, ex.wait_one, (self.jobs if not self.scheduler else max(1, slots))

    def __exit__(self, *exc) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)


def load_sweep(out: str | Path) -> tuple[SweepSpec, dict]:
    """A sweep folder's spec and record (for compare)."""
    path = Path(out) / SWEEP_FILE
    meta = json.loads(path.read_text())
    return SweepSpec.from_stored(meta["spec"]), meta


def trial_folders(out: str | Path) -> Iterator[Path]:
    """The run folders of a sweep's trials, by number."""
    d = Path(out) / TRIALS_DIR
    if d.is_dir():
        yield from sorted(p for p in d.iterdir() if (p / "config.json").is_file())
