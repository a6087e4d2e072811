"""The feature store: schema, locations and the reader both stages use.

Layout (Zarr v3; a local directory or an fsspec URL such as s3://bucket/features.zarr)::

    features.zarr/
      zarr.json                     root group; attrs: blendsync_store schema version
      items/<key>/                  one group per (audio, targets, feature config)
          mel      (T, n_mels) float32   chunked along time, Blosc-zstd
          emotion  (T, 88)     float32
          targets  (T, C)      float32   (absent for audio without targets)
          zarr.json attrs: provenance + "complete": true (written last)
      manifests/<name>/zarr.json    attrs: the ordered rows a manifest resolved to
      .bsfeat/stat_cache.json       (path, size, mtime) -> sha256, so re-runs skip hashing
      .bsfeat/staging/              local stores only: items being written

A group under items/ without "complete" does not exist for readers. How an item becomes
complete depends on where the store lives:

- local directory (or file://): the item is written in staging and renamed into place, so
  readers never see a half item and two writers of the same key cannot interleave;
- object store (any other fsspec URL): there is no rename, so the item is written in place
  and its group metadata, with "complete", is the last object written. Each object is
  written whole, so a reader sees no item or a whole one; a killed writer leaves an
  incomplete group that readers skip, `verify` reports and the next run rewrites.

Object-store credentials and endpoints come from fsspec's own configuration, which every
process (Dask workers included) reads from its environment: e.g. FSSPEC_S3_ENDPOINT_URL,
or FSSPEC_S3='{"endpoint_url": ...}', plus the usual AWS_* variables for s3fs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import zarr

from blendsync.shared.sync import StoredSync

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STREAMS = ("mel", "emotion", "targets")
# ~2.7 min at 30 fps per chunk: a typical take is one chunk per array (a few large reads).
TIME_CHUNK = 4096


_OWN_NAMES = {"zarr.json", "items", "manifests", ".bsfeat"}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")


class StoreError(ValueError):
    """A store that cannot be used as asked."""


class ItemError(StoreError):
    """One stored item that cannot be read as it was written."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"item {key} {problem}")
        self.key, self.problem = key, problem


# A manifest index is a folder under manifests/: its name must never act as a path.
INDEX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_index_name(name: str) -> str:
    """The name, or StoreError: letters, digits, '.', '_', '-', starting with a letter or
    digit, at most 128 characters (no '/', '\\', '..' or leading dot)."""
    if not isinstance(name, str) or not INDEX_NAME.match(name) or ".." in name:
        raise StoreError(
            f"manifest index name {name!r} is not allowed: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (it names a folder inside the store)"
        )
    return name


def index_name_from(stem: str) -> str:
    """A valid index name from a manifest file's stem: other characters become '_'."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip("._-")[:128].replace("..", "_")
    return name or "manifest"


def is_url(location: str | os.PathLike) -> bool:
    """True for fsspec URLs (s3://, gs://, memory://, file://, chained a::b://)."""
    return bool(_URL.match(os.fspath(location)))


def array_sha256(a: np.ndarray) -> str:
    """Checksum of an array's values as stored (little-endian float32, C order)."""
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class ItemSource:
    """Where an item came from: the manifest row that first asked for it (the key is the
    content, so other rows may share the item)."""

    audio: str
    audio_sha256: str
    targets: str | None
    targets_sha256: str | None
    targets_fps: float | None
    manifest: str
    row: int
    id: str
    targets_order: str | None = None


@dataclass(frozen=True, kw_only=True)
class ItemProvenance:
    """What the planner knows of an item before it is computed: its feature config and
    channel set (as dicts, as stored), the library versions in its key, and its source."""

    feature_config: dict
    feature_config_hash: str
    library_versions: dict
    channel_set: dict
    source: ItemSource

    @classmethod
    def of_config(cls, cfg, source_id: str = "") -> ItemProvenance:
        """For items written from arrays rather than from a manifest row (benchmarks, tools):
        cfg is the FeatureConfig they were computed with."""
        from blendsync.shared.provenance import library_versions

        return cls(
            feature_config=cfg.to_dict(),
            feature_config_hash=cfg.hash,
            library_versions=library_versions(),
            channel_set=cfg.channels.to_dict(),
            source=ItemSource(
                audio="",
                audio_sha256="",
                targets=None,
                targets_sha256=None,
                targets_fps=None,
                manifest="",
                row=0,
                id=source_id,
            ),
        )

    def to_doc(self) -> dict:
        fc = self.feature_config
        return {
            "feature_config": fc,
            "feature_config_hash": self.feature_config_hash,
            "library_versions": self.library_versions,
            "fps": fc.get("fps"),
            "sample_rate": fc.get("sample_rate"),
            "channels": list(self.channel_set.get("channels", [])),
            "channel_set": self.channel_set,
            "source": dataclasses.asdict(self.source),
        }


def item_document(key: str, provenance: ItemProvenance, info: dict, arrays: dict[str, np.ndarray]) -> dict:
    """An item's metadata document (its zarr.json attributes, "complete" apart): provenance
    from the planner, info from featurize_file (durations, counts), and per array its shape
    and checksum. The one place the document is assembled; ItemAttrs reads it."""
    return {
        **provenance.to_doc(),
        **info,
        "key": key,
        "schema_version": SCHEMA_VERSION,
        "checksums": {name: array_sha256(a) for name, a in arrays.items()},
        "shapes": {name: list(a.shape) for name, a in arrays.items()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True, kw_only=True)
class ItemAttrs:
    """A complete item's metadata, typed for readers: what it holds (frames, each array's
    shape and checksum), under which feature config and channel set, from which audio. doc
    is the whole document (provenance counts, timings) for display."""

    key: str
    frames: int
    shapes: dict[str, tuple[int, ...]]
    checksums: dict[str, str]
    feature_config: dict
    feature_config_hash: str
    channel_set: dict
    library_versions: dict
    audio_duration_s: float
    audio_sha256: str | None
    doc: dict

    @classmethod
    def from_doc(cls, key: str, doc: dict) -> ItemAttrs:
        return cls(
            key=key,
            frames=int(doc.get("frames", 0)),
            shapes={k: tuple(v) for k, v in (doc.get("shapes") or {}).items()},
            checksums=dict(doc.get("checksums") or {}),
            feature_config=doc.get("feature_config") or {},
            feature_config_hash=doc.get("feature_config_hash", ""),
            channel_set=doc.get("channel_set") or {},
            library_versions=doc.get("library_versions") or {},
            audio_duration_s=float(doc.get("audio_duration_s", 0.0)),
            audio_sha256=(doc.get("source") or {}).get("audio_sha256"),
            doc=doc,
        )

    @property
    def has_targets(self) -> bool:
        return "targets" in self.checksums

    @property
    def channels(self) -> list[str]:
        return list(self.channel_set.get("channels", self.doc.get("channels", [])))

    @property
    def sync(self) -> StoredSync | None:
        """The item's audio/curve sync, or None: no targets, or an item written before the sync
        check (bsfeat info estimates those from the arrays)."""
        d = self.doc.get("sync")
        return None if not isinstance(d, dict) else StoredSync.from_doc(d, float(self.feature_config.get("fps", 30.0)))

    @property
    def manifest(self) -> str | None:
        """The manifest the item was computed from (what a repair re-runs)."""
        return (self.doc.get("source") or {}).get("manifest") or None

    @property
    def arrays(self) -> list[str]:
        """The arrays it holds, in STREAMS order."""
        return [n for n in STREAMS if n in self.shapes]


@dataclass(frozen=True, kw_only=True)
class IndexEntry:
    """One manifest row as its index records it: stored (key: its item) or failed (key None,
    error: why), with the row's id, files, split and speaker."""

    row: int
    key: str | None
    status: str
    id: str = ""
    audio: str | None = None
    targets: str | None = None
    split: str | None = None
    speaker: str | None = None
    error: str | None = None
    # bsfeat extract --augment: (variant, item key) of the row's stored audio variants.
    variants: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_doc(cls, d: dict) -> IndexEntry:
        return cls(
            row=int(d.get("row", 0)),
            key=d.get("key"),
            status=d.get("status", "stored" if d.get("key") else "failed"),
            id=d.get("id") or "",
            audio=d.get("audio"),
            targets=d.get("targets"),
            split=d.get("split"),
            speaker=d.get("speaker"),
            error=d.get("error"),
            variants=tuple((str(name), str(key)) for name, key in d.get("variants") or ()),
        )

    def to_doc(self) -> dict:
        """The entry's document; an entry without variants has no such field (as indexes
        written before variants existed)."""
        doc = {k: v for k, v in dataclasses.asdict(self).items() if k != "error" or v is not None}
        if not self.variants:
            del doc["variants"]
        else:
            doc["variants"] = [list(v) for v in self.variants]
        return doc


@dataclass(frozen=True, kw_only=True)
class ManifestIndex:
    """What a manifest resolved to in a store (manifests/<name>/zarr.json): its rows in
    order, the feature config they were computed with, and counts."""

    entries: tuple[IndexEntry, ...]
    source: str
    feature_config_hash: str
    feature_config: dict
    rows: int
    stored: int
    failed_rows: tuple[int, ...]

    @classmethod
    def from_doc(cls, d: dict) -> ManifestIndex:
        return cls(
            entries=tuple(IndexEntry.from_doc(e) for e in d.get("entries", [])),
            source=d.get("source", ""),
            feature_config_hash=d.get("feature_config_hash", ""),
            feature_config=d.get("feature_config") or {},
            rows=int(d.get("rows", 0)),
            stored=int(d.get("stored", 0)),
            failed_rows=tuple(d.get("failed_rows", [])),
        )

    def to_doc(self) -> dict:
        return {
            "entries": [e.to_doc() for e in self.entries],
            "source": self.source,
            "feature_config_hash": self.feature_config_hash,
            "feature_config": self.feature_config,
            "rows": self.rows,
            "stored": self.stored,
            "failed_rows": list(self.failed_rows),
        }

    @property
    def stored_entries(self) -> list[IndexEntry]:
        return [e for e in self.entries if e.key]


@dataclass(frozen=True, kw_only=True)
class StoredItem:
    """mel (T, n_mels), emotion (T, 88), targets (T, C) or None, all float32; attrs."""

    key: str
    mel: np.ndarray
    emotion: np.ndarray
    targets: np.ndarray | None
    attrs: ItemAttrs


class FeatureStore:
    """A feature store at a local path or an fsspec URL.

    `root` is what messages name (a Path for local stores, the URL otherwise); `location`
    is what another process needs to open the same store (absolute path or URL).
    """

    def __init__(self, root: str | os.PathLike):
        text = os.fspath(root)
        if text.startswith("file://"):
            text = text[len("file://") :]
        self.is_local = not is_url(text)
        if self.is_local:
            self.fs = None
            self._base = ""
            self.root: Path | str = Path(text)
            self.location = str(Path(text).absolute())
        else:
            import fsspec

            try:
                self.fs, base = fsspec.core.url_to_fs(text)
            except (ImportError, ValueError) as e:
                raise StoreError(f"{text}: cannot open this URL ({e})") from e
            self._base = base.rstrip("/")
            self.root = self.location = text.rstrip("/")

    def __repr__(self) -> str:
        return f"FeatureStore({self.location!r})"

    def repair_command(self, manifest: str | None = None) -> str:
        """The command that recomputes a manifest's damaged items (bsfeat extract --repair)."""
        return f"bsfeat extract {manifest or 'MANIFEST'} --store {self.root} --repair"

    # -- local paths (rename commits, staging) ---------------------------------------------
    def _local(self) -> Path:
        if not self.is_local:
            raise StoreError(f"{self.root}: an object store has no local directory")
        return self.root  # type: ignore[return-value]

    @property
    def items_dir(self) -> Path:
        return self._local() / "items"

    @property
    def manifests_dir(self) -> Path:
        return self._local() / "manifests"

    @property
    def meta_dir(self) -> Path:
        return self._local() / ".bsfeat"

    @property
    def staging_dir(self) -> Path:
        return self.meta_dir / "staging"

    def item_path(self, key: str) -> Path:
        return self.items_dir / key

    # -- storage primitives: one branch per kind of location ------------------------------
    def _fs_path(self, rel: str) -> str:
        return f"{self._base}/{rel}" if rel else self._base

    def zarr_location(self, rel: str = "") -> str:
        """What zarr.open_group needs for a node of this store (path or URL)."""
        if self.is_local:
            return str(self._local() / rel) if rel else str(self._local())
        return f"{self.location}/{rel}" if rel else self.location

    def read_bytes(self, rel: str) -> bytes | None:
        """A whole object/file under the store, or None when it does not exist."""
        if self.is_local:
            try:
                return (self._local() / rel).read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
        try:
            return self.fs.cat_file(self._fs_path(rel))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace one file/object whole: a reader sees the old or the new content."""
        if self.is_local:
            path = self._local() / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from the store's other readers
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:  # a full disk: no temporary file left behind
                Path(tmp).unlink(missing_ok=True)
                raise
        else:
            self.fs.pipe_file(self._fs_path(rel), data)

    def list_names(self, rel: str) -> list[str]:
        """Names directly under a folder/prefix of the store (fresh, never a cached listing)."""
        if self.is_local:
            d = self._local() / rel
            return sorted(p.name for p in d.iterdir()) if d.is_dir() else []
        path = self._fs_path(rel)
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries})

    def _read_json(self, rel: str) -> dict | None:
        raw = self.read_bytes(rel)
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return doc if isinstance(doc, dict) else None

    # -- opening -------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.read_bytes("zarr.json") is not None

    def check(self) -> None:
        """Raise StoreError unless root is a blendsync store of a schema this code reads."""
        try:
            doc = self._read_json("zarr.json")
        except OSError as e:
            raise StoreError(f"{self.root}: cannot read the store ({type(e).__name__}: {e})") from e
        if doc is None:
            raise StoreError(f"{self.root}: not a feature store (no zarr.json)")
        version = doc.get("attributes", {}).get("blendsync_store")
        if version is None:
            raise StoreError(f"{self.root}: a Zarr group, but not a blendsync feature store")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.root}: store schema version {version}, this blendsync reads {SCHEMA_VERSION}")

    def init(self) -> None:
        """Create the root, items and manifests groups (idempotent; safe to race: each
        zarr.json is written whole, attributes included, in one atomic write)."""
        try:
            self._init()
        except OSError as e:  # no such bucket, no credentials, read-only mount...
            raise StoreError(f"{self.root}: cannot create or open the store ({type(e).__name__}: {e})") from e

    def _init(self) -> None:
        if self.is_local:
            root = self._local()
            if root.exists() and not root.is_dir():
                raise StoreError(f"{root}: exists and is not a directory")
        if not self.exists():
            foreign = [n for n in self.list_names("") if n not in _OWN_NAMES]
            if foreign:
                raise StoreError(f"{self.root}: not empty and not a feature store ({foreign[:3]})")
            self._create_group("", {"blendsync_store": SCHEMA_VERSION})
        self.check()
        for rel in ("items", "manifests"):
            if self.read_bytes(f"{rel}/zarr.json") is None:
                self._create_group(rel, {})
        if self.is_local:
            self.staging_dir.mkdir(parents=True, exist_ok=True)

    def _create_group(self, rel: str, attrs: dict) -> None:
        from zarr.errors import ContainsGroupError

        try:
            zarr.create_group(self.zarr_location(rel), attributes=attrs, overwrite=False)
        except ContainsGroupError:
            pass  # another process made it first

    # -- items ---------------------------------------------------------------------------
    def _item_docs(self) -> dict[str, dict | None]:
        """Every group under items/ -> its metadata document (None when unreadable)."""
        names = [n for n in self.list_names("items") if n != "zarr.json"]
        if self.is_local or not names:
            return {n: self._read_json(f"items/{n}/zarr.json") for n in names}
        # One concurrent batch of GETs instead of one round trip per item.
        paths = {self._fs_path(f"items/{n}/zarr.json"): n for n in names}
        raw = self.fs.cat(list(paths), on_error="return")
        docs: dict[str, dict | None] = {n: None for n in names}
        for p, data in raw.items():
            if isinstance(data, bytes):
                try:
                    doc = json.loads(data)
                    docs[paths[p]] = doc if isinstance(doc, dict) else None
                except (json.JSONDecodeError, UnicodeDecodeError):
                    pass
        return docs

    @staticmethod
    def _complete(key: str, doc: dict | None) -> ItemAttrs | None:
        """A complete item's attrs, else None."""
        attrs = doc.get("attributes", {}) if doc else {}
        return ItemAttrs.from_doc(key, attrs) if attrs.get("complete") else None

    def items_by_state(self) -> tuple[dict[str, ItemAttrs], list[str]]:
        """({key: attrs} of complete items, sorted incomplete keys) from one pass over items/
        (one batch of reads on an object store)."""
        complete, incomplete = {}, []
        for key, doc in sorted(self._item_docs().items()):
            attrs = self._complete(key, doc)
            if attrs is None:
                incomplete.append(key)
            else:
                complete[key] = attrs
        return complete, incomplete

    def item_keys(self) -> list[str]:
        """Keys of complete items, sorted."""
        return list(self.items_by_state()[0])

    def incomplete_keys(self) -> list[str]:
        return self.items_by_state()[1]

    def complete_attrs(self, key: str) -> ItemAttrs | None:
        """A complete item's attrs (one read), or None when it is missing or incomplete."""
        return self._complete(key, self._read_json(f"items/{key}/zarr.json"))

    def is_complete(self, key: str) -> bool:
        return self.complete_attrs(key) is not None

    def item_attrs(self, key: str) -> ItemAttrs:
        attrs = self.complete_attrs(key)
        if attrs is None:
            raise KeyError(f"{self.root}: no complete item {key}")
        return attrs

    def read_item(self, key: str, *, verify: bool = True) -> StoredItem:
        """Read one item whole and check it against its checksums: per array, its metadata and
        one read per chunk (a take is usually one chunk). The item's attrs name its arrays, so
        nothing is listed or probed: on an object store every request is a round trip.

        A deleted chunk reads back as fill values and an item rewritten under a reader (an
        object store has no atomic swap) as a mix of two versions; neither may reach training,
        so a mismatch, or a chunk that does not decode, raises ItemError naming the key. The
        check costs about 1 ms per MB (benchmarks/bench_verified_reads.py). verify=False is
        for `bsfeat verify`, which reports each array's problem itself."""
        attrs = self.item_attrs(key)
        names = attrs.arrays
        if not names:
            raise ItemError(
                key,
                f"records no array shapes (written by an older blendsync): run {self.repair_command(attrs.manifest)} "
                "to rewrite it",
            )
        arrays = {}
        for n in names:
            try:
                arrays[n] = zarr.open_array(self.zarr_location(f"items/{key}/{n}"), mode="r", zarr_format=3)[...]
            except FileNotFoundError as e:
                raise ItemError(key, f"array {n!r} is missing ({e})") from None
            except Exception as e:  # a damaged chunk: the codec's own error (blosc, zstd, json)
                raise ItemError(key, f"array {n!r} is unreadable ({type(e).__name__}: {e})") from None
        sums = attrs.checksums
        bad = [n for n in names if verify and (n not in sums or array_sha256(arrays[n]) != sums[n])]
        if bad:
            raise ItemError(
                key,
                f"does not match its checksums ({', '.join(bad)}): a chunk is missing or "
                f"damaged, or it was being rewritten while read; run {self.repair_command(attrs.manifest)} "
                "to recompute it",
            )
        return StoredItem(
            key=key, mel=arrays["mel"], emotion=arrays["emotion"], targets=arrays.get("targets"), attrs=attrs
        )

    def iter_items(self) -> Iterator[StoredItem]:
        yield from self.read_items(self.item_keys())

    def read_items(self, keys: list[str], ahead: int = 4) -> Iterator[StoredItem]:
        """read_item for each key, in order, with up to `ahead` reads in flight on threads:
        on an object store a read is mostly waiting on round trips. At most `ahead` items
        are held beyond the one the caller has."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        if ahead <= 1 or len(keys) <= 1:
            for key in keys:
                yield self.read_item(key)
            return
        pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="bs-read")
        try:
            todo, flight = iter(keys), deque()
            for key in todo:
                flight.append(pool.submit(self.read_item, key))
                if len(flight) >= ahead:
                    break
            while flight:
                item = flight.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    flight.append(pool.submit(self.read_item, nxt))
                yield item
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- manifests -----------------------------------------------------------------------
    def index_names(self) -> list[str]:
        return [
            n
            for n in self.list_names("manifests")
            if n != "zarr.json" and self.read_bytes(f"manifests/{n}/zarr.json") is not None
        ]

    def manifest_index(self, name: str) -> ManifestIndex:
        """The index typed (read_index: the document as stored)."""
        return ManifestIndex.from_doc(self.read_index(name))

    def read_index(self, name: str) -> dict:
        """{"entries": [...ordered rows...], "feature_config_hash": ..., ...}."""
        check_index_name(name)
        rel = f"manifests/{name}/zarr.json"
        doc = self._read_json(rel)
        if doc is None and self.read_bytes(rel) is not None:
            raise StoreError(
                f"{self.root}: manifest index {name!r} is unreadable ({rel} is not valid JSON); "
                "bsfeat extract with that manifest rewrites it"
            )
        if doc is None:
            raise StoreError(f"{self.root}: no manifest {name!r} (has {self.index_names() or 'none'})")
        return doc["attributes"]

    def write_index(self, name: str, attrs: dict) -> None:
        """Replace a manifest index in one atomic write (zarr writes zarr.json through a
        temporary file and a rename locally, as one PUT on object stores), so a concurrent
        reader sees the old or the new one."""
        check_index_name(name)
        rel = f"manifests/{name}/zarr.json"
        if self._read_json(rel) is None and self.read_bytes(rel) is not None:
            log.warning("%s: manifest index %r was unreadable (not valid JSON): rewriting it", self.root, name)
            if self.is_local:
                (self._local() / rel).unlink()
            else:
                self.fs.rm(self._fs_path(rel))
        from zarr.errors import ContainsGroupError

        location = self.zarr_location(f"manifests/{name}")
        try:
            g = zarr.open_group(location, mode="a")
        except ContainsGroupError:  # another run created it between zarr's look and its create
            g = zarr.open_group(location, mode="r+")
        g.attrs.put(attrs)

    def bytes_on_disk(self) -> int:
        if self.is_local:
            return sum(p.stat().st_size for p in self._local().rglob("*") if p.is_file())
        self.fs.invalidate_cache(self._base)
        return int(self.fs.du(self._base, total=True))
