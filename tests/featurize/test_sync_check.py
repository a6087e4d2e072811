"""bsfeat's sync check end to end: estimates stored with items, listed by info, --auto-sync."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from helpers import lead, mouth_from_speech, write_manifest

from blendsync.featurize.cli import main as bsfeat
from blendsync.featurize.extract import extract
from blendsync.shared.audio import decode_audio
from blendsync.shared.channels import ARKIT_52
from blendsync.shared.config import FeatureConfig
from blendsync.shared.frame_grid import n_frames
from blendsync.shared.store import FeatureStore
from blendsync.shared.sync import shift_targets

CFG = FeatureConfig()
JAW = ARKIT_52.index("jawOpen")
# The example data's curves lead its audio by 60 ms by design (scripts/generate_example_data.py).
EXAMPLE_LEAD_FRAMES = 0.060 * CFG.fps


def run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        bsfeat(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture
def takes(shared_data, tmp_path):
    """A manifest of real speech with derived curves: in step, leading by 7, lagging by 5
    frames, and one take whose curves never move."""
    src = shared_data / "speech" / "ljspeech_LJ050-0131_22k.wav"
    dec = decode_audio(src, CFG.sample_rate)
    T = n_frames(dec.duration_s, CFG.fps)
    base = np.zeros((T, 52), np.float32)
    base[:, JAW] = mouth_from_speech(dec.samples, dec.sample_rate, T, CFG.fps)
    rows, truth = [], {}
    for i, (name, lag) in enumerate((("step", 0), ("lead7", 7), ("late5", -5), ("silent", None))):
        wav = tmp_path / f"{name}.wav"  # its own bytes per take: the same audio twice would be one file
        sf.write(wav, np.asarray(dec.samples) * (1 - 0.01 * i), CFG.sample_rate, subtype="FLOAT")
        curves = np.zeros_like(base) if lag is None else lead(base, lag)
        np.save(tmp_path / f"{name}.npy", curves)
        rows.append(
            {"audio": wav, "targets": tmp_path / f"{name}.npy", "targets_fps": 30, "split": "train", "id": name}
        )
        truth[name] = (lag, curves)
    return write_manifest(tmp_path / "takes.csv", rows), truth


def test_extract_stores_each_takes_lag_and_info_lists_the_ones_out_of_sync(takes, tmp_path, capsys):
    manifest, truth = takes
    store = tmp_path / "f.zarr"
    code, out, err = run(["extract", str(manifest), "--store", str(store), "--serial", "--no-progress"], capsys)
    assert code == 0
    assert "2 take(s) out of sync with their audio (0 shifted)" in err
    assert "lead7.wav (row 2, lead7): lag +7 frames" in err and "late5.wav (row 3, late5): lag -5 frames" in err
    assert "--auto-sync" in err and "row 1," not in err
    fs = FeatureStore(store)
    by_id = {fs.complete_attrs(k).doc["source"]["id"]: fs.complete_attrs(k) for k in fs.item_keys()}
    for name, (lag, _) in truth.items():
        s = by_id[name].sync
        assert s.shift_frames == 0 and not s.auto_sync
        if lag is None:
            assert s.estimate.lag_frames is None and "do not move" in s.estimate.reason
        else:
            assert abs(s.estimate.lag_frames - lag) <= 1, (name, s.estimate)
            assert s.estimate.confidence > 0.5
    code, out, _ = run(["info", str(store)], capsys)
    assert code == 0
    assert "3 takes estimated, 2 out of sync (|lag| > 2 frames), 0 shifted into sync, 1 without an estimate" in out
    listed = [ln for ln in out.splitlines() if "out of sync:" in ln]
    assert len(listed) == 2 and "lead7" in listed[0] and "late5" in listed[1]
    assert "row 4 (silent" in out and "no estimate (the curves (jawOpen" in out
    code, out, _ = run(["info", str(store), "--sync", "--json"], capsys)
    doc = json.loads(out)
    assert [t["id"] for t in doc["takes"]] == ["step", "lead7", "late5", "silent"]
    assert [t["out_of_sync"] for t in doc["takes"]] == [False, True, True, False]
    assert doc["takes"][3]["lag_frames"] is None


@pytest.mark.slow
def test_auto_sync_shifts_the_curves_to_the_usual_lead_under_other_keys(takes, tmp_path, capsys):
    manifest, truth = takes
    store = tmp_path / "f.zarr"
    plain = extract(manifest, store, CFG, executor="serial")
    code, out, err = run(
        ["extract", str(manifest), "--store", str(store), "--serial", "--no-progress", "--auto-sync"], capsys
    )
    # Nothing is featurized again: the two takes out of sync get shifted copies of their items.
    assert code == 0 and "(2 computed, 2 cached" in out
    assert "2 take(s) out of sync with their audio (2 shifted)" in err
    fs = FeatureStore(store)
    lead = fs.complete_attrs(plain.keys[0]).sync.estimate.lag_frames  # "step", the one take in sync
    assert abs(lead) <= 1
    assert f"to the takes' usual lead of {lead:+d} (--auto-sync)" in err
    synced = {e.id: e.key for e in fs.manifest_index("takes").stored_entries}
    assert synced["step"] == plain.keys[0] and synced["silent"] == plain.keys[3]
    assert {synced["lead7"], synced["late5"]}.isdisjoint(plain.keys)  # both versions stored side by side
    assert len(fs.item_keys()) == 6 and all(fs.is_complete(k) for k in plain.keys)
    for name in ("lead7", "late5"):
        item = fs.read_item(synced[name])
        lag, curves = truth[name]
        s = item.attrs.sync
        assert s.shift_frames == s.estimate.lag_frames - lead and s.auto_sync
        np.testing.assert_array_equal(item.targets, shift_targets(curves[: item.attrs.frames], s.shift_frames))
        np.testing.assert_array_equal(item.mel, fs.read_item(plain.keys[list(truth).index(name)]).mel)
    # the shifted takes now estimate at the usual lead
    code, out, _ = run(
        ["info", str(store), "--sync", "--json", "--manifest", "takes", "--sync-channels", "jawOpen"], capsys
    )
    lags = {t["id"]: t["lag_frames"] for t in json.loads(out)["takes"]}
    assert abs(lags["lead7"] - lead) <= 1 and abs(lags["late5"] - lead) <= 1 and lags["silent"] is None
    code, out, _ = run(
        ["extract", str(manifest), "--store", str(store), "--serial", "--no-progress", "--auto-sync"], capsys
    )
    assert code == 0 and "0 computed, 4 cached" in out
    # info counts each take once (the manifest's current item), the shifted ones as fixed.
    code, out, _ = run(["info", str(store)], capsys)
    assert "3 takes estimated, 0 out of sync (|lag| > 2 frames), 2 shifted into sync, 1 without an estimate" in out
    assert "2 stored item(s) no manifest points to any more" in out
    assert out.count("(lead7, ") == 1 and out.count("(late5, ") == 1
    code, out, _ = run(["info", str(store), "--sync", "--json"], capsys)
    takes = json.loads(out)["takes"]
    assert [t["id"] for t in takes] == ["step", "lead7", "late5", "silent"]
    assert not any(t["out_of_sync"] for t in takes)
    code, out, _ = run(["info", str(store), "--channels", "--json"], capsys)
    assert json.loads(out)["arkit52"]["takes"] == 4
    # A second manifest over the same files names its own rows.
    other = tmp_path / "other.csv"
    other.write_text(manifest.read_text().replace(",step", ",again-step").replace(",lead7", ",again-lead7"))
    assert (
        run(["extract", str(other), "--store", str(store), "--serial", "--no-progress", "--auto-sync"], capsys)[0] == 0
    )
    code, out, _ = run(["info", str(store), "--sync", "--json", "--manifest", "other"], capsys)
    assert [t["id"] for t in json.loads(out)["takes"]][:2] == ["again-step", "again-lead7"]


def test_example_data_is_in_step_after_its_designed_lead(example_store, capsys):
    fs = FeatureStore(example_store)
    lags = [fs.complete_attrs(k).sync.estimate.lag_frames for k in fs.item_keys()]
    assert len(lags) == 9 and all(abs(lag - EXAMPLE_LEAD_FRAMES) <= 1 for lag in lags), lags
    code, out, _ = run(["info", str(example_store)], capsys)
    assert "9 takes estimated, 0 out of sync" in out


def test_bad_sync_channels_are_refused_before_anything_is_written(takes, tmp_path, capsys):
    manifest, _ = takes
    store = tmp_path / "f.zarr"
    code, _, err = run(["extract", str(manifest), "--store", str(store), "--sync-channels", "jawOpn"], capsys)
    assert code == 1 and "sync channels ['jawOpn'] are not in the channel set" in err
    assert not store.exists()
    code, _, err = run(["info", str(tmp_path), "--sync-channels", "jawOpen"], capsys)
    assert code == 1 and "--sync-channels goes with --sync" in err


def test_auto_sync_needs_mouth_channels_on_a_custom_rig(tmp_path, capsys):
    cfg = tmp_path / "rig.yaml"
    cfg.write_text("targets:\n  channels: [ctrl_a, ctrl_b]\n")
    manifest = write_manifest(tmp_path / "m.csv", [{"audio": tmp_path / "none.wav"}])
    code, _, err = run(
        ["extract", str(manifest), "--store", str(tmp_path / "f.zarr"), "--config", str(cfg), "--auto-sync"], capsys
    )
    assert code == 1 and "--auto-sync needs the mouth-opening channels" in err and "--sync-channels" in err


def test_a_custom_rig_without_mouth_names_is_warned_and_sync_channels_check_its_cached_takes(
    shared_data, tmp_path, capsys
):
    """The first extract said nothing although no take could be checked; a re-run with
    --sync-channels found every item cached and estimated nothing. Now the first run warns,
    and the re-run estimates the cached takes from their stored arrays (computing nothing)."""
    src = shared_data / "speech" / "ljspeech_LJ050-0131_22k.wav"
    dec = decode_audio(src, CFG.sample_rate)
    T = n_frames(dec.duration_s, CFG.fps)
    curves = np.zeros((T, 2), np.float32)
    curves[:, 0] = mouth_from_speech(dec.samples, dec.sample_rate, T, CFG.fps)
    np.save(tmp_path / "take.npy", lead(curves, 7))
    manifest = write_manifest(
        tmp_path / "rig.csv", [{"audio": src, "targets": tmp_path / "take.npy", "targets_fps": 30, "id": "take"}]
    )
    cfg = tmp_path / "rig.yaml"
    cfg.write_text("targets:\n  channels: [ctrl_jaw, ctrl_brow]\n")
    args = ["extract", str(manifest), "--store", str(tmp_path / "f.zarr"), "--config", str(cfg), "--serial",
            "--no-progress"]  # fmt: skip
    code, out, err = run(args, capsys)
    assert code == 0 and "warning: sync not checked: channel set 'custom2' has no channel named like a mouth" in err
    code, out, err = run([*args, "--sync-channels", "ctrl_jaw"], capsys)
    assert code == 0 and "(0 computed, 1 cached" in out and "warning" not in err
    assert "1 take(s) out of sync with their audio (0 shifted)" in err and "lag +7 frames" in err
    code, out, err = run(args, capsys)  # the default settings again: as the item was stored, nothing read
    assert code == 0 and "warning: sync not checked" in err


def test_auto_sync_shifts_the_variants_of_a_shifted_take_by_the_same_time(takes, tmp_path):
    from blendsync.featurize.audio_variants import parse_variants

    manifest, truth = takes
    store = tmp_path / "f.zarr"
    variants = parse_variants(["speed:1.25", "noise:30"])
    r = extract(manifest, store, CFG, executor="serial", augment=variants, auto_sync=True)
    assert r.ok and r.variants_stored == 8
    fs = FeatureStore(store)
    entries = {e.id: e for e in fs.manifest_index("takes").stored_entries}
    row_shift = fs.complete_attrs(entries["lead7"].key).sync.shift_frames
    assert row_shift != 0
    for name, key in entries["lead7"].variants:
        s = fs.complete_attrs(key).sync
        speed = 1.25 if name == "speed:1.25" else 1.0
        assert s.shift_frames == round(row_shift / speed) and s.auto_sync, name
    for name, key in entries["step"].variants:  # a take in sync: its variants as computed
        assert fs.complete_attrs(key).sync.shift_frames == 0, name
