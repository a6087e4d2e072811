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

from blendsync.shared.cli import UsageFailure, run_cli, setup_logging, write_text_or_stdout
from blendsync.shared.config import FeatureConfig
from blendsync.shared.store import FeatureStore, StoreError

log = logging.getLogger("blendsync.featurize")

EXIT_ROWS_FAILED = 2


@click.group(context_settings=dict(show_default=True, help_option_names=["-h", "--help"]))
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def cli(verbose: int, quiet: bool) -> None:
    """Featurize speech + Live Link Face takes into a content-addressed Zarr store."""
    setup_logging(verbose, quiet)


def _load_config(path: str | None) -> FeatureConfig:
    if path is None:
        return FeatureConfig()
    try:
        return FeatureConfig.load(path)
    except (OSError, ValueError) as e:
        raise UsageFailure(str(e)) from None


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--store", "store_path", default="features.zarr", metavar="PATH|URL",
              help="Feature store: a directory, or an fsspec URL such as s3://bucket/features.zarr "
                   "(created if missing).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="LocalCluster worker processes [default: one per core].")
@click.option("--scheduler", default=None, help="Use an existing Dask cluster, e.g. tcp://HOST:8786.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Feature config (YAML/JSON); see write-default-config.")
@click.option("--force", is_flag=True, help="Recompute rows even when their item is stored.")
@click.option("--serial", is_flag=True, help="Run in this process, without Dask (debugging).")
@click.option("--name", "index_name", default=None, help="Manifest index name [default: manifest file stem].")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
def extract(manifest, store_path, workers, scheduler, config_path, force, serial, index_name, progress):
    """Featurize every row of MANIFEST into the store.

    Only rows whose cache key (audio bytes, target bytes, feature config, library versions)
    is missing are computed, one Dask task per file. Exits 0 when every row is stored,
    2 when some rows failed (each listed with its row), 1 for unusable arguments.
    """
    from blendsync.featurize.extract import extract as run_extract
    from blendsync.shared.manifest import ManifestError

    if serial and (workers or scheduler):
        raise UsageFailure("--serial runs in this process; it takes no --workers/--scheduler")
    if workers and scheduler:
        raise UsageFailure("--workers sizes a local cluster; it cannot be used with --scheduler")
    cfg = _load_config(config_path)
    show = sys.stderr.isatty() if progress is None else progress
    if scheduler and not scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")):
        raise UsageFailure(f"--scheduler needs an address like tcp://HOST:8786, got {scheduler!r}")
    bar = _Progress(show)
    try:
        report = run_extract(
            manifest, store_path, cfg, workers=workers, scheduler=scheduler,
            executor="serial" if serial else "auto", force=force, index_name=index_name,
            on_plan=bar.start, on_result=bar.update,
        )
    except (ManifestError, StoreError) as e:
        raise UsageFailure(str(e)) from None
    except OSError as e:
        if scheduler:
            raise UsageFailure(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        raise
    finally:
        bar.close()
    click.echo(
        f"{report.stored}/{report.rows} rows stored in {store_path} "
        f"({report.computed} computed, {report.cached} cached, {len(report.failed)} problem(s); "
        f"{report.audio_s / 3600:.3f} audio hours; manifest index {report.index_name!r}; "
        f"{report.seconds:.1f} s)"
    )
    if report.failed:
        click.echo(f"{len(report.failed)} problem(s):", err=True)
        for line in report.failed:
            click.echo(f"  {line}", err=True)
    if report.index_error:
        raise UsageFailure(report.index_error)
    if report.failed:
        sys.exit(EXIT_ROWS_FAILED)


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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--channels", "per_channel", is_flag=True,
              help="Channel activity instead: per channel, the fraction of frames above --threshold, mean, max "
                   "and how many takes move it.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="A curve above this on a frame moves there (with --channels).")
@click.option("--manifest", default=None, help="Only this manifest's rows (with --channels) [default: every item].")
def info(store_path, as_json, per_channel, threshold, manifest):
    """Items, audio hours, feature configs, manifests and bytes on disk of STORE."""
    from blendsync.featurize.inspect_store import channel_activity, store_info

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
    click.echo(f"items:          {doc['items']} ({doc['incomplete_items']} incomplete, "
               f"{doc['staging_entries']} in staging)")
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
        )


def _echo_activity(doc: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    for name, a in doc.items():
        click.echo(f"channel set {name}: {a['takes']} takes, {a['frames']} frames; moving = above {a['threshold']}")
        click.echo(f"  {'channel':24s} {'active':>7s} {'mean':>7s} {'max':>6s} {'takes':>6s}")
        for c, v in a["channels"].items():
            click.echo(f"  {c:24s} {v['active_fraction']:7.3f} {v['mean']:7.3f} {v['max']:6.3f} {v['takes_moving']:6d}"
                       + ("  (never moves)" if v["takes_moving"] == 0 else ""))


@cli.command()
@click.argument("store_path", metavar="STORE")
def verify(store_path):
    """Check every item: complete, shapes consistent, values finite, checksums match.
    Exits 1 listing the bad keys."""
    from blendsync.featurize.inspect_store import verify_store

    try:
        report = verify_store(FeatureStore(store_path))
    except StoreError as e:
        raise UsageFailure(str(e)) from None
    n, problems = report.items, report.problems
    if report.incomplete:
        click.echo(f"note: {len(report.incomplete)} incomplete item(s), invisible to readers (being written, or "
                   "left by a stopped writer: the next extract rewrites them)", err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {n} item(s):", err=True)
        for p in problems:
            click.echo(f"  {p}", err=True)
        sys.exit(1)
    click.echo(f"ok: {n} items verified")


@cli.command("write-default-config")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
def write_default_config(path):
    """Write the default feature config as YAML to PATH (or stdout)."""
    write_text_or_stdout(FeatureConfig().to_yaml(), path)


def main(argv: list[str] | None = None) -> None:
    """Entry point: click's usage errors exit 1 here (2 means "some rows failed")."""
    run_cli(cli, "bsfeat", argv)


if __name__ == "__main__":
    main()
