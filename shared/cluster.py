"""Dask clusters for the jobs that scale out (featurize, sweeps): a Client on an existing
scheduler, or on a LocalCluster of single-threaded worker processes started here."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager

log = logging.getLogger(__name__)

# Worker processes of a LocalCluster start with one BLAS/OpenMP thread each: a machine's cores
# go to its workers, not to the threads of every worker at once.
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@contextmanager
def kept_environment():
    """os.environ as it was before the block, restored after it. distributed's nanny sets its
    workers' variables (one BLAS/OpenMP thread, a fixed PYTHONHASHSEED) in the environment of
    the process that starts them and leaves them there: without this, every process started
    later from this one (a server, a subprocess of a test) would run single-threaded, and a
    torch imported later here too."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k not in before]:
            del os.environ[key]
        for key, value in before.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None):
    """A distributed Client: on an existing scheduler, or on a LocalCluster of `workers`
    single-threaded processes (BLAS/torch threads at 1)."""
    import dask
    from distributed import Client, LocalCluster

    # distributed configures its own loggers at import; keep its INFO chatter out of ours.
    for name in (
        "distributed",
        "distributed.scheduler",
        "distributed.nanny",
        "distributed.worker",
        "distributed.core",
        "distributed.http.proxy",
    ):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))

    if scheduler:
        client = Client(scheduler, timeout="30s")
        log.info(
            "Dask cluster at %s: %d workers; dashboard %s",
            scheduler,
            len(client.scheduler_info().get("workers", {})),
            client.dashboard_link or "off",
        )
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or default_workers()
    # Restored once the workers are up, and again at the end (a nanny restarting a worker sets
    # them again).
    with dask.config.set({"distributed.nanny.pre-spawn-environ": dict(THREAD_ENV)}), kept_environment():
        with kept_environment():
            cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.WARNING,
            )
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            # Every result is in by now: a worker process the nanny has to kill on its way out
            # ("Worker process still alive after 4.0 seconds, killing") loses nothing.
            nanny = logging.getLogger("distributed.nanny")
            level = nanny.level
            nanny.setLevel(logging.ERROR)
            try:
                cluster.close()
            finally:
                nanny.setLevel(level)
