"""Stores on read-only mounts and full disks: reading work succeeds, writes fail per row with
a clear message, nothing is left half-written, and the next run completes."""

from __future__ import annotations

import shutil

import pytest

from blendsync.featurize.cli import main as bsfeat
from blendsync.train.cli import main as bstrain
from tests.helpers import REPO, write_manifest


def _run(main, args) -> int:
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code


@pytest.mark.slow
def test_reading_work_succeeds_on_a_read_only_store(example_store, tmp_path, read_only, capsys, make_audio):
    from tests.helpers import tiny

    store = tmp_path / "ro.zarr"
    shutil.copytree(example_store, store)
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(tiny(optim={"epochs": 1}).to_yaml())
    read_only(store)
    with pytest.raises(OSError):
        (store / "probe").write_text("x")
    assert _run(bsfeat, ["-q", "info", str(store)]) == 0
    assert _run(bsfeat, ["-q", "verify", str(store)]) == 0
    # A re-run with everything stored writes nothing (not even the file-hash cache).
    assert _run(bsfeat, ["-q", "extract", str(REPO / "data_manifest.csv"), "--store", str(store), "--serial"]) == 0
    assert "(0 computed, 9 cached" in capsys.readouterr().out
    run = tmp_path / "run"
    assert (
        _run(
            bstrain,
            [
                "-q",
                "fit",
                "--store",
                str(store),
                "--config",
                str(cfgp),
                "--out",
                str(run),
                "--max-steps",
                "2",
                "--no-progress",
            ],
        )
        == 0
    )
    assert (
        _run(
            bstrain,
            [
                "-q",
                "evaluate",
                "--checkpoint",
                str(run / "checkpoints" / "last.pt"),
                "--store",
                str(store),
                "--split",
                "val",
            ],
        )
        == 0
    )
    capsys.readouterr()
    # Work that must write says so, once per row, without a traceback.
    make_audio("new.wav", 2.0)
    man = write_manifest(tmp_path / "new.csv", [{"audio": "new.wav"}])
    code = _run(bsfeat, ["-q", "extract", str(man), "--store", str(store), "--serial"])
    err = capsys.readouterr().err
    assert code == 1  # the store cannot take the manifest index either
    assert "new.wav: cannot write its item" in err and "cannot write manifest index 'new'" in err
    assert ("Read-only file system" in err or "Permission denied" in err) and "Traceback" not in err


@pytest.mark.slow
def test_a_full_disk_fails_rows_cleanly_and_a_bigger_disk_completes(small_disk, tmp_path, capsys):
    disk = small_disk("640k")  # room for about three of the example's nine items
    store = disk.path / "f.zarr"
    args = ["-q", "extract", str(REPO / "data_manifest.csv"), "--store", str(store), "--serial", "--no-progress"]
    assert _run(bsfeat, args) == 2
    out = capsys.readouterr()
    failed = [ln for ln in out.err.splitlines() if "No space left on device" in ln]
    assert failed, out.err
    assert all("cannot write its item" in ln for ln in failed)
    assert "Traceback" not in out.err
    # Each failed row is listed once (not also as a log line).
    assert len(failed) == len({ln.strip() for ln in failed})
    leftovers = [p for p in store.rglob("*") if p.name.endswith(".tmp")] + list(
        (store / ".bsfeat" / "staging").iterdir()
    )
    assert leftovers == []
    assert _run(bsfeat, ["-q", "verify", str(store)]) == 0  # what was stored is whole
    capsys.readouterr()
    disk.resize("64m")
    assert _run(bsfeat, args) == 0
    assert f"({len(failed)} computed, {9 - len(failed)} cached" in capsys.readouterr().out
    assert _run(bsfeat, ["-q", "verify", str(store)]) == 0


def test_the_file_hash_cache_on_a_full_disk_is_a_warning_and_leaves_no_temp_file(small_disk, caplog, make_audio):
    import logging

    from blendsync.featurize.stat_cache import StatCache
    from blendsync.shared.store import FeatureStore

    disk = small_disk("256k")
    fs = FeatureStore(disk.path / "f.zarr")
    fs.init()
    with open(disk.path / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    cache = StatCache(fs)
    cache.entries.update({f"/audio/{i}.wav": [i, i, "0" * 64] for i in range(2000)})
    cache.sha256(make_audio("a.wav", 0.5))
    with caplog.at_level(logging.WARNING):
        cache.save()
    assert "could not save the file-hash cache" in caplog.text
    assert [p for p in (disk.path / "f.zarr").rglob("*.tmp")] == []
