"""Content hashes, library versions and the cache key of a stored item.

The cache key is what makes the store content-addressed: same audio bytes, same target
bytes, same feature config and same extractor versions -> same key -> nothing recomputed.
"""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

from blendsync.shared.config import canonical_json

# Bumped when this package changes how features are computed from the same inputs, so old
# items are not reused for new code.
FEATURE_CODE_VERSION = 1

# Packages whose upgrade can change stored values.
_VERSIONED = ("opensmile", "librosa", "soxr", "soundfile")


def library_versions() -> dict[str, str]:
    out = {"blendsync-features": str(FEATURE_CODE_VERSION)}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def file_sha256(path: str | Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def cache_key(
    *,
    audio_sha256: str,
    targets_sha256: str | None,
    targets_key: str | None,
    targets_fps: float | None,
    feature_config_hash: str,
    versions: dict[str, str],
    targets_order: str | None = None,
) -> str:
    """The item key: hex sha256 (first 32 chars) of everything that determines its arrays.

    targets_key (an array or dataset name inside the file), targets_fps and targets_order
    (from the manifest) change the targets read from the same bytes, so they are part of it;
    targets_order only when given, so keys made before it existed stay the same.
    """
    doc = {
        "audio": audio_sha256,
        "targets": targets_sha256,
        "targets_key": targets_key,
        "targets_fps": targets_fps,
        "feature_config": feature_config_hash,
        "versions": versions,
    }
    if targets_order is not None:
        doc["targets_order"] = targets_order
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()[:32]


def shifted_key(key: str, sync_key_doc: dict, shift_frames: int) -> str:
    """The key of the item --auto-sync makes of item key: its curves shifted by shift_frames
    (decided under the sync settings sync_key_doc). Both versions of a take live in one store."""
    doc = {"item": key, "auto_sync": sync_key_doc, "shift_frames": int(shift_frames)}
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()[:32]
