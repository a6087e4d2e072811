"""The feature store: schema, paths and the reader both stages use.

Layout (Zarr v3, local directory)::

    features.zarr/
      zarr.json                     root group; attrs: blendsync_store schema version
      items/<key>/                  one group per (audio, targets, feature config)
          mel      (T, n_mels) float32   chunked along time, Blosc-zstd
          emotion  (T, 88)     float32
          targets  (T, C)      float32   (absent for audio without targets)
          zarr.json attrs: provenance + "complete": true (written last)
      manifests/<name>/zarr.json    attrs: the ordered rows a manifest resolved to
      .bsfeat/stat_cache.json       (path, size, mtime) -> sha256, so re-runs skip hashing
      .bsfeat/staging/              items being written; renamed into items/ when complete

A group under items/ without "complete" does not exist for readers. Items are written in
staging and renamed into place, so readers never see a half item and two writers of the
same key cannot interleave.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import zarr

SCHEMA_VERSION = 1
STREAMS = ("mel", "emotion", "targets")
# ~2.7 min at 30 fps per chunk: a typical take is one chunk per array (a few large reads).
TIME_CHUNK = 4096


_OWN_NAMES = {"zarr.json", "items", "manifests", ".bsfeat"}


class StoreError(ValueError):
    """A store that cannot be used as asked."""


def array_sha256(a: np.ndarray) -> str:
    """Checksum of an array's values as stored (little-endian float32, C order)."""
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f4").tobytes()).hexdigest()


@dataclass(frozen=True)
class StoredItem:
    """mel (T, n_mels), emotion (T, 88), targets (T, C) or None, all float32; attrs."""

    key: str
    mel: np.ndarray
    emotion: np.ndarray
    targets: np.ndarray | None
    attrs: dict


class FeatureStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------------
    @property
    def items_dir(self) -> Path:
        return self.root / "items"

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    @property
    def meta_dir(self) -> Path:
        return self.root / ".bsfeat"

    @property
    def staging_dir(self) -> Path:
        return self.meta_dir / "staging"

    def item_path(self, key: str) -> Path:
        return self.items_dir / key

    # -- opening -------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.root / "zarr.json").is_file()

    def check(self) -> None:
        """Raise StoreError unless root is a blendsync store of a schema this code reads."""
        if not self.exists():
            raise StoreError(f"{self.root}: not a feature store (no zarr.json)")
        attrs = zarr.open_group(str(self.root), mode="r").attrs.asdict()
        version = attrs.get("blendsync_store")
        if version is None:
            raise StoreError(f"{self.root}: a Zarr group, but not a blendsync feature store")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.root}: store schema version {version}, this blendsync reads {SCHEMA_VERSION}"
            )

    def init(self) -> None:
        """Create the root, items and manifests groups (idempotent; safe to race: each
        zarr.json is written whole, attributes included, in one atomic write)."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root}: exists and is not a directory")
        if not self.exists():
            foreign = (
                sorted(p.name for p in self.root.iterdir() if p.name not in _OWN_NAMES)
                if self.root.is_dir() else []
            )
            if foreign:
                raise StoreError(
                    f"{self.root}: directory is not empty and not a feature store ({foreign[:3]})"
                )
            self._create_group(self.root, {"blendsync_store": SCHEMA_VERSION})
        self.check()
        for d in (self.items_dir, self.manifests_dir):
            if not (d / "zarr.json").is_file():
                self._create_group(d, {})
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _create_group(path: Path, attrs: dict) -> None:
        from zarr.errors import ContainsGroupError

        try:
            zarr.create_group(str(path), attributes=attrs, overwrite=False)
        except ContainsGroupError:
            pass  # another process made it first

    # -- items ---------------------------------------------------------------------------
    def item_keys(self) -> list[str]:
        """Keys of complete items, sorted."""
        if not self.items_dir.is_dir():
            return []
        return sorted(p.name for p in self.items_dir.iterdir() if self.is_complete(p.name))

    def incomplete_keys(self) -> list[str]:
        if not self.items_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.items_dir.iterdir() if p.is_dir() and not self.is_complete(p.name)
        )

    def is_complete(self, key: str) -> bool:
        meta = self.item_path(key) / "zarr.json"
        try:
            doc = json.loads(meta.read_text())
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            return False
        return bool(doc.get("attributes", {}).get("complete"))

    def item_attrs(self, key: str) -> dict:
        if not self.is_complete(key):
            raise KeyError(f"{self.root}: no complete item {key}")
        doc = json.loads((self.item_path(key) / "zarr.json").read_text())
        return doc["attributes"]

    def read_item(self, key: str) -> StoredItem:
        """Read one item whole: one read per array chunk (a take is usually one chunk)."""
        attrs = self.item_attrs(key)
        g = zarr.open_group(str(self.item_path(key)), mode="r")
        arrays = {name: g[name][...] for name in STREAMS if name in g}
        return StoredItem(key, arrays["mel"], arrays["emotion"], arrays.get("targets"), attrs)

    def iter_items(self) -> Iterator[StoredItem]:
        for key in self.item_keys():
            yield self.read_item(key)

    # -- manifests -----------------------------------------------------------------------
    def manifest_names(self) -> list[str]:
        if not self.manifests_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.manifests_dir.iterdir() if (p / "zarr.json").is_file()
        )

    def read_manifest(self, name: str) -> dict:
        """{"entries": [...ordered rows...], "feature_config_hash": ..., ...}."""
        path = self.manifests_dir / name / "zarr.json"
        if not path.is_file():
            raise StoreError(
                f"{self.root}: no manifest {name!r} (has {self.manifest_names() or 'none'})"
            )
        return json.loads(path.read_text())["attributes"]

    def write_manifest(self, name: str, attrs: dict) -> None:
        """Replace a manifest index in one atomic file write (zarr writes zarr.json through
        a temporary file and a rename), so a concurrent reader sees the old or the new one."""
        g = zarr.open_group(str(self.manifests_dir / name), mode="a")
        g.attrs.put(attrs)

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
