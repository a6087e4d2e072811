"""bsfeat extract end to end on real extractors, a real Dask LocalCluster and real Zarr."""

from __future__ import annotations

import hashlib
import json

import pytest

from blendsync.featurize.cli import main
from blendsync.featurize.extract import extract
from blendsync.shared.config import FeatureConfig
from blendsync.shared.store import FeatureStore
from tests.helpers import assert_same_items, write_bad_audio, write_livelink, write_manifest


@pytest.fixture
def takes(make_audio, tmp_path):
    """Three 2-3 s takes with Live Link Face targets, and a function adding more."""

    def add(i: int) -> dict:
        dur = 2.0 + 0.5 * (i % 3)
        make_audio(f"take{i}.wav", dur, sr=22050, seed=i)
        write_livelink(tmp_path / f"take{i}.csv", dur, seed=i)
        return {"audio": f"take{i}.wav", "targets": f"take{i}.csv", "speaker": f"s{i % 2}", "id": f"t{i}"}

    rows = [add(i) for i in range(3)]
    return rows, add


def _tree_digest(path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_rerun_computes_nothing_new_row_one_item_new_setting_new_items(takes, tmp_path):
    rows, add = takes
    man = write_manifest(tmp_path / "m.csv", rows)
    store = tmp_path / "f.zarr"
    cfg = FeatureConfig()
    r1 = extract(man, store, cfg, executor="serial")
    assert (r1.computed, r1.cached, r1.stored, r1.failed) == (3, 0, 3, [])

    assert r1.hashed_files == 6  # 3 audio + 3 target files
    r2 = extract(man, store, cfg, executor="dask", workers=1)
    assert (r2.computed, r2.cached, r2.tasks, r2.hashed_files) == (0, 3, 0, 0)
    assert not r2.started_cluster

    rows.append(add(3))
    write_manifest(man, rows)
    r3 = extract(man, store, cfg, executor="serial")
    assert (r3.computed, r3.cached, r3.hashed_files) == (1, 3, 2)
    old_keys = set(r3.keys)

    cfg60 = FeatureConfig.from_dict({"fps": 60})
    r4 = extract(man, store, cfg60, executor="serial")
    assert r4.computed == 4 and not (set(r4.keys) & old_keys)
    fs = FeatureStore(store)
    assert set(fs.item_keys()) == old_keys | set(r4.keys)
    a30, a60 = fs.read_item(r3.keys[0]), fs.read_item(r4.keys[0])
    assert a60.mel.shape[0] == 2 * a30.mel.shape[0]
    idx = fs.read_index("m")
    assert idx["feature_config_hash"] == cfg60.hash and [e["key"] for e in idx["entries"]] == r4.keys


@pytest.mark.slow
def test_serial_and_dask_give_identical_arrays(takes, tmp_path):
    rows, _ = takes
    man = write_manifest(tmp_path / "m.csv", rows)
    cfg = FeatureConfig()
    rs = extract(man, tmp_path / "serial.zarr", cfg, executor="serial")
    rd = extract(man, tmp_path / "dask.zarr", cfg, executor="dask", workers=2)
    assert rd.started_cluster and rs.keys == rd.keys
    s, d = FeatureStore(tmp_path / "serial.zarr"), FeatureStore(tmp_path / "dask.zarr")
    assert_same_items(s, d, rs.keys)


def test_item_layout_provenance_and_few_large_reads(takes, tmp_path):
    rows, _ = takes
    man = write_manifest(tmp_path / "m.csv", rows)
    r = extract(man, tmp_path / "f.zarr", FeatureConfig(), executor="serial")
    fs = FeatureStore(tmp_path / "f.zarr")
    item = fs.read_item(r.keys[0])
    T = item.attrs.frames
    assert item.mel.shape == (T, 80) and item.emotion.shape == (T, 88) and item.targets.shape == (T, 52)
    a = item.attrs.doc  # the stored document itself
    assert a["complete"] is True and a["feature_config_hash"] == FeatureConfig().hash
    assert {"opensmile", "librosa", "soxr"} <= set(a["library_versions"])
    assert a["source"]["audio"].endswith("take0.wav") and len(a["source"]["audio_sha256"]) == 64
    assert a["channels"][0] == "eyeBlinkLeft" and a["fps"] == 30.0
    assert "emotion_partial_context_frames" in a["counts"]
    # A take is one chunk per array: reading it whole is three large reads.
    for name in ("mel", "emotion", "targets"):
        chunks = [p for p in (fs.item_path(r.keys[0]) / name).rglob("*") if p.is_file() and p.name != "zarr.json"]
        assert len(chunks) == 1
    idx = fs.read_index("m")
    assert [e["id"] for e in idx["entries"]] == ["t0", "t1", "t2"]
    assert {e["split"] for e in idx["entries"]} == {"train", "val"}


@pytest.mark.slow
def test_bad_rows_get_their_own_messages_good_rows_stored_store_untouched(takes, tmp_path, make_audio, capsys):
    rows, _ = takes
    store = tmp_path / "f.zarr"
    man0 = write_manifest(tmp_path / "first.csv", rows[:1])
    extract(man0, store, FeatureConfig(), executor="serial")
    before = _tree_digest(store / "items")

    write_bad_audio(tmp_path)
    make_audio("long.wav", 3.0, seed=9)
    write_livelink(tmp_path / "mismatch.csv", 4.0)
    (tmp_path / "broken.csv").write_text("Timecode,JawOpen\n00:00:00:00.000,0.1\n")
    bad = [
        {"audio": "empty.wav", "id": "b1"},
        {"audio": "silent.wav", "id": "b2"},
        {"audio": "short.wav", "id": "b3"},
        {"audio": "nan.wav", "id": "b4"},
        {"audio": "junk.wav", "id": "b5"},
        {"audio": "long.wav", "targets": "mismatch.csv", "id": "b6"},
        {"audio": "long.wav", "targets": "broken.csv", "id": "b7"},
        {"audio": "missing.wav", "id": "b8"},
    ]
    man = write_manifest(tmp_path / "m.csv", rows + bad)
    with pytest.raises(SystemExit) as e:
        main(["-q", "extract", str(man), "--store", str(store), "--workers", "2", "--no-progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("audio is silent") == 1 and err.count("cannot decode audio") == 1  # each failed row once
    fs = FeatureStore(store)
    idx = fs.read_index("m")
    by_row = {x["row"]: x for x in idx["entries"]}
    assert [by_row[i]["status"] for i in (1, 2, 3)] == ["stored"] * 3
    expect = {
        4: ("empty.wav", "empty"),
        5: ("silent.wav", "silent"),
        6: ("short.wav", "shorter than"),
        7: ("nan.wav", "NaN"),
        8: ("junk.wav", "cannot decode"),
        9: ("mismatch.csv", "4.000 s but audio"),
        10: ("broken.csv", "missing 51 of 52"),
        11: ("missing.wav", "audio file not found"),
    }
    for row, (name, msg) in expect.items():
        entry = by_row[row]
        assert entry["status"] == "failed" and name in entry["error"] and msg in entry["error"], entry
    after = _tree_digest(store / "items")
    assert {k: v for k, v in after.items() if k in before} == before


def test_cli_info_verify_and_exit_codes(takes, tmp_path, capsys):
    rows, _ = takes
    man = write_manifest(tmp_path / "m.csv", rows)
    store = tmp_path / "f.zarr"
    with pytest.raises(SystemExit) as e:
        main(["extract", str(man), "--store", str(store), "--serial", "--no-progress"])
    assert e.value.code == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["info", str(store), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["items"] == 3 and doc["manifests"]["m"]["stored"] == 3
    assert doc["audio_hours"] == pytest.approx((2.0 + 2.5 + 3.0) / 3600, rel=1e-3)
    assert list(doc["feature_configs"]) == [FeatureConfig().hash] and doc["bytes_on_disk"] > 0
    with pytest.raises(SystemExit) as e:
        main(["verify", str(store)])
    assert e.value.code == 0

    # Corrupt one chunk: verify names that key and exits 1.
    fs = FeatureStore(store)
    key = fs.item_keys()[0]
    chunk = next(p for p in (fs.item_path(key) / "mel").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(chunk.read_bytes()[:-7] + b"\x01" * 7)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["verify", str(store)])
    assert e.value.code == 1 and key in capsys.readouterr().err

    for args in (
        ["extract", str(tmp_path / "none.csv")],
        ["extract", str(man), "--config", str(tmp_path / "none.yaml")],
        ["extract", str(man), "--workers", "0"],
        ["info", str(tmp_path)],
    ):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 1, args


def test_write_default_config_round_trips(tmp_path):
    p = tmp_path / "c.yaml"
    with pytest.raises(SystemExit) as e:
        main(["write-default-config", str(p)])
    assert e.value.code == 0
    assert FeatureConfig.load(p).hash == FeatureConfig().hash


def test_force_recomputes_in_place(takes, tmp_path):
    rows, _ = takes
    man = write_manifest(tmp_path / "m.csv", rows[:1])
    store = tmp_path / "f.zarr"
    extract(man, store, FeatureConfig(), executor="serial")
    r = extract(man, store, FeatureConfig(), executor="serial", force=True)
    assert r.computed == 1 and FeatureStore(store).item_keys() == r.keys


@pytest.mark.slow
def test_existing_cluster_via_scheduler_address(takes, tmp_path):
    from distributed import LocalCluster

    rows, _ = takes
    man = write_manifest(tmp_path / "m.csv", rows)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        r = extract(man, tmp_path / "f.zarr", FeatureConfig(), scheduler=cluster.scheduler_address)
    assert r.ok and r.computed == 3 and r.started_cluster


def test_local_cluster_workers_run_single_threaded():
    import os

    from blendsync.shared.cluster import dask_client

    def env():
        from threadpoolctl import threadpool_info

        return (
            os.environ.get("OMP_NUM_THREADS"),
            os.environ.get("OPENBLAS_NUM_THREADS"),
            [p["num_threads"] for p in threadpool_info()],
        )

    with dask_client(workers=2) as client:
        client.wait_for_workers(2, timeout=60)
        infos = client.run(env)
        assert len(infos) == 2
        for omp, blas, pools in infos.values():
            assert omp == "1" and blas == "1" and all(n == 1 for n in pools)
        assert all(n == 1 for n in client.run(lambda dask_worker: dask_worker.state.nthreads).values())


@pytest.mark.parametrize("name", ["../../x", "..", "a/b"])
def test_an_index_name_that_would_be_a_path_is_refused_before_anything_is_written(tmp_path, capsys, name):
    from pathlib import Path

    manifest = Path(__file__).resolve().parents[2] / "data_manifest.csv"
    work = tmp_path / "w"
    work.mkdir()
    with pytest.raises(SystemExit) as e:
        main(["extract", str(manifest), "--store", str(work / "s.zarr"), "--serial", "--name", name])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "is not allowed" in err and "Traceback" not in err
    assert list(tmp_path.rglob("*")) == [work]  # no store, nothing beside it


def test_a_corrupt_manifest_index_is_named_and_extract_rewrites_it(tmp_path, make_audio, capsys):
    from blendsync.shared.store import StoreError

    make_audio("a.wav", 2.0)
    man = write_manifest(tmp_path / "base.csv", [{"audio": "a.wav", "split": "train"}])
    store = tmp_path / "s.zarr"
    assert extract(man, store, FeatureConfig(), executor="serial").ok
    index = store / "manifests" / "base" / "zarr.json"
    index.write_text("{not json")
    with pytest.raises(StoreError, match="'base' is unreadable .*not valid JSON"):
        FeatureStore(store).read_index("base")
    with pytest.raises(SystemExit) as e:
        main(["info", str(store)])
    assert e.value.code == 0 and "base: " in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["verify", str(store)])
    assert e.value.code == 1 and "manifests/base" in capsys.readouterr().err
    r = extract(man, store, FeatureConfig(), executor="serial")  # everything cached; the index is rewritten
    assert r.ok and r.cached == 1
    assert FeatureStore(store).read_index("base")["entries"][0]["key"]


def test_info_refuses_a_threshold_that_is_not_a_finite_number(example_store, capsys):
    for bad in ("nan", "-nan"):
        with pytest.raises(SystemExit) as e:
            main(["info", str(example_store), "--channels", "--threshold", bad])
        assert e.value.code == 1 and "not a finite number" in capsys.readouterr().err
