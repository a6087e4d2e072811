"""One Dask task = one file: featurize it and write its item, on the worker.

Only a small summary travels back to the client, never arrays, so the client's memory
does not grow with the dataset.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from dataclasses import dataclass

from blendsync.featurize.audio_variants import AudioVariant
from blendsync.shared.config import FeatureConfig
from blendsync.shared.featurize_file import FeaturizedFile, featurize_file
from blendsync.shared.store import FeatureStore, ItemProvenance
from blendsync.shared.sync import SyncConfig
from blendsync.shared.targets import TargetSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FileTask:
    """What one worker needs to build one item."""

    key: str
    row: int
    audio: str
    targets: TargetSpec | None
    audio_bytes: int
    provenance: ItemProvenance
    sync: SyncConfig = SyncConfig()
    # An --augment variant of the row's audio (and curves) to store under `key`, else None.
    augment: AudioVariant | None = None


@dataclass(frozen=True, kw_only=True)
class TaskResult:
    key: str
    row: int
    status: str  # "computed" | "exists" | "failed"
    error: str | None = None
    audio_s: float = 0.0
    seconds: float = 0.0
    frames: int = 0
    # The item's stored sync document (shared.sync.StoredSync.from_doc), None when it has
    # none (no targets, or written before the sync check).
    sync: dict | None = None


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def limit_worker_threads() -> None:
    """In a Dask worker process (one file at a time per process), torch's pool goes to 1
    thread for good; BLAS/OpenMP pools are limited per task by run_task. In-process (serial)
    runs leave the caller's torch alone."""
    if _in_dask_worker() and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def run_task(store_root: str, cfg_json: str, task: FileTask, force: bool = False) -> TaskResult:
    """Featurize and store one file with BLAS/OpenMP pools at 1 thread for its duration."""
    from threadpoolctl import threadpool_limits

    limit_worker_threads()
    with threadpool_limits(1):
        return _run_task(store_root, cfg_json, task, force)


def featurize_task(task: FileTask, cfg: FeatureConfig) -> FeaturizedFile:
    """The row's file as featurized, or its --augment variant: the audio decoded at the
    config's rate, changed by the variant (seeded by its key), featurized with its curves
    time-scaled by the variant's speed; info["augment"] names the variant."""
    if task.augment is None:
        return featurize_file(task.audio, task.targets, cfg, sync=task.sync)
    import dataclasses

    from blendsync.shared.audio import decode_audio

    dec = decode_audio(task.audio, cfg.sample_rate, cfg.resampler)
    dec = dataclasses.replace(dec, samples=task.augment.apply(dec.samples, dec.sample_rate, task.key))
    ff = featurize_file(dec, task.targets, cfg, sync=task.sync, speed=task.augment.speed)
    ff.info["augment"] = {"spec": task.augment.name, "steps": task.augment.to_doc()}
    return ff


def _run_task(store_root: str, cfg_json: str, task: FileTask, force: bool) -> TaskResult:
    t0 = time.perf_counter()
    store = FeatureStore(store_root)
    stored = None if force else store.complete_attrs(task.key)
    if stored is not None:
        return TaskResult(
            key=task.key, row=task.row, status="exists", seconds=time.perf_counter() - t0, sync=stored.doc.get("sync")
        )
    from blendsync.featurize.writer import write_item

    cfg = FeatureConfig.from_json(cfg_json)

    def failed(message: str) -> TaskResult:
        return TaskResult(key=task.key, row=task.row, status="failed", error=message, seconds=time.perf_counter() - t0)

    stage = "read"
    try:
        ff = featurize_task(task, cfg)
        stage = "write"
        wrote = write_item(store, task.key, ff, task.provenance, replace=force)
    except ValueError as e:  # AudioError, TargetError: the input's fault, said plainly
        return failed(str(e))
    except OSError as e:
        if stage == "write":  # the store's side: a full disk, a read-only mount, no permission
            return failed(
                f"{task.audio}: cannot write its item to {store.root} ({e.strerror or e}); "
                "nothing half-written was left"
            )
        return failed(f"{task.audio}: cannot read ({e.strerror or e})")
    except Exception as e:  # anything else must not stop the other files
        log.debug("%s: unexpected error\n%s", task.audio, traceback.format_exc())
        return failed(f"{task.audio}: unexpected {type(e).__name__}: {e}")
    return TaskResult(
        key=task.key,
        row=task.row,
        status="computed" if wrote else "exists",
        audio_s=ff.info["audio_duration_s"],
        seconds=time.perf_counter() - t0,
        frames=ff.frames,
        sync=ff.info.get("sync"),  # the same key holds the same arrays: also when another writer was first
    )
