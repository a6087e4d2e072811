"""bsfeat extract as a library call: validate, plan, compute what is missing, index.

The plan is pure bookkeeping (content hashes via the stat cache -> cache keys -> what the
store already has); only files whose key is missing become tasks, so a re-run with
nothing to do starts no cluster.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from blendsync.featurize.audio_variants import AudioVariant, variant_key
from blendsync.featurize.executors import DaskExecutor, SerialExecutor
from blendsync.featurize.inspect_store import item_problems
from blendsync.featurize.stat_cache import StatCache
from blendsync.featurize.task import FileTask, TaskResult
from blendsync.featurize.writer import sweep_staging, write_item
from blendsync.shared.config import FeatureConfig
from blendsync.shared.featurize_file import FeaturizedFile
from blendsync.shared.manifest import Manifest, ManifestError, ManifestRow, RowProblem, read_manifest
from blendsync.shared.provenance import cache_key, library_versions, shifted_key
from blendsync.shared.store import (
    FeatureStore,
    IndexEntry,
    ItemProvenance,
    ItemSource,
    ManifestIndex,
    StoreError,
    check_index_name,
    index_name_from,
)
from blendsync.shared.sync import StoredSync, SyncConfig, SyncEstimate, shift_targets

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ExtractReport:
    manifest: Path
    index_name: str
    rows: int = 0
    stored: int = 0
    cached: int = 0
    computed: int = 0
    failed: list[str] = field(default_factory=list)
    audio_s: float = 0.0
    tasks: int = 0
    # Files whose bytes were read to hash them (0 on a re-run over unchanged files).
    hashed_files: int = 0
    started_cluster: bool = False
    seconds: float = 0.0
    keys: list[str] = field(default_factory=list)
    # One line per audio content found in more than one split (train vs val/test).
    shared_audio: list[str] = field(default_factory=list)
    # Why the manifest index could not be written (a read-only or full store), else None.
    index_error: str | None = None
    # One line per stored take whose curves are confidently out of sync with its audio
    # (|lag| > the tolerance), saying whether --auto-sync shifted them.
    out_of_sync: list[str] = field(default_factory=list)
    shifted: int = 0
    # --auto-sync: the lead the takes out of sync were shifted to (usual_lead), else None.
    usual_lead_frames: int | None = None
    # Why no take's sync could be checked (a channel set without mouth-opening channels), else None.
    sync_warning: str | None = None
    # --repair: stored items that failed their check ("KEY (row N): problems"), recomputed.
    repaired: list[str] = field(default_factory=list)
    # --augment: variants of the training rows with curves stored (computed now or before).
    variants_stored: int = 0
    variants_computed: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and self.stored == self.rows and self.index_error is None


@dataclass(frozen=True)
class PlannedRow:
    row: ManifestRow
    key: str
    task: FileTask


# Below this much audio to compute (about 2 s of work on one core at 72x real time) a run is
# over before a local cluster has started: run it in this process.
SERIAL_BELOW_AUDIO_S = 120.0


def _auto_executor(tasks: list[FileTask]) -> str:
    import soundfile as sf

    total = 0.0
    for t in tasks:
        try:
            total += sf.info(t.audio).duration
        except Exception:  # a container soundfile cannot size: assume the work is large
            return "dask"
        if total >= SERIAL_BELOW_AUDIO_S:
            return "dask"
    if tasks:
        log.info("%.0f s of audio to compute: running in this process (a cluster would take longer to start)", total)
    return "serial"


def shared_audio_across_splits(planned: list[PlannedRow]) -> list[str]:
    """The same audio bytes (content hash) under rows of different splits: a model validated
    or tested on audio it trained on scores better than it is. One line per such audio."""
    by_audio: dict[str, list[ManifestRow]] = {}
    for p in planned:
        by_audio.setdefault(p.task.provenance.source.audio_sha256, []).append(p.row)
    out = []
    for sha, rows in by_audio.items():
        if len({r.split for r in rows}) > 1:
            listed = ", ".join(f"row {r.row} ({r.id}, {r.split})" for r in rows[:6])
            out.append(
                f"the same audio (sha256 {sha[:12]}) is in more than one split: {listed}"
                f"{', ...' if len(rows) > 6 else ''}; bstrain fit refuses this unless --allow-shared-audio"
            )
    return out


def plan_rows(
    manifest: Manifest, cfg: FeatureConfig, stat: StatCache, sync: SyncConfig = SyncConfig()
) -> tuple[list[PlannedRow], list[RowProblem]]:
    """Content-hash every valid row and give it its cache key and the task that builds it."""
    versions = library_versions()
    fhash = cfg.hash
    planned, problems = [], []
    for r in manifest.rows:
        try:
            audio_sha = stat.sha256(r.audio)
            tsha = stat.sha256(r.targets.path) if r.targets else None
        except OSError as e:
            problems.append(
                RowProblem(
                    manifest=manifest.path, row=r.row, line=r.line, file=str(r.audio), message=f"cannot read: {e}"
                )
            )
            continue
        key = cache_key(
            audio_sha256=audio_sha,
            targets_sha256=tsha,
            targets_key=r.targets.key if r.targets else None,
            targets_fps=r.targets.fps if r.targets else None,
            targets_order=r.targets.order if r.targets else None,
            feature_config_hash=fhash,
            versions=versions,
        )
        provenance = ItemProvenance(
            feature_config=cfg.to_dict(),
            feature_config_hash=fhash,
            library_versions=versions,
            channel_set=cfg.channels.to_dict(),
            source=ItemSource(
                audio=str(r.audio),
                audio_sha256=audio_sha,
                targets=r.targets.describe() if r.targets else None,
                targets_sha256=tsha,
                targets_fps=r.targets.fps if r.targets else None,
                manifest=str(manifest.path.resolve()),
                row=r.row,
                id=r.id,
                targets_order=r.targets.order if r.targets else None,
            ),
        )
        task = FileTask(
            key=key,
            row=r.row,
            audio=str(r.audio),
            targets=r.targets,
            audio_bytes=r.audio.stat().st_size,
            provenance=provenance,
            sync=sync,
        )
        planned.append(PlannedRow(r, key, task))
    return planned, problems


@dataclass(kw_only=True)
class ExtractPlan:
    """What a run will do: every valid row with its key (planned), the tasks to compute (one
    per missing key), the keys already stored (status "exists") and the rows' problems."""

    planned: list[PlannedRow]
    tasks: list[FileTask]
    status: dict[str, TaskResult]
    cached_audio_s: float
    problems: list[RowProblem]
    # --augment: one PlannedRow per variant of a training row with curves (its key and task).
    variants: list[PlannedRow] = field(default_factory=list)


def extract(
    manifest_path: str | Path,
    store_path: str | Path,
    cfg: FeatureConfig,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    executor: str = "auto",
    force: bool = False,
    index_name: str | None = None,
    on_plan: Callable[[int, int, float], None] | None = None,
    on_result: Callable[[TaskResult], None] | None = None,
    sync: SyncConfig = SyncConfig(),
    auto_sync: bool = False,
    repair: bool = False,
    augment: tuple[AudioVariant, ...] = (),
) -> ExtractReport:
    """Featurize every row of a manifest into the store: plan, execute, index. See
    ExtractReport for the outcome.

    executor: "dask" (LocalCluster of `workers`, or the cluster at `scheduler`), "serial", or
    "auto": dask, except that less than SERIAL_BELOW_AUDIO_S of audio to compute, with no
    workers or scheduler asked for, runs in this process (a cluster takes longer to start
    than such a run takes).
    on_plan(n_tasks, n_cached, cached_audio_s) and on_result(result) drive a progress display.
    sync: how each take's audio/curve lag is estimated; auto_sync: shift the curves of takes
    confidently out of sync (other cache keys than the unshifted items). ValueError for sync
    channels the channel set lacks, or auto_sync without any mouth-opening channel.
    repair: read the manifest's stored items and check them as bsfeat verify does (shapes,
    finite values, checksums); those that fail are recomputed and replaced, listed in
    report.repaired. Without it a stored item is trusted and never read (a re-run reads no
    arrays).
    augment: variants (featurize.audio_variants) of every training row with curves, each stored
    as an item of its own (variant_key of the row's key) and listed with its row in the
    manifest index, for bstrain fit to sample (data.variant_p). A variant that fails is a
    problem of its row (listed, exit 2) whose own item stays stored and indexed.
    """
    t0 = time.perf_counter()
    if index_name is not None:
        check_index_name(index_name)  # before anything is written
    check_sync(cfg, sync, auto_sync)
    manifest = read_manifest(manifest_path)
    if manifest.n_rows == 0:
        raise ManifestError(f"{manifest.path}: no rows")
    store = FeatureStore(store_path)
    store.init()
    swept = sweep_staging(store)
    if swept:
        log.info("removed %d staging item(s) left by stopped runs", swept)
    report = ExtractReport(
        manifest=manifest.path, index_name=index_name or index_name_from(manifest.name), rows=manifest.n_rows
    )
    plan = make_plan(manifest, cfg, store, force, report, sync, repair, augment)
    report.tasks = len(plan.tasks)
    if on_plan:
        on_plan(len(plan.tasks), len(plan.status), plan.cached_audio_s)
    log.info(
        "%s: %d rows, %d to compute, %d already stored, %d invalid",
        manifest.path,
        manifest.n_rows,
        len(plan.tasks),
        len(plan.status),
        len(plan.problems),
    )
    if plan.tasks:
        runner = choose_executor(executor, workers, scheduler, plan.tasks)
        execute(runner, store, cfg, plan, force or bool(report.repaired), on_result)
        report.started_cluster = runner.started_cluster
    if auto_sync:
        align_out_of_sync(store, cfg, plan, sync, report)
    write_report_index(store, manifest, cfg, plan, report)
    report_sync(store, plan, cfg, sync, report)
    report.seconds = time.perf_counter() - t0
    return report


def make_plan(
    manifest: Manifest,
    cfg: FeatureConfig,
    store: FeatureStore,
    force: bool,
    report: ExtractReport,
    sync: SyncConfig = SyncConfig(),
    repair: bool = False,
    augment: tuple[AudioVariant, ...] = (),
) -> ExtractPlan:
    """Hash the rows (the stat cache saves re-reading unchanged files), key them, and split
    the keys into stored and to compute (repair: a stored item that fails its check is to
    compute); warns about audio shared across splits."""
    stat = StatCache(store)
    planned, hash_problems = plan_rows(manifest, cfg, stat, sync)
    report.hashed_files = stat.misses
    report.shared_audio = shared_audio_across_splits(planned)
    for msg in report.shared_audio:
        log.warning("%s: %s", manifest.path, msg)
    stat.save()
    variants = variant_rows(planned, augment)
    status: dict[str, TaskResult] = {}
    todo: dict[str, FileTask] = {}
    cached_s = 0.0
    for p in planned + variants:
        if p.key in todo or p.key in status:
            continue
        stored = None if force else store.complete_attrs(p.key)
        if stored is not None and repair:
            problems = item_problems(store, p.key)
            if problems:
                report.repaired.append(f"{p.key} (row {p.row.row}, {p.row.audio}): {'; '.join(problems)}")
                log.warning("%s: stored item %s fails its check (%s): recomputing it", manifest.path, p.key, problems)
                stored = None
        if stored is not None:
            status[p.key] = TaskResult(key=p.key, row=p.row.row, status="exists", sync=stored.doc.get("sync"))
            cached_s += stored.audio_duration_s if p.task.augment is None else 0.0
        else:
            todo[p.key] = p.task
    return ExtractPlan(
        planned=planned,
        tasks=list(todo.values()),
        status=status,
        cached_audio_s=cached_s,
        problems=list(manifest.problems) + hash_problems,
        variants=variants,
    )


def variant_rows(planned: list[PlannedRow], augment: tuple[AudioVariant, ...]) -> list[PlannedRow]:
    """One PlannedRow per --augment variant of each training row with curves: the row's task
    with the variant and its key. Validation and test rows are scored as captured, and
    audio-only rows have no curves to time-scale, so they get none."""
    out = []
    for p in planned:
        if p.row.targets is None or p.row.split != "train":
            continue
        for v in augment:
            key = variant_key(p.key, v)
            out.append(PlannedRow(p.row, key, dataclasses.replace(p.task, key=key, augment=v)))
    return out


def usual_lead(estimates: list[SyncEstimate], sync: SyncConfig) -> int:
    """The lead of the takes in sync (trusted, within the tolerance): their median lag, in
    frames (0 when none is). Mouths open a little before the sound, so a data set's takes
    share a small natural lead (the example data's +2); --auto-sync brings the takes out of
    sync to it, not to 0, so that every take of the data set has the same lead."""
    lags = [e.lag_frames for e in estimates if e.trusted(sync) and abs(e.lag_frames) <= sync.tolerance_frames]
    return int(np.round(np.median(lags))) if lags else 0


def align_out_of_sync(
    store: FeatureStore, cfg: FeatureConfig, plan: ExtractPlan, sync: SyncConfig, report: ExtractReport
) -> None:
    """--auto-sync, once every row's item is stored: a take confidently out of sync gets a
    copy of its item with the curves shifted to the usual lead (usual_lead), stored under
    its own key (shifted_key; the unshifted item stays), and the row points to the copy.
    Nothing is featurized again: the copy holds the same audio features."""
    estimates = {}
    for p in plan.planned:
        res = plan.status[p.key]
        if res.status != "failed" and res.sync is not None and p.key not in estimates:
            estimates[p.key] = StoredSync.from_doc(res.sync, cfg.fps).estimate
    lead = usual_lead(list(estimates.values()), sync)
    report.usual_lead_frames = lead
    moved: dict[str, str] = {}
    shifted: dict[int, tuple[int, dict]] = {}  # row -> (shift, sync document) of the rows moved
    for i, p in enumerate(plan.planned):
        est = estimates.get(p.key)
        if est is None or not est.out_of_sync(sync) or est.lag_frames == lead:
            continue
        shift = est.lag_frames - lead
        key = moved.get(p.key) or shifted_key(p.key, sync.key_doc(), shift)
        if key not in plan.status:
            doc = {**est.to_doc(), "shift_frames": shift, "auto_sync": True, "lead_frames": lead,
                   "config": sync.to_dict()}  # fmt: skip
            try:
                status = "exists" if store.is_complete(key) else _write_shifted(store, p, key, shift, doc)
            except (StoreError, OSError, ValueError) as e:
                error = f"{p.row.audio} (row {p.row.row}): cannot shift its curves: {e}"
                plan.status[key] = TaskResult(key=key, row=p.row.row, status="failed", error=error)
            else:  # audio counted once: under the unshifted item's result (computed now) or the cached audio
                audio_s = plan.status[p.key].audio_s
                plan.status[key] = TaskResult(key=key, row=p.row.row, status=status, sync=doc, audio_s=audio_s)
        moved[p.key] = key
        plan.planned[i] = dataclasses.replace(p, key=key)
        if plan.status[key].status != "failed":
            shifted[p.row.row] = (shift, plan.status[key].sync)
    shift_variants(store, plan, shifted, sync)


def shift_variants(
    store: FeatureStore, plan: ExtractPlan, shifted: dict[int, tuple[int, dict]], sync: SyncConfig
) -> None:
    """The --augment variants of the rows --auto-sync moved get their curves shifted too (by
    the row's shift over the variant's speed, in the variant's frames), as copies beside them."""
    for i, v in enumerate(plan.variants):
        if v.row.row not in shifted or plan.status[v.key].status == "failed":
            continue
        row_shift, row_doc = shifted[v.row.row]
        shift = int(round(row_shift / v.task.augment.speed))
        key = shifted_key(v.key, sync.key_doc(), shift)
        if key not in plan.status:
            doc = {**row_doc, "shift_frames": shift}
            try:
                status = "exists" if store.is_complete(key) else _write_shifted(store, v, key, shift, doc)
            except (StoreError, OSError, ValueError) as e:
                error = (
                    f"{v.row.audio} (row {v.row.row}): cannot shift the curves of variant {v.task.augment.name}: {e}"
                )
                plan.status[key] = TaskResult(key=key, row=v.row.row, status="failed", error=error)
            else:
                plan.status[key] = TaskResult(key=key, row=v.row.row, status=status, sync=doc)
        plan.variants[i] = dataclasses.replace(v, key=key)


def _write_shifted(store: FeatureStore, p: PlannedRow, key: str, shift: int, sync_doc: dict) -> str:
    item = store.read_item(p.key)
    prov = p.task.provenance
    managed = set(prov.to_doc()) | {"key", "schema_version", "checksums", "shapes", "created", "complete"}
    info = {k: v for k, v in item.attrs.doc.items() if k not in managed}
    info["sync"] = sync_doc
    ff = FeaturizedFile(item.mel, item.emotion, shift_targets(item.targets, shift), info)
    write_item(store, key, ff, prov)
    return "computed"


def check_sync(cfg: FeatureConfig, sync: SyncConfig, auto_sync: bool) -> None:
    chans = sync.opening_channels(cfg.channels.channels)
    if auto_sync and not chans:
        raise ValueError(
            f"--auto-sync needs the mouth-opening channels of channel set {cfg.channels.name!r}: "
            "none is named like jawOpen/mouthOpen/mouthLowerDown; give them with --sync-channels"
        )


def report_sync(
    store: FeatureStore, plan: ExtractPlan, cfg: FeatureConfig, sync: SyncConfig, report: ExtractReport
) -> None:
    """The stored takes confidently out of sync, one line each, from the sync documents their
    results carry; a cached item estimated under other sync settings (another --sync-channels)
    is estimated again from its stored arrays, so that the settings of this run are the ones
    reported (a run with unchanged settings reads nothing). Warns when no take could be
    estimated because the channel set has no mouth-opening channel."""
    estimated, with_targets = 0, 0
    for p in plan.planned:
        doc = plan.status[p.key].sync
        if doc is None:
            continue
        if doc.get("config") != sync.to_dict() and plan.status[p.key].status == "exists":
            doc = estimate_again(store, p.key, cfg, sync, doc)
        stored = StoredSync.from_doc(doc, cfg.fps)
        with_targets += 1
        estimated += stored.estimate.lag_frames is not None
        if not stored.estimate.out_of_sync(sync):
            continue
        what = (
            f"curves shifted by {stored.shift_frames:+d} frames to the takes' usual lead of "
            f"{int(doc.get('lead_frames') or 0):+d} (--auto-sync)"
            if stored.shift_frames
            else "not shifted: run extract with --auto-sync to shift them, or fix the take"
        )
        report.shifted += bool(stored.shift_frames)
        report.out_of_sync.append(f"{p.row.audio} (row {p.row.row}, {p.row.id}): {stored.estimate.describe()}; {what}")
    if with_targets and not estimated and not sync.opening_channels(cfg.channels.channels):
        report.sync_warning = (
            f"sync not checked: channel set {cfg.channels.name!r} has no channel named like a mouth opening "
            "(jawOpen, mouthOpen, mouthLowerDown...); name the ones that open the mouth with --sync-channels"
        )
        log.debug("%s: %s", report.manifest, report.sync_warning)


def estimate_again(store: FeatureStore, key: str, cfg: FeatureConfig, sync: SyncConfig, doc: dict) -> dict:
    """A cached item's sync document under this run's settings, from its stored arrays (read
    checked; nothing is written: the item stays as computed). Its curves as stored are
    estimated, so an --auto-sync item keeps its shift."""
    from blendsync.shared.sync import estimate_lag

    item = store.read_item(key)
    est = estimate_lag(item.mel, item.targets, item.attrs.channels, cfg.fps, sync)
    return {**doc, **est.to_doc(), "config": sync.to_dict()}


def choose_executor(kind: str, workers: int | None, scheduler: str | None, tasks: list[FileTask]):
    if kind == "auto":
        kind = "dask" if workers or scheduler else _auto_executor(tasks)
    if kind == "serial":
        return SerialExecutor()
    if kind == "dask":
        return DaskExecutor(workers, scheduler)
    raise ValueError(f"executor must be 'auto', 'dask' or 'serial', got {kind!r}")


def execute(runner, store: FeatureStore, cfg: FeatureConfig, plan: ExtractPlan, force: bool, on_result) -> None:
    """Run the plan's tasks, recording each result in plan.status as it arrives."""
    try:
        for res in runner.run(store.location, cfg.to_json(), plan.tasks, force):
            plan.status[res.key] = res
            if res.status == "failed":  # listed once, in the report (and by the CLI's summary)
                log.debug("%s", res.error)
            if on_result:
                on_result(res)
    except KeyboardInterrupt:
        done = sum(1 for r in plan.status.values() if r.status == "computed")
        log.warning(
            "interrupted after %d of %d file(s); the items stored are kept: run extract again to compute the rest",
            done,
            len(plan.tasks),
        )
        raise


def write_report_index(
    store: FeatureStore, manifest: Manifest, cfg: FeatureConfig, plan: ExtractPlan, report: ExtractReport
) -> None:
    """Count the rows into the report and write the manifest index: every row in manifest
    order, stored (with its key and variants) or failed (with its first problem)."""
    problems = list(plan.problems)
    variant_problems: list[RowProblem] = []
    entries = []
    by_row: dict[int, list[PlannedRow]] = {}
    for v in plan.variants:
        by_row.setdefault(v.row.row, []).append(v)
    for p in plan.planned:
        res = plan.status[p.key]
        row = p.row.to_entry()
        if res.status == "failed":
            problems.append(_row_problem(manifest, p.row, res.error or "failed"))
            entries.append(IndexEntry(key=None, status="failed", error=res.error, **row))
            continue
        variants = stored_variants(manifest, plan, by_row.get(p.row.row, []), variant_problems)
        entries.append(IndexEntry(key=p.key, status="stored", variants=variants, **row))
        report.stored += 1
        report.keys.append(p.key)
        if res.status == "computed" and res.row == p.row.row:
            report.computed += 1
            report.audio_s += res.audio_s
        else:
            report.cached += 1
    report.audio_s += plan.cached_audio_s
    listed = {e.row for e in entries}
    for pr in sorted(problems, key=lambda x: x.row):
        if pr.row not in listed:  # first problem of a row that never got a key
            listed.add(pr.row)
            entries.append(IndexEntry(row=pr.row, key=None, status="failed", error=pr.message, audio=pr.file))
    index = ManifestIndex(
        entries=tuple(sorted(entries, key=lambda e: e.row)),
        source=str(manifest.path.resolve()),
        feature_config_hash=cfg.hash,
        feature_config=cfg.to_dict(),
        rows=manifest.n_rows,
        stored=report.stored,
        failed_rows=tuple(sorted({pr.row for pr in problems})),
    )
    report.index_error = _write_index(store, report.index_name, index)
    report.failed = [str(pr) for pr in sorted(problems + variant_problems, key=lambda x: (x.row, x.message))]
    report.variants_stored = sum(len(e.variants) for e in entries)
    report.variants_computed = sum(
        1 for v in plan.variants if plan.status[v.key].status == "computed" and plan.status[v.key].row == v.row.row
    )


def _row_problem(manifest: Manifest, row: ManifestRow, message: str) -> RowProblem:
    return RowProblem(manifest=manifest.path, row=row.row, line=row.line, file=str(row.audio), message=message)


def stored_variants(
    manifest: Manifest, plan: ExtractPlan, variants: list[PlannedRow], problems: list[RowProblem]
) -> tuple[tuple[str, str], ...]:
    """(variant, key) of one row's stored --augment variants; a failed one becomes a problem
    of the row (its own item stays stored and indexed)."""
    out = []
    for v in variants:
        res = plan.status[v.key]
        if res.status == "failed":
            problems.append(_row_problem(manifest, v.row, f"variant {v.task.augment.name}: {res.error or 'failed'}"))
        else:
            out.append((v.task.augment.name, v.key))
    return tuple(out)


def _write_index(store: FeatureStore, name: str, index: ManifestIndex) -> str | None:
    """Write the manifest index unless the store already holds the same one: a re-run with
    nothing new writes nothing, so it also runs on a read-only store. Returns why it could
    not be written (None: written or unchanged)."""
    try:
        old = store.read_index(name)
    except StoreError:
        old = None
    doc = index.to_doc()
    if old is not None and {k: v for k, v in old.items() if k != "updated"} == json.loads(json.dumps(doc)):
        return None
    try:
        store.write_index(name, {**doc, "updated": datetime.now(UTC).isoformat(timespec="seconds")})
    except OSError as e:
        return (
            f"{store.root}: cannot write manifest index {name!r} ({e.strerror or e}): run extract again "
            "where the store is writable"
        )
    return None
