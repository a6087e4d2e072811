"""(path, size, mtime) -> sha256, so a re-run does not re-read unchanged audio.

Saved in the store (.bsfeat/stat_cache.json) as one file/object replaced whole; concurrent
runs merge what they learnt, and a lost entry only costs one re-hash.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from blendsync.shared.provenance import file_sha256
from blendsync.shared.store import FeatureStore

CACHE_NAME = ".bsfeat/stat_cache.json"

log = logging.getLogger(__name__)


class StatCache:
    def __init__(self, store: FeatureStore):
        self.store = store
        self.entries: dict[str, list] = self._load()
        self.hits = 0
        self.misses = 0

    def _load(self) -> dict[str, list]:
        raw = self.store.read_bytes(CACHE_NAME)
        try:
            data = json.loads(raw) if raw is not None else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def sha256(self, path: Path) -> str:
        p = str(Path(path).resolve())
        st = os.stat(p)
        hit = self.entries.get(p)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            self.hits += 1
            return hit[2]
        self.misses += 1
        digest = file_sha256(p)
        self.entries[p] = [st.st_size, st.st_mtime_ns, digest]
        return digest

    def save(self) -> None:
        """Write what this run learnt (nothing when every file was a hit: a re-run on a
        read-only store writes nothing). The cache only saves time, so a failed write (a full
        disk, a read-only mount) is a warning; the next run hashes those files again."""
        if not self.misses:
            return
        merged = {**self._load(), **self.entries}
        try:
            self.store.write_bytes(CACHE_NAME, json.dumps(merged).encode())
        except OSError as e:
            log.warning(
                "%s: could not save the file-hash cache (%s); the next run hashes %d file(s) again",
                self.store.root,
                e.strerror or e,
                self.misses,
            )
