"""A LocalCluster started here leaves this process as it found it: distributed's nanny writes
its workers' settings (one BLAS/OpenMP thread, a fixed hash seed) into the environment of the
process that starts them, and every process started from it later (a server, a test's
subprocess) would otherwise run single-threaded and compute in another order."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from blendsync.shared.cluster import THREAD_ENV, dask_client, kept_environment


@pytest.mark.slow
def test_a_local_cluster_leaves_the_environment_as_it_was():
    before = dict(os.environ)
    with dask_client(1) as client:
        # Its workers do run with one thread each.
        assert client.submit(lambda: __import__("os").environ.get("OMP_NUM_THREADS")).result() == "1"
        assert dict(os.environ) == before  # restored as soon as the workers are up
    assert dict(os.environ) == before
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('OMP_NUM_THREADS'))"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert child.stdout.strip() == str(before.get("OMP_NUM_THREADS"))


def test_kept_environment_restores_changed_added_and_removed_variables(monkeypatch):
    monkeypatch.setenv("BLENDSYNC_TEST_KEPT", "a")
    monkeypatch.delenv("BLENDSYNC_TEST_ADDED", raising=False)
    before = dict(os.environ)
    with kept_environment():
        os.environ.update(THREAD_ENV)
        os.environ["BLENDSYNC_TEST_KEPT"] = "b"
        os.environ["BLENDSYNC_TEST_ADDED"] = "c"
        del os.environ["PATH"]
    assert dict(os.environ) == before
