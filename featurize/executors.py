"""Executors run the same per-file task (featurize.task.run_task) serially or on Dask.

Each yields TaskResults as files finish, so the caller can show progress and keep going
past failures.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from blendsync.featurize.task import FileTask, TaskResult, run_task
from blendsync.shared.cluster import dask_client

log = logging.getLogger(__name__)

# A worker that dies mid-task (OOM, SIGKILL) gets its task re-run elsewhere this often.
TASK_RETRIES = 2


def run_serial(store_root: str, cfg_json: str, tasks: Iterable[FileTask], force: bool = False) -> Iterator[TaskResult]:
    """Run the tasks in this process. Ctrl-C stops after the current file (KeyboardInterrupt
    once it is stored): openSMILE calls back into Python while it runs and swallows an
    exception raised there, so the signal only sets a flag; a second Ctrl-C raises at once."""
    with _stop_after_file() as stop:
        for t in tasks:
            yield run_task(store_root, cfg_json, t, force)
            if stop.requested:
                raise KeyboardInterrupt


class _StopFlag:
    requested = False


@contextmanager
def _stop_after_file():
    import signal
    import threading

    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signals go to the main thread only
        return

    def on_sigint(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        log.warning("interrupted: stopping after the current file (Ctrl-C again to stop now)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class SerialExecutor:
    """Every task in this process, one after another."""

    name = "serial"
    started_cluster = False

    def run(self, store_root: str, cfg_json: str, tasks: list[FileTask], force: bool = False) -> Iterator[TaskResult]:
        yield from run_serial(store_root, cfg_json, tasks, force)


class DaskExecutor:
    """One task per file on a LocalCluster of `workers` processes, or on the cluster at
    `scheduler`; the cluster lives for one run()."""

    name = "dask"

    def __init__(self, workers: int | None = None, scheduler: str | None = None):
        self.workers, self.scheduler = workers, scheduler
        self.started_cluster = False

    def run(self, store_root: str, cfg_json: str, tasks: list[FileTask], force: bool = False) -> Iterator[TaskResult]:
        with dask_client(self.workers, self.scheduler) as client:
            self.started_cluster = True
            yield from run_dask(client, store_root, cfg_json, tasks, force)


def run_dask(
    client, store_root: str, cfg_json: str, tasks: list[FileTask], force: bool = False
) -> Iterator[TaskResult]:
    """Submit one task per file (largest first, to finish sooner) and yield as they finish.

    A task whose worker keeps dying ends as a failed result for that file only.
    """
    from distributed import as_completed

    order = sorted(tasks, key=lambda t: -t.audio_bytes)
    futures = {}
    for t in order:
        f = client.submit(
            run_task,
            store_root,
            cfg_json,
            t,
            force,
            key=f"bsfeat-{t.key}-{t.row}",
            pure=False,
            retries=TASK_RETRIES,
        )
        futures[f] = t
    for f in as_completed(futures):
        t = futures[f]
        try:
            yield f.result()
        except Exception as e:  # KilledWorker and friends: the file, not the run, fails
            yield TaskResult(
                key=t.key, row=t.row, status="failed", error=f"{t.audio}: task lost ({type(e).__name__}: {e})"
            )
        finally:
            f.release()
