"""bstrain sweep and compare: many experiments on one feature store, and their comparison."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from blendsync.shared.cli import UsageFailure, config_file_option, is_write_failure, write_failure
from blendsync.train.cli.options import device_option, manifest_option, store_option
from blendsync.train.sweep.compare import SORTS

SWEEP_FILE_HELP = """\b
sweep.yaml (every key but space optional):
  metric: skill              # validation metric: skill, mean_r (maximised) or loss (minimised)
  fit: {epochs: 10}          # settings every trial shares (config keys or fit's option names)
  space:                     # the searched config keys
    optim.lr: {low: 1.0e-4, high: 3.0e-3, log: true}
    loss.preset: [default, mse, notes]
    augment.emotion_dropout: {low: 0.0, high: 0.6}
  pruner: median             # median | hyperband | none, or {type, startup_trials, warmup_steps,
                             #   min_steps, max_steps} (hyperband: its rungs, in steps)
  sampler: tpe               # tpe | random
  seed: 0                    # the sampler's seed and every trial's training seed
  trial_cpu_s: 0             # end each trial after this many CPU seconds (0: at its end)
  enqueue: [{optim.lr: 1.0e-3}]   # trials to run first (e.g. the defaults, as a baseline)
  folds: 0                   # score each trial across K folds of the takes, its value their
                             #   mean (K = the number of takes: leave one take out; 0: off)
  min_amplitude: 0           # a trial below this validation amplitude ratio fails (0: no floor)"""


@click.command(epilog=SWEEP_FILE_HELP)
@store_option
@manifest_option
@click.option(
    "--space",
    "space_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The sweep file (below). Needed for a new sweep; on --resume the stored one is used.",
)
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True, help="Trials to end in all.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Sweep folder [default: sweeps/<space>-<time>].",
)
@config_file_option("Train config every trial starts from", "bstrain write-default-config")
@click.option(
    "--storage",
    default=None,
    help="Optuna storage URL (sqlite:///PATH, postgresql://...) [default: sqlite in the sweep folder]. Trials on "
    "other machines need one they all reach, and the store and sweep folder on a shared path.",
)
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT", help="Run trials on this Dask cluster's workers.")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Trials at once on this machine (a LocalCluster).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    help="Torch threads per trial [default: the cores divided among the trials at once].",
)
@click.option(
    "--budget-cpu-s",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Start no trial once the ended trials have used this many CPU seconds in all (0: no budget).",
)
@click.option("--resume", is_flag=True, help="Continue the sweep in --out: finished trials kept, a running one re-run.")
@device_option("auto")
def sweep(
    store_path,
    manifest,
    space_path,
    trials,
    out,
    config_path,
    storage,
    scheduler,
    jobs,
    threads,
    budget_cpu_s,
    resume,
    device,
):
    """Search train config keys with Optuna on one feature store: every trial is a bstrain fit
    run in OUT/trials/NNNN, its validations reported to the study and pruned when it falls
    behind. Ends with the best trial and OUT/best_config.yaml for bstrain fit --config.
    """
    from blendsync.train.core.config import TrainConfig
    from blendsync.train.sweep.space import SpaceError, load_spec
    from blendsync.train.sweep.study import SweepError
    from blendsync.train.sweep.study import sweep as run_sweep

    given = [o for o, v in (("--config", config_path), ("--manifest", manifest), ("--storage", storage)) if v]
    _check_sweep_options(resume=resume, out=out, space_path=space_path, given=given, scheduler=scheduler, jobs=jobs)
    try:
        base = TrainConfig.load(config_path) if config_path else TrainConfig()
        spec = load_spec(space_path, base) if space_path else None
    except (OSError, ValueError, SpaceError) as e:
        raise UsageFailure(str(e)) from None
    if out is None:
        import time

        out = Path("sweeps") / f"{space_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"

    def show(o) -> None:
        value = "" if o.value is None else f" {o.value:.4f}"
        click.echo(f"trial {o.number}: {o.state}{value} ({o.step} steps, {o.cpu_s:.0f} CPU-s)", err=True)

    try:
        res = run_sweep(
            spec, store_path, out, trials=trials, manifest=manifest, base=base, storage=storage,
            scheduler=scheduler, jobs=jobs, threads=threads, budget_cpu_s=budget_cpu_s, resume=resume,
            device=device, on_trial=show,
        )  # fmt: skip
    except (SweepError, ValueError) as e:
        raise UsageFailure(str(e)) from None
    except OSError as e:
        if is_write_failure(e):
            raise write_failure(e) from None
        if scheduler and isinstance(e, (TimeoutError, ConnectionError)):
            raise UsageFailure(f"--scheduler {scheduler}: cannot reach the Dask cluster ({e})") from None
        raise
    except ImportError as e:  # a database driver --storage names, not installed
        raise UsageFailure(f"--storage: {e}") from None
    except Exception as e:
        if type(e).__module__.split(".")[0] in ("optuna", "sqlalchemy"):  # the study's storage
            from blendsync.train.sweep.trial import storage_problem

            where = storage or "sqlite in the sweep folder"
            raise UsageFailure(f"the study's storage ({where}): {storage_problem(e)}") from None
        raise
    _report_sweep(res, out, store_path)


def _check_sweep_options(*, resume: bool, out, space_path, given: list[str], scheduler, jobs: int) -> None:
    if resume and out is None:
        raise UsageFailure("--resume needs --out: the sweep folder to continue")
    if not resume and space_path is None:
        raise UsageFailure("a new sweep needs --space SWEEP.yaml (see bstrain sweep --help)")
    if resume and given:
        raise UsageFailure(
            f"--resume continues the sweep with what it was started with ({out}/sweep.json), so "
            f"{', '.join(given)} would be ignored: drop them"
        )
    if scheduler and jobs > 1:
        raise UsageFailure("--jobs runs trials on a LocalCluster; with --scheduler the cluster's workers run them")


def _report_sweep(res, out, store_path) -> None:
    click.echo(
        f"{res.ended} trial(s) ended in {out} ({res.complete} complete, {res.pruned} pruned, {res.failed} failed; "
        f"{res.cpu_s:.0f} CPU-s{', CPU budget spent' if res.budget_spent else ''})"
    )
    for line in res.warnings:
        click.echo(f"warning: {line}", err=True)
    if res.best is None:
        click.echo("no trial completed: no best config")
        return
    b = res.best
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items())
    click.echo(f"best: trial {b['number']}, {res.metric} {b['value']:.4f} ({params}) in {b['run_dir']}")
    click.echo(f"full run: bstrain fit --store {store_path} --config {out / 'best_config.yaml'}")


def _written(flag: str, dest: str, help: str, folder: bool = False):
    """An option naming a file (or folder) compare writes."""
    return click.option(
        flag, dest, type=click.Path(dir_okay=folder, file_okay=not folder, path_type=Path), default=None, help=help
    )


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--sort", type=click.Choice(SORTS), default="none", help="Order of the rows [default: as given].")
@_written("--csv", "csv_path", "Also write the table as CSV.")
@_written("--json", "json_path", "Also write the table and every validation curve as JSON.")
@_written(
    "--plots",
    "plots_dir",
    "Write PNGs here: validation skill against CPU-s and steps; a sweep's parameter importances and history.",
    folder=True,
)
@_written("--html", "html_path", "One self-contained report page: the table and the plots.")
def compare(runs, sort, csv_path, json_path, plots_dir, html_path):
    """Compare RUNS (bstrain fit run folders, or sweep folders: their trials): held-out
    validation skill, mean r, amplitude ratio and loss at each run's best validation, steps,
    CPU and wall seconds, and the config keys that differ between the runs."""
    import tempfile

    from blendsync.shared.files import write_atomically
    from blendsync.train.sweep.compare import CompareError, as_csv, as_json, as_text, collect, table
    from blendsync.train.sweep.report import write_html, write_plots

    problems: list[str] = []
    try:
        found = collect(list(runs), problems)
    except CompareError as e:
        raise UsageFailure(str(e)) from None
    for line in problems:  # the runs that could not be read, one line each; the rest are listed
        click.echo(f"skipped: {line}", err=True)
    columns, rows = table(found, sort)
    click.echo(as_text(columns, rows), nl=False)
    try:
        if csv_path:
            write_atomically(csv_path, as_csv(columns, rows))
        if json_path:
            write_atomically(json_path, as_json(columns, rows))
        pngs = write_plots(found, plots_dir) if plots_dir else []
        if html_path:
            with tempfile.TemporaryDirectory() as tmp:  # the page inlines the plots: made for it if not asked for
                write_html(html_path, columns, rows, pngs or write_plots(found, Path(tmp)), "bstrain compare")
    except OSError as e:
        if is_write_failure(e):
            raise write_failure(e) from None
        raise
    for p in [csv_path, json_path, *pngs, html_path]:
        if p:
            click.echo(f"wrote {p}", err=True)
    if problems:
        sys.exit(2)
