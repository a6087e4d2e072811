"""bstrain evaluate: the trainer's validation metrics of a checkpoint on a split of a store."""

from __future__ import annotations

from pathlib import Path

import click

from blendsync.shared.cli import UsageFailure, json_option
from blendsync.train.cli.options import checkpoint_option, device_option, gain_option, manifest_option, store_option


@click.command()
@checkpoint_option
@store_option
@manifest_option
@click.option("--split", default="test", help="Split to score.")
@json_option
@click.option(
    "--plots",
    "plot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the curve plots [default: none].",
)
@device_option("cpu")
@gain_option
def evaluate(checkpoint, store_path, manifest, split, as_json, plot_dir, device, gain):
    """Score a checkpoint on a split of a store: the trainer's validation metrics."""
    import json as _json

    from blendsync.train.core.checkpoint import CheckpointError
    from blendsync.train.core.config import LOSS_TERMS
    from blendsync.train.core.data import DataError
    from blendsync.train.core.metrics import ACTIVE_STD
    from blendsync.train.loop.evaluation import evaluate_checkpoint

    try:
        ev = evaluate_checkpoint(checkpoint, store_path, manifest=manifest, split=split, device=device, gain=gain)
    except (CheckpointError, DataError, ValueError) as e:
        raise UsageFailure(str(e)) from None
    m = ev["metrics"]
    if plot_dir is not None:
        from blendsync.train.core.plots import plot_curves, plot_file_names

        plot_dir.mkdir(parents=True, exist_ok=True)
        names = plot_file_names(list(ev["pred"]))
        for fid, pred in ev["pred"].items():
            plot_curves(
                pred,
                ev["target"][fid],
                ev["channels"],
                ev["fps"],
                f"{split}: {fid}",
                plot_dir / names[fid],
            )
    if as_json:
        click.echo(
            _json.dumps(
                {"split": split, "gain": ev["gain"], "terms": ev["terms"], "metrics": m, "gains": ev["gains"]}, indent=2
            )
        )
        return
    click.echo(f"split {split}: {m['frames']} frames")
    click.echo(f"  loss {ev['terms']['loss']:.5f}  " + "  ".join(f"{k} {ev['terms'][k]:.5f}" for k in LOSS_TERMS))
    click.echo(
        f"  MSE {m['mse']:.5f}  MAE {m['mae']:.5f}  mean-predictor MSE {m['mse_mean_predictor']:.5f}  "
        f"skill {_num(m['skill'])}"
    )
    t = m["trained"]
    if m["still"]:
        click.echo(
            f"  trained channels ({t['channels']} of {len(ev['channels'])}; {len(m['still'])} still in training, "
            f"predicted 0): MSE {t['mse']:.5f}  skill {_num(t['skill'])}  mean r {_num(t['mean_r'])}  "
            f"amplitude ratio {_num(t['amplitude_ratio'])}"
        )
    click.echo(
        f"  motion over {m['active_channels']} active channels (target std >= {ACTIVE_STD}): mean r "
        f"{_num(m['mean_r'])}  amplitude ratio {_num(m['amplitude_ratio'])} (median; 1 = the target's movement)"
    )
    click.echo(
        "  output gain (predict --gain): "
        + "; ".join(
            f"{r['gain']:g}: skill {_num(r['skill'])}, amplitude {_num(r['amplitude_ratio'])}" for r in ev["gains"]
        )
    )
    for g, v in m["groups"].items():
        if v["channels"]:
            click.echo(
                f"  {g:10s} ({v['channels']:3d} channels, {v['active_channels']:3d} active)  MSE {v['mse']:.5f}  "
                f"MAE {v['mae']:.5f}  skill {_num(v['skill'])}  mean r {_num(v['mean_r'])}  "
                f"amplitude ratio {_num(v['amplitude_ratio'])}"
            )
    click.echo(f"  {'channel':24s} {'MAE':>8s} {'r':>7s} {'amp':>7s}")
    for c, v in m["per_channel"].items():
        click.echo(
            f"  {c:24s} {v['mae']:8.5f} {_num(v['pearson_r'], 7)} {_num(v['amplitude_ratio'], 7)}"
            f"{'' if v['active'] else '  (flat)'}"
        )


def _num(x: float | None, width: int = 0) -> str:
    return f"{'n/a':>{width}s}" if x is None else f"{x:{width}.3f}"
