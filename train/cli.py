"""bstrain: the trainer CLI (commands arrive with the training stage)."""

from __future__ import annotations

import click


@click.group(context_settings=dict(show_default=True, help_option_names=["-h", "--help"]))
def main() -> None:
    """Train speech-to-blendshape models on a bsfeat feature store."""
