"""Cross-validated sweeps (sweep.yaml `folds: K`): a trial is scored on takes it never
trained on, K times, so that the config it finds holds on other takes, not on one
validation take.

The manifest's captured takes (its train and val rows with curves) are dealt, in row order,
into K groups; fold i validates on group i and trains on the others (K = the number of takes:
leave one take out). Each fold is a manifest index of its own in the store,
`<manifest>.fold<i>of<K>` (the manifest's rows with their splits reassigned; test rows,
audio-only rows and every row's audio variants as they were), written once by the sweep and
read by its trials wherever they run.
"""

from __future__ import annotations

import dataclasses
import json
import statistics

from blendsync.shared.store import FeatureStore, StoreError


class FoldError(ValueError):
    """Folds that cannot be made from the manifest, said in one line."""


def fold_name(manifest: str, fold: int, folds: int) -> str:
    return f"{manifest}.fold{fold + 1}of{folds}"


def write_fold_indexes(store: FeatureStore, manifest: str | None, folds: int) -> list[str]:
    """The names of the K fold indexes of `manifest` (None: the store's only manifest index),
    written where missing or different. FoldError when the manifest has fewer captured takes
    than folds."""
    names = store.index_names()
    if manifest is None:
        if len(names) != 1:
            raise FoldError(f"folds: name the manifest to cut into folds with --manifest (the store has {names})")
        manifest = names[0]
    try:
        idx = store.manifest_index(manifest)
    except StoreError as e:
        raise FoldError(f"folds: {e}") from None
    captured = [
        e.row
        for e in idx.stored_entries
        if (e.split or "train") in ("train", "val") and (a := store.complete_attrs(e.key)) and a.has_targets
    ]
    if len(captured) < folds:
        raise FoldError(
            f"folds: {folds} folds need at least {folds} captured takes (train/val rows with curves); "
            f"manifest {manifest!r} has {len(captured)}"
        )
    group = {row: i % folds for i, row in enumerate(sorted(captured))}
    out = []
    for f in range(folds):
        entries = tuple(
            dataclasses.replace(e, split="val" if group[e.row] == f else "train") if e.row in group else e
            for e in idx.entries
        )
        doc = dataclasses.replace(idx, entries=entries).to_doc()
        name = fold_name(manifest, f, folds)
        try:
            old = store.read_index(name)
        except StoreError:
            old = None
        if old is None or {k: v for k, v in old.items() if k != "updated"} != json.loads(json.dumps(doc)):
            store.write_index(name, doc)
        out.append(name)
    return out


def fold_value(values: list[float]) -> float:
    """A trial's value: the mean of its folds' best validation values."""
    return float(statistics.fmean(values))
