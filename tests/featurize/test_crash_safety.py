"""A run killed with SIGKILL part-way resumes; two runs on one store at once stay consistent.
Real processes: the bsfeat CLI with its Dask LocalCluster, killed as a process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from blendsync.featurize.inspect_store import verify_store
from blendsync.shared.store import FeatureStore
from tests.helpers import write_livelink, write_manifest

pytestmark = pytest.mark.slow  # CLI runs killed with SIGKILL and Ctrl-C

BSFEAT = [sys.executable, "-m", "blendsync.featurize.cli"]


@pytest.fixture
def manifest(make_audio, tmp_path):
    rows = []
    for i in range(10):
        # Long enough that the run is still going when the test kills it.
        make_audio(f"t{i}.wav", 15.0 + i % 3, seed=i)
        write_livelink(tmp_path / f"t{i}.csv", 15.0 + i % 3, seed=i)
        rows.append({"audio": f"t{i}.wav", "targets": f"t{i}.csv", "speaker": f"s{i % 3}"})
    return write_manifest(tmp_path / "m.csv", rows)


def _run(args, **kw):
    return subprocess.run(BSFEAT + args, capture_output=True, text=True, timeout=300, **kw)


def test_sigkill_part_way_then_rerun_completes(manifest, tmp_path):
    store = tmp_path / "f.zarr"
    fs = FeatureStore(store)
    proc = subprocess.Popen(
        BSFEAT + ["-q", "extract", str(manifest), "--store", str(store), "--workers", "2", "--no-progress"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if fs.items_dir.is_dir() and len(fs.item_keys()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make the inputs longer"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(fs.item_keys())
    assert 2 <= partial < 10
    # Nothing half-written is visible.
    report = verify_store(fs)
    n, problems = report.items, report.problems
    assert not problems
    r = _run(["extract", str(manifest), "--store", str(store), "--workers", "2", "--no-progress"])
    assert r.returncode == 0, r.stderr
    report = verify_store(fs)
    n, problems = report.items, report.problems
    assert n == 10 and not problems
    idx = fs.read_index("m")
    assert all(e["status"] == "stored" for e in idx["entries"]) and len(idx["entries"]) == 10
    assert not list(fs.staging_dir.iterdir())


def test_two_runs_on_one_store_at_once_end_consistent(manifest, tmp_path):
    store = tmp_path / "f.zarr"
    args = ["-q", "extract", str(manifest), "--store", str(store), "--serial", "--no-progress"]
    procs = [
        subprocess.Popen(BSFEAT + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    fs = FeatureStore(store)
    report = verify_store(fs)
    n, problems = report.items, report.problems
    assert n == 10 and not problems
    assert len(fs.read_index("m")["entries"]) == 10


def test_ctrl_c_in_a_serial_run_stops_after_the_current_file(manifest, tmp_path):
    # openSMILE calls back into Python and swallows an exception raised there: without the
    # flag, Ctrl-C was ignored and the run went on to the last file.
    store = tmp_path / "f.zarr"
    fs = FeatureStore(store)
    proc = subprocess.Popen(
        BSFEAT + ["extract", str(manifest), "--store", str(store), "--serial", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if fs.items_dir.is_dir() and len(fs.item_keys()) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "run finished before it could be interrupted; make the inputs longer"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopping after the current file" in err and "interrupted after" in err
    assert "Traceback" not in err
    partial = len(fs.item_keys())
    assert 2 <= partial < 10
    report = verify_store(fs)
    n, problems = report.items, report.problems
    assert n == partial and not problems
    r = _run(["-q", "extract", str(manifest), "--store", str(store), "--serial", "--no-progress"])
    assert r.returncode == 0, r.stderr
    assert f"({10 - partial} computed, {partial} cached" in r.stdout
