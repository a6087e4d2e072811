"""bstrain sweep: an Optuna study over train config keys, each trial a real fit run.

The sweep (this process) draws every trial's parameters (study.ask) and records its end
(study.tell); the trials run here one at a time, or N at once on a Dask cluster (a
LocalCluster of --jobs processes, or the cluster at --scheduler) against the same storage
(SQLite in the sweep folder by default; any Optuna RDB URL). Layout of a sweep folder:

    sweep.json            the checked sweep file, store, manifest, storage and study name
    study.db              the study (default storage)
    trials/0000/ ...      one bstrain fit run folder per trial, with trial.json (its settings,
                          state, value, CPU and wall seconds); with folds: K run folders
                          trials/0000/fold0 ... (train.sweep.folds) beside trial.json
    best_config.yaml      the best trial's whole train config, for bstrain fit --config
    best.json             the best trial: number, value, parameters, folder

A killed sweep resumes (resume=True): finished trials are kept; a trial that was running is
marked failed and run again with the same parameters in a fresh folder.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from blendsync.shared.files import write_atomically
from blendsync.train.core.config import TrainConfig
from blendsync.train.sweep.space import SweepSpec
from blendsync.train.sweep.trial import TRIAL_FILE, TrialJob, TrialOutcome, open_storage, run_trial

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
STUDY_DB = "study.db"
LOCK_FILE = ".lock"
TRIALS_DIR = "trials"
INTERRUPTED = "interrupted"  # user attribute of a trial that did not end (why), run again
REQUEUED_FROM = "requeued_from"  # user attribute of that re-run: the number it repeats


class SweepError(ValueError):
    """A sweep that cannot start or resume; the message says why."""


@dataclass(kw_only=True)
class SweepResult:
    out: Path
    metric: str  # what the trials were judged by
    ended: int  # trials ended (complete, pruned or failed by their own error), this session and before
    complete: int
    pruned: int
    failed: int
    cpu_s: float  # CPU seconds of every ended trial
    best: dict | None  # {"number", "value", "params", "run_dir", "config"}
    budget_spent: bool = False
    outcomes: list[TrialOutcome] = field(default_factory=list)
    # Why the best config may not hold in a whole run (short_trials), one line each.
    warnings: list[str] = field(default_factory=list)


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
    threads: torch threads per trial (0: the machine's cores divided among the trials at
    once here; on a --scheduler cluster each worker's own thread count)."""
    import optuna

    out = Path(out)
    if storage:
        check_storage(storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with _sweep_lock(out, resume):
        spec, meta, study = _open_sweep(spec, out, store, manifest, base, storage, resume)
        if resume:
            _requeue_interrupted(study, out)
        base_cfg = TrainConfig.from_json(meta["base_config"])
        with _executor(scheduler, jobs) as pool:
            running: dict = {}
            outcomes: list[TrialOutcome] = []
            spent_out = False
            while True:
                ended, cpu = _ended(study)
                spent_out = bool(budget_cpu_s) and cpu >= budget_cpu_s
                while pool.free() and ended + len(running) < trials and not spent_out:
                    trial = study.ask()
                    for p in spec.space:
                        p.suggest(trial)
                    log.info("trial %d: %s", trial.number, _show(trial.params))
                    make = functools.partial(_job, spec, meta, trial, out, base_cfg, threads, device)
                    running[pool.submit(make)] = trial
                if not running:
                    break
                handle, outcome = pool.wait_one(list(running))
                trial = running.pop(handle)
                if isinstance(outcome, BaseException):  # its worker died under it: run it again
                    _requeue(study, trial, out, f"{type(outcome).__name__}: {outcome}")
                    continue
                _tell(study, trial, outcome)
                outcomes.append(outcome)
                if on_trial:
                    on_trial(outcome)
        return _result(study, spec, out, outcomes, spent_out)


@contextmanager
def _sweep_lock(out: Path, resume: bool):
    """One sweep process per folder: a second one (a --resume while the first still runs)
    would fail the first one's running trials."""
    import fcntl

    if not resume and (out / SWEEP_FILE).exists():
        raise SweepError(f"{out} already holds a sweep: continue it with --resume, or pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(f"{out}: another bstrain sweep is running on this folder") from None
        yield


def check_storage(url: str) -> None:
    """SweepError for a storage that does not outlive this process (an in-memory SQLite
    database): its trials would be lost, and the sweep folder could be neither reused nor
    resumed. Checked before anything is written."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise SweepError(f"--storage {url!r} is not a database URL ({e})") from None
    if parsed.drivername.split("+")[0] == "sqlite":
        db = parsed.database or ""
        if db in ("", ":memory:") or db.startswith("file::memory:") or parsed.query.get("mode") == "memory":
            raise SweepError(
                f"--storage {url!r} keeps the study in memory: it ends with this process and the sweep could not "
                "be resumed; give a file (sqlite:///PATH) or leave --storage out (study.db in the sweep folder)"
            )


def _storage_url(meta: dict, out: Path) -> str:
    """The study's storage: the default SQLite file is found in the sweep folder wherever
    the folder has moved."""
    return meta["storage"] or f"sqlite:///{(out / STUDY_DB).resolve()}"


def _store_id(store) -> str:
    """A local store by its absolute path; a URL as given."""
    return str(store) if "://" in str(store) else str(Path(store).resolve())


def _open_sweep(spec, out: Path, store, manifest, base, storage, resume) -> tuple[SweepSpec, dict, object]:
    """(the spec, the sweep's record, the study): a fresh sweep creates its study, then
    writes its record; a resumed one reads the record and loads the study it names."""
    import uuid

    import optuna

    path = out / SWEEP_FILE
    if resume:
        if not path.is_file():
            raise SweepError(f"{out} holds no sweep to resume ({SWEEP_FILE} not found)")
        meta, stored = _read_record(path)
        if meta.get("storage") is None and not (out / STUDY_DB).is_file():
            raise SweepError(f"{out / STUDY_DB}: the sweep's study is missing: nothing to resume (start a new sweep)")
        if spec is not None and spec.hash != stored.hash:
            raise SweepError(
                f"{out} was started with a different sweep file (search {stored.hash}, given {spec.hash}): resume "
                "without --space, or start a new sweep with --out"
            )
        if _store_id(store) != meta["store"]:
            raise SweepError(f"{out} sweeps the store {meta['store']}, not {store}")
        url = _storage_url(meta, out)
        try:
            held = len(optuna.load_study(study_name=meta["study"], storage=open_storage(url)).trials)
        except KeyError:
            raise SweepError(f"{out}: its study {meta['study']} is not in {url}") from None
        study = optuna.load_study(
            study_name=meta["study"],
            storage=open_storage(url),
            sampler=stored.sampler_object(held),
            pruner=stored.pruner.build(),
        )
        return stored, meta, study
    if spec is None:
        raise SweepError("a new sweep needs a sweep file (--space)")
    base = base or TrainConfig()
    folds = _fold_indexes(store, manifest, spec.folds)
    meta = {
        "spec": spec.to_dict(),
        "store": _store_id(store),
        "manifest": manifest,
        **({"folds": folds} if folds else {}),
        "storage": storage,  # None: study.db in the sweep folder
        "study": f"sweep-{spec.hash}-{uuid.uuid4().hex[:8]}",
        "base_config": base.to_json(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    study = optuna.create_study(
        study_name=meta["study"],
        storage=open_storage(_storage_url(meta, out)),
        sampler=spec.sampler_object(),
        pruner=spec.pruner.build(),
        direction=spec.direction,
    )
    for params in spec.enqueue:
        study.enqueue_trial(dict(params))
    write_atomically(path, json.dumps(meta, indent=2))
    return spec, meta, study


def _fold_indexes(store, manifest: str | None, folds: int) -> list[str]:
    """The fold manifest indexes the trials train on (written now), or [] without folds."""
    if not folds:
        return []
    from blendsync.shared.store import FeatureStore
    from blendsync.train.sweep.folds import FoldError, write_fold_indexes

    try:
        names = write_fold_indexes(FeatureStore(store), manifest, folds)
    except FoldError as e:
        raise SweepError(str(e)) from None
    log.info("each trial trains and scores %d times, on the fold indexes %s", folds, ", ".join(names))
    return names


def _requeue_interrupted(study, out: Path) -> None:
    """Trials a killed sweep left running: queued again with their parameters, then failed
    (marked interrupted); their folders removed so that the re-runs start clean."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        _requeue(study, t, out, "the sweep stopped while it ran")


def _requeue(study, t, out: Path, why: str) -> None:
    from optuna.trial import TrialState

    queued = {w.user_attrs.get(REQUEUED_FROM) for w in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    if t.number not in queued:  # a kill between the two steps below queues it once
        study.enqueue_trial(t.params, user_attrs={REQUEUED_FROM: t.number}, skip_if_exists=False)
    study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED, why)
    study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    d = trial_dir(out, t.number)
    if d.exists():
        shutil.rmtree(d)
    log.warning("trial %d did not end (%s): it runs again (%s)", t.number, why, _show(t.params))


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


def _job(
    spec: SweepSpec, meta: dict, trial, out: Path, base: TrainConfig, threads: int, device: str, share: int
) -> TrialJob:
    """The trial's job; threads (0: share, the threads its place to run offers)."""
    import dataclasses

    return TrialJob(
        storage=_storage_url(meta, out),
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
        threads=threads or share,
        device=device,
        folds=tuple(meta.get("folds") or ()),
        min_amplitude=spec.min_amplitude,
    )


def _tell(study, trial, outcome: TrialOutcome) -> None:
    from optuna.trial import TrialState

    for k in ("cpu_s", "wall_s", "step", "run_dir", "total_steps", "amplitude"):
        study._storage.set_trial_user_attr(trial._trial_id, k, getattr(outcome, k))
    if outcome.fold_values:
        study._storage.set_trial_user_attr(trial._trial_id, "fold_values", list(outcome.fold_values))
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


def _result(study, spec: SweepSpec, out: Path, outcomes, spent: bool) -> SweepResult:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    ended, cpu = _ended(study)
    count = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED)}
    failed = sum(t.state == TrialState.FAIL and not t.user_attrs.get(INTERRUPTED) for t in trials)
    best = None
    if count[TrialState.COMPLETE]:
        t = study.best_trial
        run_dir = trial_dir(out, t.number)
        first_run = run_dir / "fold0" if (run_dir / "fold0").is_dir() else run_dir
        config = json.loads((first_run / "config.json").read_text())["train_config"]
        best = {"number": t.number, "value": t.value, "params": t.params, "run_dir": str(run_dir), "config": config}
        header = (
            f"# The best trial of the sweep in {out}: trial {t.number}, validation {spec.metric} {t.value:.4f}\n"
            f"# searched: {_show(t.params)}\n# bstrain fit --config this-file --store ... runs it again in full.\n"
        )
        write_atomically(out / "best_config.yaml", header + yaml.safe_dump(config, sort_keys=False))
        write_atomically(out / "best.json", json.dumps({k: v for k, v in best.items() if k != "config"}, indent=2))
    return SweepResult(
        out=out,
        metric=spec.metric,
        ended=ended,
        complete=count[TrialState.COMPLETE],
        pruned=count[TrialState.PRUNED],
        failed=failed,
        cpu_s=cpu,
        best=best,
        budget_spent=spent,
        outcomes=outcomes,
        warnings=short_trials(study, spec),
    )


# Below this share of their own schedule, trials stopped by their CPU budget say too little
# about the whole run their config is for.
SHORT_TRIAL_SHARE = 0.25


def short_trials(study, spec: SweepSpec) -> list[str]:
    """A warning when the complete trials ended at their CPU budget (trial_cpu_s) after a
    median share of their schedule below SHORT_TRIAL_SHARE: a config that wins the first
    minutes of training (a high learning rate, a small window) often loses a whole run, which
    is what best_config.yaml is for."""
    import statistics

    from optuna.trial import TrialState

    shares = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        total, step = t.user_attrs.get("total_steps"), t.user_attrs.get("step")
        if total and step is not None:
            shares.append(step / (total * max(1, spec.folds)))
    if not spec.trial_cpu_s or not shares or statistics.median(shares) >= SHORT_TRIAL_SHARE:
        return []
    return [
        f"trials ended at their CPU budget (trial_cpu_s {spec.trial_cpu_s:g}) after a median "
        f"{100 * statistics.median(shares):.0f}% of the steps their config trains for: the best config of runs "
        f"that short may not be the best of a whole bstrain fit; raise trial_cpu_s (about "
        f"{spec.trial_cpu_s / statistics.median(shares):.0f} CPU-s a trial runs it whole), or set fit: max_steps "
        "to the length the config is meant for"
    ]


def _show(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _InProcess:
    """Trials one after another in this process (a handle is the finished outcome, told
    before the next trial is drawn)."""

    def __init__(self) -> None:
        self.untold = False

    def free(self) -> bool:
        return not self.untold

    def submit(self, make_job) -> _Done:
        self.untold = True
        return _Done(run_trial(make_job(max(1, _cores()))))

    def wait_one(self, handles: list) -> tuple:
        self.untold = False
        return handles[0], handles[0].outcome


@dataclass(eq=False)
class _Done:
    outcome: TrialOutcome


class _OnDask:
    """One trial per worker process at a time, pinned to it: a trial's CPU seconds and torch
    threads are then its own (process-wide counters), whatever the worker's thread count."""

    def __init__(self, client, threads_each: dict[str, int]):
        self.client = client
        self.threads_each = threads_each  # worker address -> torch threads for its trial
        self.idle = list(threads_each)
        self.where: dict = {}

    def free(self) -> bool:
        return bool(self.idle)

    def submit(self, make_job):
        addr = self.idle.pop(0)
        job = make_job(self.threads_each[addr])
        future = self.client.submit(
            run_trial, job, pure=False, workers=[addr], allow_other_workers=False, key=f"trial-{job.study}-{job.number}"
        )
        self.where[future] = addr
        return future

    def wait_one(self, handles: list) -> tuple:
        from distributed import wait

        future = next(iter(wait(handles, return_when="FIRST_COMPLETED").done))
        self.idle.append(self.where.pop(future))
        try:
            return future, future.result()
        except Exception as e:  # noqa: BLE001 (a lost worker: the trial is queued again)
            return future, e


class _executor:
    """In this process for one job; else a Dask pool: a LocalCluster of `jobs` processes
    (cores shared out as torch threads), or the workers of the cluster at `scheduler` (each
    worker's thread count as torch threads)."""

    def __init__(self, scheduler: str | None, jobs: int):
        self.scheduler, self.jobs = scheduler, jobs
        self._cm = None

    def __enter__(self):
        if not self.scheduler and self.jobs <= 1:
            return _InProcess()
        import dask
        import distributed  # noqa: F401 (its config defaults first: the override below is undone on exit)

        from blendsync.shared.cluster import dask_client

        # A worker that dies fails its trial here (the sweep queues it again) instead of
        # the scheduler re-running it into a folder that already holds part of a run.
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            self._cm = dask_client(self.jobs if not self.scheduler else None, self.scheduler)
            client = self._cm.__enter__()
        workers = client.scheduler_info().get("workers", {})
        if not workers:
            self.__exit__(None, None, None)
            raise SweepError(f"the Dask cluster at {self.scheduler} has no workers")
        share = max(1, _cores() // len(workers))
        return _OnDask(client, {a: (w.get("nthreads", 1) if self.scheduler else share) for a, w in workers.items()})

    def __exit__(self, *exc) -> None:
        if self._cm is not None:
            self._cm.__exit__(*exc)


def load_sweep(out: str | Path) -> tuple[SweepSpec, dict]:
    """A sweep folder's spec and record (for compare); the record's storage as a URL."""
    meta, spec = _read_record(Path(out) / SWEEP_FILE)
    return spec, {**meta, "storage": _storage_url(meta, Path(out))}


def _read_record(path: Path) -> tuple[dict, SweepSpec]:
    """A sweep.json and its spec; SweepError naming the file when it cannot be used."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return meta, SweepSpec.from_stored(meta["spec"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SweepError(f"{path}: not a readable sweep record ({type(e).__name__}: {e})") from None


def trial_folders(out: str | Path) -> Iterator[Path]:
    """The run folders of a sweep's trials, by number."""
    d = Path(out) / TRIALS_DIR
    if d.is_dir():
        yield from sorted(p for p in d.iterdir() if (p / "config.json").is_file() or (p / TRIAL_FILE).is_file())
