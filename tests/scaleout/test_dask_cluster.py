"""bsfeat on a real Dask cluster started with the standard `dask scheduler` and `dask worker`
commands on 127.0.0.1: same store as the local cluster, and a worker killed mid-run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blendsync.featurize.extract import extract
from blendsync.featurize.inspect_store import verify_store
from blendsync.shared.config import FeatureConfig
from blendsync.shared.store import FeatureStore
from tests.helpers import assert_same_items, free_port, write_livelink, write_manifest

pytestmark = pytest.mark.slow  # real Dask scheduler and worker processes

REPO = Path(__file__).resolve().parents[2]
DASK = shutil.which("dask", path=str(Path(sys.executable).parent)) or shutil.which("dask")


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-threaded workers, each in its own process group."""
    if DASK is None:
        pytest.skip("the dask command is not installed")
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = open(tmp_path / "cluster.log", "w")
    sched = subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    workers = [
        subprocess.Popen(
            [DASK, "worker", addr, "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--name", f"w{i}"],
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
        for i in range(2)
    ]
    from distributed import Client

    deadline = time.time() + 60
    while True:
        try:
            with Client(addr, timeout="2s") as c:
                if len(c.scheduler_info()["workers"]) == 2:
                    break
        except OSError:
            pass
        assert time.time() < deadline, (tmp_path / "cluster.log").read_text()
        time.sleep(0.5)
    yield addr, workers
    for p in (*workers, sched):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
    log.close()


def test_external_cluster_store_equals_local_cluster_store(cluster, tmp_path):
    addr, _ = cluster
    cfg = FeatureConfig()
    remote = extract(REPO / "data_manifest.csv", tmp_path / "remote.zarr", cfg, scheduler=addr)
    local = extract(REPO / "data_manifest.csv", tmp_path / "local.zarr", cfg, workers=2)
    assert remote.ok and local.ok and remote.keys == local.keys
    a, b = FeatureStore(tmp_path / "remote.zarr"), FeatureStore(tmp_path / "local.zarr")
    assert_same_items(a, b, remote.keys)
    assert a.read_index("data_manifest")["entries"] == b.read_index("data_manifest")["entries"]


def test_external_cluster_writes_a_store_in_a_bucket(s3_bucket, cluster, tmp_path):
    """The store at an fsspec URL: workers started with FSSPEC_S3_ENDPOINT_URL and AWS_*
    in their environment (s3_bucket is set up before cluster, so they inherit it)."""
    addr, _ = cluster
    url = f"{s3_bucket}/features.zarr"
    remote = extract(REPO / "data_manifest.csv", url, FeatureConfig(), scheduler=addr)
    local = extract(REPO / "data_manifest.csv", tmp_path / "local.zarr", FeatureConfig(), executor="serial")
    assert remote.ok and remote.computed == 9 and remote.keys == local.keys
    a, b = FeatureStore(url), FeatureStore(tmp_path / "local.zarr")
    assert_same_items(a, b, remote.keys)
    report = verify_store(a)
    assert (report.items, report.problems) == (9, [])


def test_worker_killed_mid_run_the_run_completes_on_the_survivor(cluster, tmp_path, make_audio):
    addr, workers = cluster
    rows = []
    for i in range(8):
        make_audio(f"t{i}.wav", 30.0, seed=i)
        write_livelink(tmp_path / f"t{i}.csv", 30.0, seed=i)
        rows.append({"audio": f"t{i}.wav", "targets": f"t{i}.csv"})
    man = write_manifest(tmp_path / "m.csv", rows)
    store = tmp_path / "f.zarr"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blendsync.featurize.cli",
            "-q",
            "extract",
            str(man),
            "--store",
            str(store),
            "--scheduler",
            addr,
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    fs = FeatureStore(store)
    deadline = time.time() + 120
    while not (fs.items_dir.is_dir() and fs.item_keys()) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(workers[0].pid, signal.SIGKILL)  # the nanny and its worker, mid-run
    assert len(fs.item_keys()) < 8, "the run finished before a worker could be killed"
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    report = verify_store(fs)
    n, problems = report.items, report.problems
    assert n == 8 and not problems
