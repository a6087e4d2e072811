"""Write one featurized file as a store item, completion marker last.

Local stores: each item is written by one task into a staging directory of its own; the
rename into items/<key> is the commit. A crash leaves only staging debris (swept by the next
run), and a second writer of the same key finds the item in place and drops its copy.
Object stores (fsspec URLs) cannot rename: see _write_in_place.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import uuid

import zarr
from zarr.codecs import BloscCodec

from blendsync.shared.featurize_file import FeaturizedFile
from blendsync.shared.store import TIME_CHUNK, FeatureStore, ItemProvenance, item_document

log = logging.getLogger(__name__)

# Staging names are key~host~pid~nonce; "~" appears in neither keys nor host names.
STAGE_SEP = "~"
COMPRESSOR = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def write_item(
    store: FeatureStore, key: str, ff: FeaturizedFile, provenance: ItemProvenance, *, replace: bool = False
) -> bool:
    """Store ff under key. Returns False when another writer stored the key first.

    replace=True (bsfeat --force) swaps a complete item for the new one. In a local store the
    old one is moved aside first and deleted only after the new one is in place; in an
    object store it is hidden (marker cleared) and rewritten in place.
    """
    if store.is_complete(key) and not replace:
        return False
    if not store.is_local:
        return _write_in_place(store, key, ff, provenance, replace)
    stage = store.staging_dir / STAGE_SEP.join((key, socket.gethostname(), str(os.getpid()), uuid.uuid4().hex[:8]))
    try:
        _fill_group(zarr.open_group(str(stage), mode="w"), key, ff, provenance)
        target = store.item_path(key)
        if replace and store.is_complete(key):
            aside = stage.with_name(stage.name + "~old")
            os.rename(target, aside)
            os.rename(stage, target)
            shutil.rmtree(aside, ignore_errors=True)
            return True
        if target.exists() and not store.is_complete(key):
            # A group under the key without its completion marker (an interrupted copy): readers skip it; replace it.
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(stage, target)
        except OSError:
            if store.is_complete(key):
                return False
            raise
        return True
    finally:
        _remove(stage)


def _remove(stage) -> None:
    """Remove a staging directory. After a failed write (a full disk) Zarr's other chunk
    writes may still be landing in it for a moment, so retry until it stays gone."""
    for _ in range(20):
        if not stage.exists():
            return
        shutil.rmtree(stage, ignore_errors=True)
        time.sleep(0.02)  # then look again: a late chunk write recreates its folders
    log.warning("%s: could not remove this staging directory; the next run removes it", stage)


def _write_in_place(
    store: FeatureStore, key: str, ff: FeaturizedFile, provenance: ItemProvenance, replace: bool
) -> bool:
    """Object stores have no rename: write the item where it lives, marker last.

    mode="w" first removes whatever a killed writer left under the key. A complete item is
    hidden (marker cleared) before anything under it is removed, so readers skip it rather
    than read a half-removed one. Not covered: two runs at once on one bucket that both find
    a key missing; the second may clear the first's item while a reader is reading it. Keys
    are content hashes, so both write the same arrays, and one Dask run never schedules a
    key twice.
    """
    location = store.zarr_location(f"items/{key}")
    if store.is_complete(key):  # --force, or another run finished it a moment ago
        zarr.open_group(location, mode="r+").attrs.update({"complete": False})
    _fill_group(zarr.open_group(location, mode="w"), key, ff, provenance)
    return True


def _fill_group(g: zarr.Group, key: str, ff: FeaturizedFile, provenance: ItemProvenance) -> None:
    """Arrays first, then the item's document (store.item_document), then the completion
    marker in its own metadata write."""
    for name, arr in ff.arrays().items():
        g.create_array(
            name,
            data=arr,
            chunks=(min(TIME_CHUNK, max(1, arr.shape[0])), arr.shape[1]),
            compressors=COMPRESSOR,
            dimension_names=("frame", "channel"),
        )
    g.attrs.put(item_document(key, provenance, ff.info, ff.arrays()))
    g.attrs.update({"complete": True})


def sweep_staging(store: FeatureStore) -> int:
    """Remove staging directories of writers on this host that no longer run."""
    if not store.is_local or not store.staging_dir.is_dir():
        return 0
    host = socket.gethostname()
    removed = 0
    for d in store.staging_dir.iterdir():
        parts = d.name.split(STAGE_SEP)
        if len(parts) != 4 or parts[1] != host:
            continue
        try:
            pid = int(parts[2])
        except ValueError:
            continue
        if not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    """A process that can still write: a zombie (killed, not yet reaped: its parent died with
    it and the reaper has not come by) writes nothing more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: the signal's answer stands
    return state not in ("Z", "X")
