"""Options several bstrain commands share, each declared once, and the options of bstrain fit
that set one train config key each (their help is the key's own description)."""

from __future__ import annotations

from pathlib import Path

import click

from blendsync.shared import settings
from blendsync.train.core.config import parse_setting, setting_keys

store_option = click.option(
    "--store",
    "store_path",
    required=True,
    metavar="PATH|URL",
    help="Feature store made by bsfeat extract (a directory or an fsspec URL).",
)
manifest_option = click.option(
    "--manifest", default=None, help="Manifest index in the store [default: the only one, else all items]."
)
checkpoint_option = click.option(
    "--checkpoint",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A checkpoint of bstrain fit (RUN/checkpoints/best.pt, last.pt or step_N.pt).",
)
frames_per_window_option = click.option(
    "--frames-per-window",
    "-K",
    "frames_per_window",
    type=click.IntRange(min=1),
    default=None,
    help="Blocks of K' frames per window, at most the trained K: lower streaming latency for K/K' times the model "
    "compute per frame [default: the checkpoint's].",
)
gain_option = click.option(
    "--gain",
    default="1",
    help="Scale the predicted movement around the training mean, a number from 0 to 10 (> 1: livelier, at some "
    "error; bstrain evaluate shows the trade on held-out data), or 'calibrated': the gain with the lowest "
    "validation error, fitted when the checkpoint was kept.",
)


def device_option(default: str):
    """--device: fit picks CUDA when there is one (auto); the inference commands default to the CPU."""
    auto = ", or auto (CUDA when there is one)" if default == "auto" else ""
    return click.option("--device", default=default, help=f"Where the model runs: cpu, cuda or cuda:N{auto}.")


def curve_fps_option(default: str):
    """--fps of written curves or video: the Live Link Face app's 60 or the model's usual 30."""
    return click.option(
        "--fps",
        type=click.Choice(["30", "60"]),
        default=default,
        help="Frame rate of what is written (curves are resampled by time).",
    )


# ctx.meta key: (config key, value, how it was given) of every config option used, in order.
CONFIG_VALUES = "blendsync.train.config_values"


def config_key_option(*decls: str, key: str, **kw):
    """A bstrain fit option that sets one train config key over the config file. Its help is
    the key's own description; its value reaches the command through ctx.meta (config_values)."""
    field = setting_keys()[key]

    def remember(ctx: click.Context, param: click.Parameter, value):
        if value is not None:
            ctx.meta.setdefault(CONFIG_VALUES, []).append((key, value, param.opts[0]))
        return value

    return click.option(
        *decls,
        default=None,
        expose_value=False,
        callback=remember,
        help=f"{settings.doc_text(field)} Sets {key} [default: from the config, {settings.default_of(field)}].",
        **kw,
    )


def _remember_sets(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]):
    for text in value:
        try:
            key, v = parse_setting(text)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
        ctx.meta.setdefault(CONFIG_VALUES, []).append((key, v, f"--set {key}"))
    return value


set_option = click.option(
    "--set",
    "settings_",
    multiple=True,
    metavar="KEY=VALUE",
    expose_value=False,
    callback=_remember_sets,
    help="Set any train config key over the config file, e.g. --set optim.lr=3e-4 --set loss.temporal=0.1 "
    "(repeatable; the keys and their meaning: bstrain write-default-config).",
)


def config_values(ctx: click.Context) -> list[tuple[str, object, str]]:
    return list(ctx.meta.get(CONFIG_VALUES, []))
