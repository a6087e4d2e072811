"""bsfeat extract --augment: audio variants of the training takes stored as items of their
own, keyed by their take and variant, reused by later runs, listed in the manifest index."""

from __future__ import annotations

import numpy as np
import pytest

from blendsync.featurize.audio_variants import parse_variants, variant_key
from blendsync.featurize.cli import main
from blendsync.featurize.extract import extract
from blendsync.shared.config import FeatureConfig
from blendsync.shared.store import FeatureStore
from tests.helpers import write_livelink, write_manifest

VARIANTS = parse_variants(["speed:0.8", "speed:1.25", "noise:20"])


@pytest.fixture
def manifest(make_audio, tmp_path):
    """Two training takes with curves, a validation take, an audio-only training row."""
    rows = []
    for i, split in enumerate(["train", "train", "val"]):
        make_audio(f"t{i}.wav", 3.0, seed=i)
        write_livelink(tmp_path / f"t{i}.csv", 3.0, seed=i, curve=lambda t: np.full(52, 0.5 + 0.4 * np.sin(2 * t)))
        rows.append({"audio": f"t{i}.wav", "targets": f"t{i}.csv", "split": split, "id": f"t{i}"})
    make_audio("speech.wav", 2.0, seed=9)
    rows.append({"audio": "speech.wav", "split": "train", "id": "speech"})
    return write_manifest(tmp_path / "m.csv", rows)


def test_training_takes_get_their_variants_once_and_a_rerun_computes_nothing(manifest, tmp_path):
    store = tmp_path / "f.zarr"
    r1 = extract(manifest, store, FeatureConfig(), executor="serial", augment=VARIANTS)
    assert r1.ok and (r1.computed, r1.variants_computed, r1.variants_stored) == (4, 6, 6)
    fs = FeatureStore(store)
    entries = {e.id: e for e in fs.manifest_index("m").entries}
    assert not entries["t2"].variants and not entries["speech"].variants  # validation, no curves
    for rid in ("t0", "t1"):
        e = entries[rid]
        assert [name for name, _ in e.variants] == [v.name for v in VARIANTS]
        assert [key for _, key in e.variants] == [variant_key(e.key, v) for v in VARIANTS]
        for name, key in e.variants:
            assert fs.item_attrs(key).doc["augment"]["spec"] == name
    assert len(fs.item_keys()) == 4 + 6

    r2 = extract(manifest, store, FeatureConfig(), executor="serial", augment=VARIANTS)
    assert (r2.tasks, r2.computed, r2.variants_computed, r2.variants_stored) == (0, 0, 0, 6)
    # A run with fewer variants keeps the others stored and lists only its own.
    r3 = extract(manifest, store, FeatureConfig(), executor="serial", augment=VARIANTS[:1])
    assert (r3.tasks, r3.variants_stored) == (0, 2) and len(fs.item_keys()) == 10
    # Without --augment the index lists none: the run's own manifest decides.
    r4 = extract(manifest, store, FeatureConfig(), executor="serial")
    assert r4.tasks == 0 and not any(e.variants for e in fs.manifest_index("m").entries)


def test_speed_variants_hold_the_curves_time_scaled_with_the_audio(manifest, tmp_path):
    store = tmp_path / "f.zarr"
    r = extract(manifest, store, FeatureConfig(), executor="serial", augment=VARIANTS)
    fs = FeatureStore(store)
    entry = next(e for e in fs.manifest_index("m").entries if e.id == "t0")
    orig = fs.read_item(entry.key).targets
    for (name, key), v in zip(entry.variants, VARIANTS):
        got = fs.read_item(key).targets
        if v.speed == 1.0:
            np.testing.assert_array_equal(got, orig)  # noise: the same curves
            continue
        assert abs(len(got) - len(orig) / v.speed) <= 1, name
        # Frame j of the variant shows the take at frame j·speed.
        frames = np.arange(len(got)) * v.speed
        inside = frames <= len(orig) - 1
        want = np.stack([np.interp(frames[inside], np.arange(len(orig)), orig[:, c]) for c in range(orig.shape[1])], 1)
        np.testing.assert_allclose(got[inside], want, atol=2e-3, err_msg=name)
    assert r.ok


def test_a_bad_augment_spec_is_one_line_and_nothing_is_written(manifest, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["extract", str(manifest), "--store", str(tmp_path / "f.zarr"), "--serial", "--augment", "speed:3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and len(err) == 1
    assert "--augment 'speed:3'" in err[0] and "outside 0.5..2" in err[0]
    assert not (tmp_path / "f.zarr").exists()


def test_cli_reports_the_variants(manifest, tmp_path, capsys):
    argv = ["extract", str(manifest), "--store", str(tmp_path / "f.zarr"), "--serial", "--augment", "speed:1.25"]
    with pytest.raises(SystemExit) as e:
        main(argv + ["--augment", "noise:30"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "4 audio variant(s) stored (4 computed)" in out
    with pytest.raises(SystemExit):
        main(["info", str(tmp_path / "f.zarr")])
    out = capsys.readouterr().out
    assert "4 audio variants (--augment)" in out and "4 stored audio variant item(s)" in out
    assert "no manifest points to" not in out  # variants are versions of takes, not superseded ones
