"""Stores at fsspec URLs: bsfeat and bstrain on an S3 bucket (moto's S3 server on 127.0.0.1,
see tests/conftest.py), through the same s3fs code path a real bucket uses. Object stores
cannot rename, so items are committed by writing the completion marker last."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from blendsync.featurize.cli import main as bsfeat
from blendsync.featurize.extract import extract
from blendsync.featurize.inspect_store import store_info, verify_store
from blendsync.shared.config import FeatureConfig
from blendsync.shared.store import FeatureStore
from blendsync.train.core.data import DataError, load_training_data
from tests.helpers import assert_same_items, write_livelink, write_manifest

pytestmark = pytest.mark.slow  # an S3 server, clusters and killed runs

BSFEAT = [sys.executable, "-m", "blendsync.featurize.cli"]


@pytest.fixture
def manifest(make_audio, tmp_path):
    rows = []
    for i in range(4):
        dur = 3.0 + 0.5 * i
        make_audio(f"t{i}.wav", dur, seed=i)
        write_livelink(tmp_path / f"t{i}.csv", dur, seed=i)
        rows.append({"audio": f"t{i}.wav", "targets": f"t{i}.csv", "speaker": f"s{i % 2}", "id": f"t{i}"})
    return write_manifest(tmp_path / "m.csv", rows)


def test_dask_extract_into_a_bucket_equals_the_local_store_and_reruns_from_it(manifest, s3_bucket, tmp_path):
    url = f"{s3_bucket}/features.zarr"
    cfg = FeatureConfig()
    # Two worker processes of a LocalCluster open the bucket themselves (fsspec config from env).
    remote = extract(manifest, url, cfg, workers=2)
    local = extract(manifest, tmp_path / "local.zarr", cfg, executor="serial")
    assert remote.ok and remote.computed == 4 and remote.keys == local.keys
    fs = FeatureStore(url)
    assert not fs.is_local and fs.item_keys() == sorted(set(local.keys))
    assert_same_items(fs, FeatureStore(tmp_path / "local.zarr"), local.keys)
    assert fs.read_index("m")["entries"] == FeatureStore(tmp_path / "local.zarr").read_index("m")["entries"]
    report = verify_store(fs)
    n, problems = report.items, report.problems
    assert n == 4 and not problems
    info = store_info(fs)
    assert info["items"] == 4 and info["incomplete_items"] == 0 and info["bytes_on_disk"] > 100_000

    again = extract(manifest, url, cfg, workers=2)
    assert again.computed == 0 and again.cached == 4 and not again.started_cluster
    assert again.hashed_files == 0  # the stat cache lives in the bucket too


def test_half_written_item_is_invisible_then_rewritten(manifest, s3_bucket):
    url = f"{s3_bucket}/features.zarr"
    r = extract(manifest, url, FeatureConfig(), executor="serial")
    fs = FeatureStore(url)
    key = r.keys[1]
    original = fs.read_item(key)
    # What a writer killed before its completion marker leaves: arrays, no "complete".
    g = zarr.open_group(fs.zarr_location(f"items/{key}"), mode="w")
    g.create_array("mel", data=np.zeros((5, 80), np.float32))
    assert key not in fs.item_keys() and fs.incomplete_keys() == [key]
    report = verify_store(fs)
    n, problems = report.items, report.problems
    # Readers skip it; the only complaint is the manifest row that now has no item.
    assert n == 3 and [str(p) for p in problems] == [f"{key}: listed by manifest 'm' row 2 but not stored"]
    with pytest.raises(DataError, match=f"lists item {key}"):
        load_training_data(fs, "m")

    rerun = extract(manifest, url, FeatureConfig(), executor="serial")
    assert rerun.computed == 1 and fs.incomplete_keys() == []
    np.testing.assert_array_equal(fs.read_item(key).mel, original.mel)
    report = verify_store(fs)
    assert (report.items, report.problems) == (4, [])


def test_sigkill_mid_run_then_rerun_completes(make_audio, s3_bucket, s3_env, tmp_path):
    rows = []
    for i in range(6):
        make_audio(f"k{i}.wav", 12.0, seed=i)
        write_livelink(tmp_path / f"k{i}.csv", 12.0, seed=i)
        rows.append({"audio": f"k{i}.wav", "targets": f"k{i}.csv"})
    man = write_manifest(tmp_path / "k.csv", rows)
    url = f"{s3_bucket}/features.zarr"
    fs = FeatureStore(url)
    proc = subprocess.Popen(
        BSFEAT + ["-q", "extract", str(man), "--store", url, "--serial", "--no-progress"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **s3_env},
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if fs.exists() and len(fs.item_keys()) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make the inputs longer"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= len(fs.item_keys()) < 6
    report = verify_store(fs)
    problems = report.problems
    assert not problems  # every visible item is whole and matches its checksums

    r = subprocess.run(
        BSFEAT + ["extract", str(man), "--store", url, "--serial", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **s3_env},
    )
    assert r.returncode == 0, r.stderr
    report = verify_store(fs)
    assert (report.items, report.problems) == (6, []) and fs.incomplete_keys() == []
    assert all(e["status"] == "stored" for e in fs.read_index("k")["entries"])


def test_force_rewrites_items_in_place(manifest, s3_bucket):
    url = f"{s3_bucket}/features.zarr"
    first = extract(manifest, url, FeatureConfig(), executor="serial")
    fs = FeatureStore(url)
    before = {k: fs.read_item(k).attrs.checksums for k in first.keys}
    forced = extract(manifest, url, FeatureConfig(), executor="serial", force=True)
    assert forced.computed == 4
    assert {k: fs.read_item(k).attrs.checksums for k in first.keys} == before
    report = verify_store(fs)
    assert (report.items, report.problems) == (4, []) and fs.incomplete_keys() == []


def test_cli_info_verify_and_a_missing_bucket(manifest, s3_bucket, capsys):
    url = f"{s3_bucket}/features.zarr"
    with pytest.raises(SystemExit) as e:
        bsfeat(["-q", "extract", str(manifest), "--store", url, "--serial", "--no-progress"])
    assert e.value.code == 0
    for args in (["info", url], ["verify", url]):
        with pytest.raises(SystemExit) as e:
            bsfeat(args)
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"store:          {url}" in out and "ok: 4 items verified" in out

    missing = "s3://no-such-bucket-here/features.zarr"
    with pytest.raises(SystemExit) as e:
        bsfeat(["-q", "extract", str(manifest), "--store", missing, "--serial", "--no-progress"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert missing in err and "bucket does not exist" in err
