"""bsfeat: the featurize CLI, a thin click layer over blendsync.featurize.

Exit codes: 0 every row stored / store fine; 2 some rows failed (listed); 1 unusable
arguments (missing manifest, bad config, not a store) or a store that fails verify.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from blendsync.shared.cli import (
    GROUP_SETTINGS,
    FiniteFloatRange,
    UsageFailure,
    config_file_option,
    json_option,
    progress_enabled,
    progress_option,
    run_cli,
    setup_logging,
    verbosity_options,
    write_text_or_stdout,
)
from blendsync.shared.config import FEATURE_PRESETS, FeatureConfig
from blendsync.shared.store import FeatureStore, StoreError

log = logging.getLogger("blendsync.featurize")

EXIT_ROWS_FAILED = 2

sync_channels_option = click.option(
    "--sync-channels",
    default=None,
    metavar="NAME,...",
    help="Mouth-opening channels the sync check reads [default: jawOpen/mouthOpen/mouthLowerDown* channels by "
    "name]; needed for a custom rig named otherwise. extract: for the items it computes (stored items keep "
    "their estimate); info --sync: estimate now from these (nothing is written).",
)

features_option = click.option(
    "--features",
    type=click.Choice(list(FEATURE_PRESETS)),
    default=None,
    help="A named feature config instead of --config: default (the offline features) or live (the emotion row "
    "0.15 s behind its frame and the first second filled, for models that stream live) [default: default].",
)

DEFAULT_CONFIG_HEADER = """bsfeat feature config: every key with its default and what it does. Every key is optional
in a config of your own. The feature-config hash covers every key but targets.max_mismatch_s:
a changed setting makes new items beside the old ones."""


@click.group(context_settings=GROUP_SETTINGS)
@verbosity_options()
def cli(verbose: int, quiet: bool) -> None:
    """Featurize speech + Live Link Face takes into a content-addressed Zarr store."""
    setup_logging(verbose, quiet)


def _load_config(path: str | None, features: str | None = None) -> FeatureConfig:
    if path is not None and features is not None:
        raise UsageFailure("--features names a whole feature config; --config reads one from a file: give one of them")
    if path is None:
        return FEATURE_PRESETS[features or "default"]
    try:
        return FeatureConfig.load(path)
    except (OSError, ValueError) as e:
        raise UsageFailure(str(e)) from None


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--store",
    "store_path",
    default="features.zarr",
    metavar="PATH|URL",
    help="Feature store: a directory, or an fsspec URL such as s3://bucket/features.zarr (created if missing).",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="LocalCluster worker processes [default: one per core]."
)
@click.option("--scheduler", default=None, help="Use an existing Dask cluster, e.g. tcp://HOST:8786.")
@config_file_option("Feature config", "bsfeat write-default-config")
@features_option
@click.option("--force", is_flag=True, help="Recompute rows even when their item is stored.")
@click.option(
    "--repair",
    is_flag=True,
    help="Check the manifest's stored items as bsfeat verify does (shapes, finite values, checksums) and "
    "recompute exactly those that fail. Reads every stored item; a plain run reads none.",
)
@click.option("--serial", is_flag=True, help="Run in this process, without Dask (debugging).")
@click.option("--name", "index_name", default=None, help="Manifest index name [default: manifest file stem].")
@progress_option
@click.option(
    "--auto-sync",
    is_flag=True,
    help="Shift the curves of takes confidently out of sync with their audio (|lag| > 2 frames) to the "
    "usual lead of the takes in sync (their median lag, e.g. +2). The shifted copies have their own cache "
    "keys: both versions stay stored; nothing is featurized again.",
)
@sync_channels_option
@click.option(
    "--augment",
    "augment_specs",
    multiple=True,
    metavar="SPEC",
    help="Also store a variant of every training row with curves, computed once and reused by every run "
    "(repeat for more): speed:F (0.5-2, curves time-scaled), pitch:N semitones, noise:DB (SNR), reverb:S "
    "(RT60 seconds), or steps joined by commas (speed:1.1,noise:20). bstrain fit trains on a take's variant "
    "instead of the take with probability data.variant_p.",
)
def extract(
    manifest,
    store_path,
    workers,
    scheduler,
    config_path,
    features,
    force,
    repair,
    serial,
    index_name,
    progress,
    auto_sync,
    sync_channels,
    augment_specs,
):
    """Featurize every row of MANIFEST into the store.

    Only rows whose cache key (audio bytes, target bytes, feature config, library versions)
    is missing are computed, one Dask task per file. Exits 0 when every row is stored,
    2 when some rows failed (each listed with its row), 1 for unusable arguments.
    """
    from blendsync.featurize.audio_variants import AugmentError, parse_variants
    from blendsync.featurize.extract import extract as run_extract
    from blendsync.shared.manifest import ManifestError

    _check_extract_options(serial=serial, workers=workers, scheduler=scheduler, force=force, repair=repair)
    cfg = _load_config(config_path, features)
    sync = _sync_config(sync_channels)
    try:
        augment = parse_variants(augment_specs)
    except AugmentError as e:
        raise UsageFailure(str(e)) from None
    bar = _Progress(progress_enabled(progress))
    try:
        report = run_extract(
            manifest,
            store_path,
            cfg,
            workers=workers,
            scheduler=scheduler,
            executor="serial" if serial else "auto",
            force=force,
            index_name=index_name,
            on_plan=bar.start,
            on_result=bar.update,
            sync=sync,
            auto_sync=auto_sync,
            repair=repair,
            augment=augment,
        )
    except (ManifestError, StoreError, ValueError) as e:
        raise UsageFailure(str(e)) from None
    except OSError as e:
        if scheduler:
            raise UsageFailure(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        raise
    finally:
        bar.close()
    _report_extract(report, store_path, repair)


def _check_extract_options(*, serial, workers, scheduler, force, repair) -> None:
    if serial and (workers or scheduler):
        raise UsageFailure("--serial runs in this process; it takes no --workers/--scheduler")
    if workers and scheduler:
        raise UsageFailure("--workers sizes a local cluster; it cannot be used with --scheduler")
    if force and repair:
        raise UsageFailure("--force recomputes every row; --repair only the stored items that fail their check")
    if scheduler and not scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")):
        raise UsageFailure(f"--scheduler needs an address like tcp://HOST:8786, got {scheduler!r}")


def _report_extract(report, store_path, repair: bool) -> None:
    """The run's summary on stdout, its problems on stderr; exit 2 when rows failed."""
    click.echo(
        f"{report.stored}/{report.rows} rows stored in {store_path} "
        f"({report.computed} computed, {report.cached} cached, "
        + (f"{len(report.repaired)} repaired, " if repair else "")
        + f"{len(report.failed)} problem(s); "
        f"{report.audio_s / 3600:.3f} audio hours; manifest index {report.index_name!r}; "
        f"{report.seconds:.1f} s)"
    )
    if report.variants_stored:
        click.echo(f"{report.variants_stored} audio variant(s) stored ({report.variants_computed} computed)")
    if report.sync_warning:
        click.echo(f"warning: {report.sync_warning}", err=True)
    if report.repaired:
        click.echo(f"{len(report.repaired)} stored item(s) failed their check and were recomputed:", err=True)
        for line in report.repaired:
            click.echo(f"  {line}", err=True)
    if report.out_of_sync:
        click.echo(
            f"{len(report.out_of_sync)} take(s) out of sync with their audio ({report.shifted} shifted):", err=True
        )
        for line in report.out_of_sync:
            click.echo(f"  {line}", err=True)
    if report.failed:
        click.echo(f"{len(report.failed)} problem(s):", err=True)
        for line in report.failed:
            click.echo(f"  {line}", err=True)
    if report.index_error:
        raise UsageFailure(report.index_error)
    if report.failed:
        sys.exit(EXIT_ROWS_FAILED)


def _sync_config(channels: str | None):
    from blendsync.shared.sync import SyncConfig

    if channels is None:
        return SyncConfig()
    names = tuple(c.strip() for c in channels.split(",") if c.strip())
    if not names:
        raise UsageFailure("--sync-channels needs at least one channel name")
    return SyncConfig(channels=names)


class _Progress:
    """files, audio hours, computed / cached / failed — at the CLI only."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.counts = {"computed": 0, "cached": 0, "failed": 0}
        self.audio_s = 0.0

    def start(self, n_tasks: int, n_cached: int, cached_audio_s: float) -> None:
        self.audio_s = cached_audio_s
        self.counts["cached"] = n_cached
        if self.enabled and n_tasks:
            from tqdm import tqdm

            self.bar = tqdm(total=n_tasks, unit="file", desc="featurize", dynamic_ncols=True)
            self._postfix()

    def update(self, res) -> None:
        key = {"computed": "computed", "exists": "cached"}.get(res.status, "failed")
        self.counts[key] += 1
        self.audio_s += res.audio_s
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix(audio_h=f"{self.audio_s / 3600:.3f}", **self.counts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@cli.command()
@click.argument("store_path", metavar="STORE")
@json_option
@click.option(
    "--channels",
    "per_channel",
    is_flag=True,
    help="Channel activity instead: per channel, the fraction of frames above --threshold, mean, max "
    "and how many takes move it.",
)
@click.option(
    "--threshold",
    type=FiniteFloatRange(0, 1),
    default=0.05,
    show_default=True,
    help="A curve above this on a frame moves there (with --channels).",
)
@click.option(
    "--manifest", default=None, help="Only this manifest's rows (with --channels or --sync) [default: every item]."
)
@click.option(
    "--sync",
    "per_take_sync",
    is_flag=True,
    help="Audio/curve sync instead: every take's lag, correlation and confidence.",
)
@sync_channels_option
def info(store_path, as_json, per_channel, threshold, manifest, per_take_sync, sync_channels):
    """Items, audio hours, feature configs, manifests, bytes on disk and the takes out of sync
    of STORE.

    Sync: a lag of +L frames means the curves lead the audio by L frames (mouths open a little
    before the sound: 0 to +2 is usual). Takes whose confident lag exceeds 2 frames are listed.
    """
    from blendsync.featurize.inspect_store import channel_activity, store_info, sync_check

    if sync_channels is not None and not per_take_sync:
        raise UsageFailure("--sync-channels goes with --sync")
    if per_take_sync:
        try:
            doc = sync_check(FeatureStore(store_path), manifest, _sync_config(sync_channels) if sync_channels else None)
        except (StoreError, ValueError) as e:
            raise UsageFailure(str(e)) from None
        _echo_sync(doc, as_json)
        return
    if per_channel:
        try:
            doc = channel_activity(FeatureStore(store_path), manifest, threshold)
        except StoreError as e:
            raise UsageFailure(str(e)) from None
        _echo_activity(doc, as_json)
        return
    try:
        doc = store_info(FeatureStore(store_path))
    except StoreError as e:
        raise UsageFailure(str(e)) from None
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"store:          {doc['store']}")
    click.echo(
        f"items:          {doc['items']} ({doc['incomplete_items']} incomplete, {doc['staging_entries']} in staging)"
    )
    click.echo(f"audio hours:    {doc['audio_hours']:.4f}")
    click.echo(f"bytes on disk:  {doc['bytes_on_disk']:,}")
    click.echo("feature configs:")
    for h, c in doc["feature_configs"].items():
        cfg = c["config"]
        click.echo(
            f"  {h}: {c['items']} items, {c['audio_hours']:.4f} h; {cfg['fps']} fps, "
            f"{cfg['mel']['n_mels']} mels, emotion context {cfg['emotion']['context_s']} s, "
            f"channels {cfg['targets']['channels']['name']} ({len(cfg['targets']['channels']['channels'])})"
        )
    click.echo("manifests:")
    for name, m in doc["manifests"].items():
        if "error" in m:
            click.echo(f"  {name}: {m['error']}")
            continue
        click.echo(
            f"  {name}: {m['stored']}/{m['rows']} rows stored, splits {m['splits']}, "
            f"config {m['feature_config_hash']}"
            + (f", failed rows {m['failed_rows']}" if m["failed_rows"] else "")
            + (f", {m['variants']} audio variants (--augment)" if m.get("variants") else "")
        )
    _echo_sync_summary(doc["sync"])


def _echo_sync_summary(s: dict) -> None:
    click.echo(
        f"sync:           {s['estimated']} takes estimated, {len(s['out_of_sync'])} out of sync "
        f"(|lag| > {s['tolerance_frames']} frames), {len(s['shifted'])} shifted into sync, "
        f"{len(s['no_estimate'])} without an estimate"
        + (f", {s['not_checked']} not checked yet (bsfeat info --sync)" if s["not_checked"] else "")
    )
    for t in s["out_of_sync"]:
        click.echo(f"  out of sync: {_take_name(t)}: {t['description']}")
    for t in s["shifted"]:
        click.echo(f"  shifted by {t['shift_frames']:+d} (--auto-sync): {_take_name(t)}: was {t['description']}")
    if s.get("variant_items"):
        click.echo(f"  {s['variant_items']} stored audio variant item(s) (--augment): versions of takes, not counted")
    if s["superseded_items"]:
        click.echo(
            f"  {s['superseded_items']} stored item(s) no manifest points to any more (e.g. takes before --auto-sync "
            "shifted them): not counted"
        )
    for t in s["no_estimate"]:
        click.echo(f"  {_take_name(t)}: {t['description']}")


def _take_name(t: dict) -> str:
    return f"row {t['row']} ({t['id']}, {t['audio']})" if t.get("row") else t["key"]


def _echo_sync(doc: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    c = doc["config"]
    click.echo(
        f"sync over ±{c['max_lag_s']} s; + = curves lead the audio; listed as out of sync: "
        f"|lag| > {c['tolerance_frames']} frames at confidence >= {c['min_confidence']}"
    )
    for t in doc["takes"]:
        flag = "OUT OF SYNC  " if t["out_of_sync"] else ""
        shifted = f"; stored shifted by {t['shift_frames']:+d} (--auto-sync)" if t.get("shift_frames") else ""
        click.echo(f"  {flag}{_take_name(t)}: {t['description']}{shifted}")


def _echo_activity(doc: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for name, a in doc.items():
        click.echo(f"channel set {name}: {a['takes']} takes, {a['frames']} frames; moving = above {a['threshold']}")
        click.echo(f"  {'channel':24s} {'active':>7s} {'mean':>7s} {'max':>6s} {'takes':>6s}")
        for c, v in a["channels"].items():
            click.echo(
                f"  {c:24s} {v['active_fraction']:7.3f} {v['mean']:7.3f} {v['max']:6.3f} {v['takes_moving']:6d}"
                + ("  (never moves)" if v["takes_moving"] == 0 else "")
            )


@cli.command()
@click.argument("store_path", metavar="STORE")
def verify(store_path):
    """Check every item: complete, shapes consistent, values finite, checksums match.
    Exits 1 listing the bad keys."""
    from blendsync.featurize.inspect_store import repair_commands, verify_store

    try:
        report = verify_store(FeatureStore(store_path))
    except StoreError as e:
        raise UsageFailure(str(e)) from None
    n, problems = report.items, report.problems
    if report.incomplete:
        click.echo(
            f"note: {len(report.incomplete)} incomplete item(s), invisible to readers (being written, or "
            "left by a stopped writer: the next extract rewrites them)",
            err=True,
        )
    if problems:
        click.echo(f"{len(problems)} problem(s) in {n} item(s):", err=True)
        for p in problems:
            click.echo(f"  {p}", err=True)
        for command in repair_commands(FeatureStore(store_path), problems):
            click.echo(f"to recompute them: {command}", err=True)
        sys.exit(1)
    click.echo(f"ok: {n} items verified")


@cli.command("write-default-config")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@features_option
def write_default_config(path, features):
    """Write a feature config (the default, or --features NAME), every key described, as YAML to
    PATH (or stdout)."""
    write_text_or_stdout(FEATURE_PRESETS[features or "default"].to_commented_yaml(DEFAULT_CONFIG_HEADER), path)


def main(argv: list[str] | None = None) -> None:
    """Entry point: click's usage errors exit 1 here (2 means "some rows failed")."""
    run_cli(cli, "bsfeat", argv)


if __name__ == "__main__":
    main()
