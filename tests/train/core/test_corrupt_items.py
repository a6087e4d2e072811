"""Damaged stores never reach training: reads for training, normalisation and evaluation are
checked against each item's checksums, and a non-finite loss stops the run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from blendsync.shared.store import FeatureStore, ItemError
from blendsync.train.cli import main
from blendsync.train.loop.step import NonFiniteLoss
from blendsync.train.loop.trainer import fit
from tests.helpers import item_provenance, make_random_store, tiny


def _copy_with_a_train_row(example_store, tmp_path):
    """A copy of the example store and one training row of its manifest: (store, key, id)."""
    store = tmp_path / "copy.zarr"
    shutil.copytree(example_store, store)
    fs = FeatureStore(store)
    (name,) = fs.index_names()
    row = next(e for e in fs.read_index(name)["entries"] if (e.get("split") or "train") == "train")
    return store, row["key"], row["id"]


def _chunk(store, key: str, array: str):
    (path,) = [p for p in (store / "items" / key / array / "c").rglob("*") if p.is_file()]
    return path


def _fit_cli(store, out, *extra) -> int:
    with pytest.raises(SystemExit) as e:
        main(["-q", "fit", "--store", str(store), "--out", str(out), "--epochs", "1", "--no-progress", *extra])
    return e.value.code


def test_fit_refuses_an_item_with_a_deleted_chunk_naming_key_and_row(example_store, tmp_path, capsys):
    store, key, rid = _copy_with_a_train_row(example_store, tmp_path)
    _chunk(store, key, "mel").unlink()  # zarr would read it back as fill values
    assert _fit_cli(store, tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert f"item {key} ({rid}) does not match its checksums (mel)" in err
    assert "Traceback" not in err
    # Nothing was learned from, or cached of, the damaged item.
    assert not list((tmp_path / "run").glob("norm_stats-*.json"))
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_fit_refuses_an_item_with_flipped_bytes(example_store, tmp_path, capsys):
    store, key, rid = _copy_with_a_train_row(example_store, tmp_path)
    path = _chunk(store, key, "targets")
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 16):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert _fit_cli(store, tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert f"item {key} ({rid})" in err and "targets" in err and "Traceback" not in err


def test_evaluate_refuses_a_damaged_item_instead_of_a_codec_traceback(tmp_path, capsys):
    fs, keys = make_random_store(tmp_path / "s.zarr", [300, 280, 260])
    run = tmp_path / "run"
    fit(fs.root, cfg=tiny(optim={"epochs": 1}), out=run, stop_after_steps=2)
    for key in keys:  # garbage where every compressed chunk was
        _chunk(fs.root, key, "emotion").write_bytes(b"\x00garbage" * 40)
    with pytest.raises(SystemExit) as e:
        main(
            [
                "-q",
                "evaluate",
                "--checkpoint",
                str(run / "checkpoints" / "last.pt"),
                "--store",
                str(fs.root),
                "--split",
                "train",
            ]
        )
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "array 'emotion' is unreadable" in err and "Traceback" not in err


def test_read_item_checks_checksums_on_a_local_store(tmp_path):
    fs, keys = make_random_store(tmp_path / "s.zarr", [50])
    assert fs.read_item(keys[0]).mel.shape == (50, 80)
    _chunk(fs.root, keys[0], "mel").unlink()
    with pytest.raises(ItemError, match=f"item {keys[0]} does not match its checksums .mel."):
        fs.read_item(keys[0])
    # verify reads without the check, to report every array's own problem.
    assert fs.read_item(keys[0], verify=False).mel.shape == (50, 80)


def test_stored_non_finite_values_are_refused_with_their_count(tmp_path):
    # An item written by something other than featurize, with checksums that match its NaNs.
    from blendsync.featurize.writer import write_item
    from blendsync.shared.featurize_file import FeaturizedFile

    fs, keys = make_random_store(tmp_path / "s.zarr", [300, 280])
    attrs = fs.item_attrs(keys[0])
    item = fs.read_item(keys[0])
    mel = item.mel.copy()
    mel[10:13, 0] = np.nan
    shutil.rmtree(fs.item_path(keys[0]))
    write_item(
        fs,
        keys[0],
        FeaturizedFile(mel, item.emotion, item.targets, {"frames": 300}),
        item_provenance(attrs.feature_config, attrs.channel_set, attrs.feature_config_hash),
    )
    with pytest.raises(ItemError, match=f"item {keys[0]} .*has 3 non-finite values in mel"):
        fit(fs.root, cfg=tiny(), out=tmp_path / "run")


def test_a_non_finite_loss_stops_training_naming_the_step_and_files(tmp_path, capsys):
    fs, keys = make_random_store(tmp_path / "s.zarr", [400, 300, 300])
    cfgp = tmp_path / "c.yaml"
    cfgp.write_text(tiny(optim={"lr": 1e30, "warmup_steps": 0, "epochs": 3}).to_yaml())
    with pytest.raises(SystemExit) as e:
        main(
            [
                "-q",
                "fit",
                "--store",
                str(fs.root),
                "--config",
                str(cfgp),
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
            ]
        )
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "the training loss is not finite at step" in err and "Traceback" not in err
    named = err.split("batch files: ")[1].split(")")[0].split(", ")
    assert named and set(named) <= {k[:12] for k in keys}
    # No checkpoint of poisoned weights.
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    if last.exists():
        import torch

        ck = torch.load(last, weights_only=False)
        assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_the_guard_names_the_first_bad_step():
    import torch

    from blendsync.train.loop.step import NonFiniteGuard

    g = NonFiniteGuard()
    g.add(7, torch.tensor(1.0), ["a"])
    g.add(8, torch.tensor(float("nan")), ["b", "c"])
    g.add(9, torch.tensor(float("inf")), ["d"])
    with pytest.raises(NonFiniteLoss, match=r"at step 8 \(batch files: b, c\)"):
        g.check()
    g.check()  # flags are read once


def test_cached_statistics_that_are_not_finite_are_computed_again(tmp_path):
    from blendsync.train.core.data import FileRef
    from blendsync.train.core.normalization import load_or_compute, stats_cache_key

    fs, keys = make_random_store(tmp_path / "s.zarr", [100, 120])
    files = [FileRef(k, n, k) for k, n in zip(keys, (100, 120))]
    good = load_or_compute(tmp_path / "run", fs, "m", "train", files)
    path = tmp_path / "run" / f"norm_stats-{stats_cache_key(fs, 'm', 'train', files)}.json"
    doc = json.loads(path.read_text())
    doc["mel_mean"][0] = float("nan")
    path.write_text(json.dumps(doc))
    again = load_or_compute(tmp_path / "run", fs, "m", "train", files)
    np.testing.assert_allclose(again.mel_mean, good.mel_mean)


@pytest.mark.slow
def test_the_advised_repair_repairs_exactly_the_damaged_items(example_store, tmp_path, capsys):
    """fit stops on a damaged item and names `bsfeat extract MANIFEST --store S --repair`; a
    plain extract trusts the stored item (it reads none) and repairs nothing; --repair
    recomputes exactly the damaged one, after which verify and fit pass."""
    from blendsync.featurize.cli import main as bsfeat
    from tests.helpers import REPO

    store, key, rid = _copy_with_a_train_row(example_store, tmp_path)
    _chunk(store, key, "mel").unlink()
    assert _fit_cli(store, tmp_path / "run") == 1
    err = capsys.readouterr().err
    command = f"bsfeat extract {REPO / 'data_manifest.csv'} --store {store} --repair"
    assert f"item {key} ({rid}) does not match its checksums (mel)" in err and command in err, err

    def bsfeat_exit(*args) -> int:
        with pytest.raises(SystemExit) as e:
            bsfeat(["-q", *args])
        return e.value.code

    assert bsfeat_exit("verify", str(store)) == 1
    err = capsys.readouterr().err
    assert f"{key}: mel: checksum mismatch" in err and f"to recompute them: {command}" in err
    manifest = str(REPO / "data_manifest.csv")
    assert bsfeat_exit("extract", manifest, "--store", str(store), "--serial", "--no-progress") == 0
    assert "(0 computed, 9 cached" in capsys.readouterr().out  # a plain run reads no arrays
    assert bsfeat_exit("extract", manifest, "--store", str(store), "--serial", "--no-progress", "--repair") == 0
    out = capsys.readouterr()
    assert "(1 computed, 8 cached, 1 repaired, 0 problem(s)" in out.out
    assert f"1 stored item(s) failed their check and were recomputed:\n  {key} (row" in out.err
    assert bsfeat_exit("verify", str(store)) == 0
    capsys.readouterr()
    assert _fit_cli(store, tmp_path / "run2") == 0
    assert bsfeat_exit("extract", manifest, "--store", str(store), "--force", "--repair") == 1
