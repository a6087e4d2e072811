"""(path, size, mtime) -> sha256, so a re-run does not re-read unchanged audio.

Saved as one JSON file replaced atomically; concurrent runs merge what they learnt, and a
lost entry only costs one re-hash.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from blendsync.shared.provenance import file_sha256


class StatCache:
    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, list] = self._load()
        self.hits = 0
        self.misses = 0

    def _load(self) -> dict[str, list]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

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
        merged = {**self._load(), **self.entries}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".stat_cache.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(merged, f)
        os.replace(tmp, self.path)
