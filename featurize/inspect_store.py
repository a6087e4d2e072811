"""bsfeat info / verify as library calls."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from blendsync.shared.config import FeatureConfig
from blendsync.shared.store import STREAMS, FeatureStore, ItemAttrs, ManifestIndex, StoreError, array_sha256
from blendsync.shared.sync import StoredSync, SyncConfig, estimate_lag


def store_info(store: FeatureStore) -> dict:
    store.check()
    configs: dict[str, dict] = {}
    audio_s = 0.0
    items, incomplete = store.items_by_state()
    for a in items.values():
        audio_s += a.audio_duration_s
        c = configs.setdefault(a.feature_config_hash, {"items": 0, "audio_hours": 0.0, "config": a.feature_config})
        c["items"] += 1
        c["audio_hours"] += a.audio_duration_s / 3600
    manifests = {}
    for name in store.index_names():
        try:
            doc = store.read_index(name)
        except StoreError as e:
            manifests[name] = {"error": str(e)}
            continue
        m = ManifestIndex.from_doc(doc)
        manifests[name] = {
            "rows": m.rows,
            "stored": m.stored,
            "failed_rows": list(m.failed_rows),
            "splits": dict(Counter(e.split for e in m.stored_entries)),
            "variants": sum(len(e.variants) for e in m.stored_entries),
            "feature_config_hash": m.feature_config_hash,
            "updated": doc.get("updated"),
        }
    staging = len(list(store.staging_dir.iterdir())) if store.is_local and store.staging_dir.is_dir() else 0
    return {
        "store": str(store.root),
        "items": len(items),
        "incomplete_items": len(incomplete),
        "staging_entries": staging,
        "audio_hours": audio_s / 3600,
        "feature_configs": configs,
        "manifests": manifests,
        "bytes_on_disk": store.bytes_on_disk(),
        "sync": sync_summary(items, takes=current_takes(store, items)),
    }


def current_takes(store: FeatureStore, items: dict[str, ItemAttrs], manifest: str | None = None) -> dict:
    """{key: the manifest row it stands for (IndexEntry), or None}: the items a manifest's
    rows point to now (manifest given), or those of every manifest (each key with the first
    manifest's row); every item when the store has no manifest index. An item no manifest
    points to any more (the unshifted take an --auto-sync run replaced) is not a take of the
    data set: listing it would count the take twice."""
    names = [manifest] if manifest is not None else store.index_names()
    out: dict = {}
    for name in names:
        try:
            index = store.manifest_index(name)
        except StoreError:
            if manifest is not None:
                raise
            continue  # a damaged index: verify reports it
        for e in index.stored_entries:
            if e.key in items:
                out.setdefault(e.key, e)
    if not names:
        out = dict.fromkeys(items)
    return out


def _take(a: ItemAttrs, stored: StoredSync | None, entry=None) -> dict:
    """A take as listed: the manifest row it stands for (entry), else the row that computed it."""
    src = a.doc.get("source") or {}
    out = {"key": a.key, "row": src.get("row"), "id": src.get("id"), "audio": src.get("audio")}
    if entry is not None:
        out.update(row=entry.row, id=entry.id, audio=entry.audio)
    if stored is not None:
        out.update(
            stored.estimate.to_doc(),
            shift_frames=stored.shift_frames,
            auto_sync=stored.auto_sync,
            description=stored.estimate.describe(),
        )
    return out


def sync_summary(items: dict[str, ItemAttrs], sync: SyncConfig = SyncConfig(), takes: dict | None = None) -> dict:
    """From the stored estimates of the takes (current_takes; attrs only, nothing read): those
    confidently out of sync (|lag| > tolerance), those --auto-sync shifted (fixed: counted
    apart), those without an estimate, and how many predate the check; and how many stored
    items no manifest points to any more (audio variants, bsfeat extract --augment, counted
    apart: they are versions of takes, not takes)."""
    takes = dict.fromkeys(items) if takes is None else takes
    out: dict = {
        "tolerance_frames": sync.tolerance_frames,
        "min_confidence": sync.min_confidence,
        "estimated": 0,
        "out_of_sync": [],
        "shifted": [],
        "no_estimate": [],
        "not_checked": 0,
        "superseded_items": sum(1 for k in set(items) - set(takes) if "augment" not in items[k].doc),
        "variant_items": sum(1 for a in items.values() if "augment" in a.doc),
    }
    for key, entry in takes.items():
        a = items[key]
        if not a.has_targets:
            continue
        stored = a.sync
        if stored is None:
            out["not_checked"] += 1
        elif stored.estimate.lag_frames is None:
            out["no_estimate"].append(_take(a, stored, entry))
        else:
            out["estimated"] += 1
            if stored.shift_frames:
                out["shifted"].append(_take(a, stored, entry))
            elif stored.estimate.out_of_sync(sync):
                out["out_of_sync"].append(_take(a, stored, entry))
    for name in ("out_of_sync", "shifted", "no_estimate"):
        out[name].sort(key=_take_order)
    return out


def _take_order(t: dict) -> tuple:
    return (t["row"] is None, t["row"] or 0, t["key"])


def sync_check(store: FeatureStore, manifest: str | None = None, sync: SyncConfig | None = None) -> dict:
    """Every take with targets (a manifest's stored rows, or every item) with its lag: the
    stored estimate, or, for items written before the check or when sync is given (other
    channels, another search range), estimated now from the stored arrays (read checked;
    nothing is written). ValueError for sync channels an item's channel set lacks."""
    store.check()
    items, _ = store.items_by_state()
    current = current_takes(store, items, manifest)
    cfg = sync or SyncConfig()
    with_targets = [items[k] for k in current if items[k].has_targets]
    # Estimated now: items written before the check, or every item when sync is given.
    again = [a.key for a in with_targets if a.sync is None or sync is not None]
    read, reread = store.read_items(again), set(again)
    takes = []
    for a in with_targets:
        stored = a.sync
        if a.key in reread:
            item = next(read)  # read_items yields in order
            est = estimate_lag(item.mel, item.targets, a.channels, float(a.feature_config.get("fps", 30.0)), cfg)
            # an --auto-sync item's targets are already shifted: its estimate is of what is stored
            stored = StoredSync(est, stored.shift_frames if stored else 0, stored.auto_sync if stored else False)
        take = _take(a, stored, current[a.key])
        # a shifted item's stored estimate is of the take before its shift: fixed, not out of sync
        take["out_of_sync"] = stored.estimate.out_of_sync(cfg) and not (a.key not in reread and stored.shift_frames)
        takes.append(take)
    takes.sort(key=_take_order)
    return {"config": cfg.to_dict(), "takes": takes}


@dataclass(frozen=True)
class VerifyProblem:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    items: int
    problems: list[VerifyProblem]
    incomplete: list[str]


def verify_store(store: FeatureStore) -> VerifyReport:
    """Check every complete item (shapes consistent, finite, checksums) and every manifest
    entry (its item exists).

    Groups without a completion marker are not problems: readers skip them. In an object
    store they are items being written or left by a killed writer, which the next extract
    rewrites; the report lists them."""
    store.check()
    problems: list[VerifyProblem] = []
    items, incomplete = store.items_by_state()
    keys = list(items)
    for key in keys:
        problems += [VerifyProblem(key, m) for m in item_problems(store, key)]
    present = set(keys)
    for name in store.index_names():
        try:
            index = store.manifest_index(name)
        except StoreError as e:
            problems.append(VerifyProblem(f"manifests/{name}", str(e)))
            continue
        for e in index.stored_entries:
            if e.key not in present:
                problems.append(VerifyProblem(e.key, f"listed by manifest {name!r} row {e.row} but not stored"))
    return VerifyReport(len(keys), problems, incomplete)


def repair_commands(store: FeatureStore, problems: list[VerifyProblem]) -> list[str]:
    """One bsfeat extract --repair per manifest the damaged items came from (MANIFEST where
    an item does not say)."""
    manifests = {}
    for p in problems:
        try:
            manifests[store.item_attrs(p.key).manifest] = True
        except Exception:  # not an item (a manifest index), or its attrs are damaged too
            manifests[None] = True
    return [store.repair_command(m) for m in manifests]


def item_problems(store: FeatureStore, key: str) -> list[str]:
    """What is wrong with a complete item (unreadable, shapes, non-finite values, checksums):
    bsfeat verify's check, and extract --repair's."""
    out = []
    try:
        item = store.read_item(key, verify=False)
    except Exception as e:  # a damaged chunk or metadata file: report, keep checking others
        return [f"unreadable ({type(e).__name__}: {e})"]
    a = item.attrs
    try:
        fc = FeatureConfig.from_embedded(a.feature_config)
        want = {"mel": fc.n_mels, "emotion": fc.n_emotion, "targets": len(a.channels)}
    except (ValueError, TypeError, KeyError) as e:
        return [f"feature config unreadable ({e})"]
    arrays = {"mel": item.mel, "emotion": item.emotion, "targets": item.targets}
    T = a.frames
    for name in STREAMS:
        arr = arrays[name]
        expected_sum = a.checksums.get(name)
        if arr is None:
            if expected_sum is not None:
                out.append(f"{name}: missing array")
            continue
        if arr.ndim != 2 or arr.shape[0] != T or arr.shape[1] != want[name]:
            out.append(f"{name}: shape {arr.shape}, expected ({T}, {want[name]})")
        if not np.isfinite(arr).all():
            out.append(f"{name}: {int(np.count_nonzero(~np.isfinite(arr)))} non-finite values")
        if expected_sum is None:
            out.append(f"{name}: no checksum recorded")
        elif array_sha256(arr) != expected_sum:
            out.append(f"{name}: checksum mismatch")
    return out


# A curve above this value on a frame counts as moving there (ARKit curves rest near 0).
ACTIVE_VALUE = 0.05


def channel_activity(store: FeatureStore, manifest: str | None = None, threshold: float = ACTIVE_VALUE) -> dict:
    """Per channel set (by name), per channel: the fraction of frames above threshold, mean,
    max and how many takes move it (any frame above threshold), over the items with targets
    (a manifest's stored rows, or every item). Items are read checked."""
    store.check()
    items, _ = store.items_by_state()
    keys = list(current_takes(store, items, manifest))
    sets: dict[str, dict] = {}
    for item in store.read_items(keys):
        if item.targets is None:
            continue
        names = item.attrs.channels
        name = item.attrs.channel_set.get("name", "?")
        acc = sets.setdefault(
            name,
            {
                "channels": names,
                "frames": 0,
                "takes": 0,
                "above": np.zeros(len(names)),
                "sum": np.zeros(len(names)),
                "max": np.zeros(len(names)),
                "moving_takes": np.zeros(len(names), int),
            },
        )
        t = item.targets.astype(np.float64)
        above = t > threshold
        acc["frames"] += t.shape[0]
        acc["takes"] += 1
        acc["above"] += above.sum(axis=0)
        acc["sum"] += t.sum(axis=0)
        acc["max"] = np.maximum(acc["max"], t.max(axis=0))
        acc["moving_takes"] += above.any(axis=0)
    out = {}
    for name, a in sets.items():
        n = max(a["frames"], 1)
        out[name] = {
            "takes": a["takes"],
            "frames": a["frames"],
            "threshold": threshold,
            "channels": {
                c: {
                    "active_fraction": float(a["above"][i] / n),
                    "mean": float(a["sum"][i] / n),
                    "max": float(a["max"][i]),
                    "takes_moving": int(a["moving_takes"][i]),
                }
                for i, c in enumerate(a["channels"])
            },
        }
    return out
