"""bstrain: the trainer CLI, a thin click layer over blendsync.train (one module per group of
commands, the options they share declared once in options.py).

Exit codes: 0 done; 1 unusable arguments or data (empty split, store without targets,
feature config different from a checkpoint's, unreadable checkpoint); 2 predict: some files
failed (each listed); 130 interrupted.
"""

from __future__ import annotations

import click

from blendsync.shared.cli import GROUP_SETTINGS, run_cli, setup_logging, verbosity_options
from blendsync.train.cli.evaluate import evaluate
from blendsync.train.cli.experiments import compare, sweep
from blendsync.train.cli.fit import fit, pretrain, write_default_config
from blendsync.train.cli.inference import export, predict, preview, stream
from blendsync.train.cli.serve import blender_addon, serve


@click.group(context_settings=GROUP_SETTINGS)
@verbosity_options("More log output (-v: per-parameter grad norms).")
def cli(verbose: int, quiet: bool) -> None:
    """Train speech-to-blendshape models on a bsfeat feature store, and animate audio with them."""
    setup_logging(verbose, quiet)


for command in (
    fit,
    pretrain,
    sweep,
    compare,
    predict,
    stream,
    preview,
    evaluate,
    export,
    serve,
    blender_addon,
    write_default_config,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    run_cli(cli, "bstrain", argv)
