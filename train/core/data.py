"""Which stored items a run trains and validates on (a manifest index's rows by split, or
all items of one feature config split by a stable hash), and reading them checked."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from blendsync.shared.channels import ChannelSet
from blendsync.shared.config import FeatureConfig
from blendsync.shared.manifest import assign_splits
from blendsync.shared.store import FeatureStore, ItemAttrs, ItemError, StoredItem, StoreError

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A store/manifest/split that cannot be trained on, said plainly."""


@dataclass(frozen=True)
class FileRef:
    """One stored item a stream walks: its key, the number of its frames that are targets
    (from frame `start` on) and its manifest identity. A range short of the whole item is a
    held-out tail or the part before it (hold_out_tails); the frames around a range are
    still read as the windows' context."""

    key: str
    frames: int
    id: str = ""
    start: int = 0


def read_checked(store: FeatureStore, ref: FileRef) -> StoredItem:
    """The item, verified against its checksums and finite; a damaged one raises ItemError
    naming the key and the manifest row it came from."""
    try:
        return check_finite(store.read_item(ref.key))
    except ItemError as e:
        raise with_row(with_repair(e, store), ref) from None


def with_repair(e: ItemError, store: FeatureStore) -> ItemError:
    """The error, saying which command recomputes the item (bsfeat extract --repair)."""
    if "--repair" in e.problem:
        return e
    try:
        manifest = store.item_attrs(e.key).manifest
    except Exception:  # attrs unreadable too: the command with a placeholder
        manifest = None
    return ItemError(e.key, f"{e.problem}; run {store.repair_command(manifest)} to recompute it")


def with_row(e: ItemError, ref: FileRef) -> ItemError:
    """The error, naming the manifest row the item was read for."""
    return ItemError(e.key, f"({ref.id}) {e.problem}") if ref.id else e


def check_finite(item: StoredItem) -> StoredItem:
    """The item, or ItemError when an array holds NaN or infinity (featurize never stores
    them; such an item was written by something else and would poison training)."""
    for name, a in (("mel", item.mel), ("emotion", item.emotion), ("targets", item.targets)):
        if a is not None and not np.isfinite(a).all():
            raise ItemError(item.key, f"has {int(np.count_nonzero(~np.isfinite(a)))} non-finite values in {name}")
    return item


@dataclass(frozen=True, kw_only=True)
class TrainingData:
    """The items a run reads, per split, and what they share: their feature config (and its
    hash as stored), channel set and library versions; streaming.py turns its files into
    batches."""

    manifest: str
    splits: dict[str, list[FileRef]]
    feature_config: FeatureConfig
    feature_config_hash: str
    channel_set: ChannelSet
    library_versions: dict
    # One line per audio content (sha256) found in more than one split.
    shared_audio: tuple[str, ...] = ()
    # Audio-only items (no curves), per split: for a teacher's curves (train.loop.teacher).
    unlabelled: dict[str, list[FileRef]] = dataclasses.field(default_factory=dict)
    # Stored audio variants (bsfeat extract --augment) of the items with targets, by the
    # item's key: whole items, ids "ID [speed:0.9]".
    variants: dict[str, list[FileRef]] = dataclasses.field(default_factory=dict)

    @property
    def channels(self) -> list[str]:
        return list(self.channel_set.channels)

    @property
    def mouth(self) -> list[str]:
        return list(self.channel_set.mouth)

    @property
    def expression(self) -> list[str]:
        return list(self.channel_set.expression)

    def files(self, split: str) -> list[FileRef]:
        files = self.splits.get(split, [])
        if not files:
            have = {k: len(v) for k, v in self.splits.items() if v}
            raise DataError(f"split {split!r} of manifest {self.manifest!r} is empty (splits: {have})")
        return files


def listed_rows(store: FeatureStore, manifest: str | None) -> tuple[str, list[tuple[str, str, str]], dict]:
    """(manifest name, [(key, split, id)] of its stored rows, {key: (id, variants)} of the rows
    with audio variants): the named manifest index, the store's only one, or every item of the
    store split by a stable hash ("<all items>")."""
    try:
        store.check()
    except StoreError as e:
        raise DataError(str(e)) from None
    if manifest is None:
        names = store.index_names()
        if len(names) == 1:
            manifest = names[0]
    if manifest is None:
        keys = store.item_keys()
        if not keys:
            raise DataError(f"{store.root}: no items")
        return "<all items>", [(k, s, k[:12]) for k, s in zip(keys, assign_splits(keys))], {}
    try:
        idx = store.manifest_index(manifest)
    except StoreError as e:
        raise DataError(str(e)) from None
    rows = [(e.key, e.split or "train", e.id) for e in idx.stored_entries]
    if not rows:
        raise DataError(f"manifest {manifest!r} in {store.root} has no stored rows")
    return manifest, rows, {e.key: (e.id, e.variants) for e in idx.stored_entries if e.variants}


def load_training_data(store: FeatureStore, manifest: str | None) -> TrainingData:
    manifest, rows, listed_variants = listed_rows(store, manifest)
    splits: dict[str, list[FileRef]] = {"train": [], "val": [], "test": []}
    first = None
    no_targets: list[tuple[str, str, ItemAttrs]] = []
    audio_splits: dict[str, list[tuple[str, str]]] = {}
    for key, split, rid in rows:
        a = store.complete_attrs(key)
        if a is None:
            raise DataError(f"manifest {manifest!r} lists item {key} ({rid}) that is not in the store")
        if not a.has_targets:
            no_targets.append((rid, split, a))  # audio-only rows: for a teacher's curves, or predict
            continue
        if first is None:
            first = a
        if a.feature_config_hash != first.feature_config_hash:
            raise DataError(
                f"items of {manifest!r} mix feature configs {first.feature_config_hash} and "
                f"{a.feature_config_hash}; name one manifest with --manifest"
            )
        splits.setdefault(split, []).append(FileRef(key, a.frames, rid))
        if a.audio_sha256:
            audio_splits.setdefault(a.audio_sha256, []).append((rid or key[:12], split))
    if first is None:
        raise DataError(
            f"no item of manifest {manifest!r} has targets ({len(no_targets)} audio-only): the store "
            "was made without targets"
        )
    unlabelled: dict[str, list[FileRef]] = {}
    for rid, split, a in no_targets:
        if a.feature_config_hash == first.feature_config_hash:
            unlabelled.setdefault(split, []).append(FileRef(a.key, a.frames, rid))
    if no_targets:
        log.info(
            "manifest %r: %d item(s) without targets (%s%s): trained on only with a teacher (bstrain fit --teacher)",
            manifest,
            len(no_targets),
            ", ".join(rid or a.key for rid, _, a in no_targets[:5]),
            ", ..." if len(no_targets) > 5 else "",
        )
    shared = tuple(
        f"audio {sha[:12]} is in splits {', '.join(sorted({sp for _, sp in uses}))}: "
        + ", ".join(f"{rid} ({sp})" for rid, sp in uses[:6])
        + (", ..." if len(uses) > 6 else "")
        for sha, uses in audio_splits.items()
        if len({sp for _, sp in uses}) > 1
    )
    return TrainingData(
        manifest=manifest,
        splits=splits,
        feature_config=FeatureConfig.from_embedded(first.feature_config),
        feature_config_hash=first.feature_config_hash,
        channel_set=ChannelSet.from_dict(first.channel_set),
        library_versions=first.library_versions,
        shared_audio=shared,
        unlabelled=unlabelled,
        variants=stored_variants(store, manifest, listed_variants, first.feature_config_hash),
    )


def stored_variants(
    store: FeatureStore, manifest: str, listed: dict[str, tuple[str, tuple[tuple[str, str], ...]]], config_hash: str
) -> dict[str, list[FileRef]]:
    """The index's audio variants that are stored whole with curves of the run's feature
    config, by their item's key; one warning for those that are not (they are left out)."""
    out: dict[str, list[FileRef]] = {}
    missing = []
    for key, (rid, variants) in listed.items():
        for name, vkey in variants:
            a = store.complete_attrs(vkey)
            if a is None or not a.has_targets or a.feature_config_hash != config_hash:
                missing.append(f"{name} of {key[:12]}")
                continue
            out.setdefault(key, []).append(FileRef(vkey, a.frames, f"{rid or key[:12]} [{name}]"))
    if missing:
        log.warning(
            "manifest %r lists %d audio variant(s) that are not stored whole (%s%s): left out; run bsfeat "
            "extract --augment again to compute them",
            manifest,
            len(missing),
            ", ".join(missing[:3]),
            ", ..." if len(missing) > 3 else "",
        )
    return out


def check_shared_audio(ds: TrainingData, allow: bool) -> None:
    """Refuse (or, allowed, warn about) audio that is both trained on and validated or tested
    on: its validation scores would measure memory, not skill."""
    if not ds.shared_audio:
        return
    listed = "; ".join(ds.shared_audio[:3]) + (
        f"; ... ({len(ds.shared_audio)} in all)" if len(ds.shared_audio) > 3 else ""
    )
    if not allow:
        raise DataError(
            f"manifest {ds.manifest!r}: the same audio is in more than one split ({listed}); give "
            "each recording one split, or pass --allow-shared-audio"
        )
    log.warning(
        "manifest %r: the same audio is in more than one split (%s); allowed by --allow-shared-audio",
        ds.manifest,
        listed,
    )


def hold_out_tails(files: list[FileRef], fraction: float) -> tuple[list[FileRef], list[FileRef]]:
    """(training ranges, validation tails): the last `fraction` of every file's frames
    (rounded, at least one frame where fraction > 0 and the file has two or more) becomes a
    validation range; training keeps the frames before it. The tail's windows still read the
    audio before it as context, and the training blocks near the cut the audio after it; no
    tail target is ever a training target."""
    train, val = [], []
    for f in files:
        n = min(f.frames - 1, max(1, round(fraction * f.frames))) if fraction > 0 and f.frames >= 2 else 0
        cut = f.start + f.frames - n
        train.append(FileRef(f.key, f.frames - n, f.id, f.start))
        if n:
            val.append(FileRef(f.key, n, f"{f.id} (tail)" if f.id else "", cut))
    return train, val


def variant_ranges(ds: TrainingData, files: list[FileRef]) -> dict[int, list[FileRef]]:
    """{index in files: that file's stored audio variants}, each over the same share of its
    item as the file's range (a range short of its take, the part before a held-out tail,
    keeps its variants short of the tail too: scaled by the variant's length)."""
    whole = {f.key: f.frames for f in ds.splits.get("train", [])}
    out: dict[int, list[FileRef]] = {}
    for i, f in enumerate(files):
        if f.key not in ds.variants or f.key not in whole:
            continue
        refs = []
        for v in ds.variants[f.key]:
            scale = v.frames / whole[f.key]
            start = min(v.frames - 1, round(f.start * scale))
            refs.append(FileRef(v.key, min(v.frames - start, max(1, round(f.frames * scale))), v.id, start))
        out[i] = refs
    return out
