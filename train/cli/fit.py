"""bstrain fit and write-default-config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from blendsync.shared.cli import (
    UsageFailure,
    config_file_option,
    is_write_failure,
    progress_enabled,
    progress_option,
    write_failure,
    write_text_or_stdout,
)
from blendsync.shared.config import read_config_file
from blendsync.shared.settings import commented_yaml
from blendsync.train.cli.options import (
    config_key_option,
    config_values,
    device_option,
    manifest_option,
    set_option,
    store_option,
)
from blendsync.train.core.config import LOSS_PRESETS, ConfigOverrides, TrainConfig, preset_names


@click.command()
@store_option
@manifest_option
@config_file_option("Train config", "bstrain write-default-config")
@set_option
@config_key_option("--preset", key="preset", type=click.Choice(preset_names()))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run folder [default: runs/<store>-<time>].")
@config_key_option("--epochs", key="optim.epochs", type=click.IntRange(min=1))
@config_key_option("--max-steps", key="optim.max_steps", type=click.IntRange(min=1))
@config_key_option("--batch-streams", key="stream.batch_streams", type=click.IntRange(min=1))
@config_key_option("--stride", key="stream.stride", type=click.IntRange(min=1))
@config_key_option("--frames-per-window", "-K", key="stream.frames_per_window", type=click.IntRange(min=1))
@config_key_option("--loss", key="loss.preset", type=click.Choice(list(LOSS_PRESETS)))
@config_key_option("--validate-every", key="validation.every_steps", type=click.IntRange(min=0))
@config_key_option("--patience", key="validation.patience", type=click.IntRange(min=0))
@config_key_option("--compile/--no-compile", key="compile")
@device_option("auto")
@config_key_option("--seed", key="seed", type=int)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (its own config).")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    help="Training processes on this machine (DistributedDataParallel via torchrun; gloo on CPU, NCCL on GPUs).",
)
@click.option(
    "--stop-after-steps",
    type=click.IntRange(min=1),
    default=None,
    help="End this invocation after that many optimiser steps in all, saving last.pt, without changing the "
    "schedule (for time-boxed or preemptible jobs; continue with --resume).",
)
@click.option(
    "--allow-shared-audio",
    is_flag=True,
    help="Train even when the same audio (content hash) is in the training split and a validation or test "
    "split (refused by default: its scores would measure memory).",
)
@click.option(
    "--init-from",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Fine-tune: start from this checkpoint's weights (its model; a fresh optimiser and schedule). "
    "Channels are matched by name: new ones start at their training mean, missing ones are dropped. "
    "The store's features must be those it was trained on (its target channels may differ).",
)
@click.option(
    "--keep-normalization",
    is_flag=True,
    help="With --init-from: standardise features with the checkpoint's statistics instead of this training "
    "split's (target statistics are always this data's).",
)
@click.option(
    "--teacher",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Train also on the manifest's audio-only training rows (an empty targets cell), with this "
    "checkpoint's curves of them: computed once, kept in the store under the teacher's checksum. It must "
    "predict the store's channels at its frame rate (its features may differ: it then reads the audio files).",
)
@progress_option
@click.pass_context
def fit(
    ctx,
    store_path,
    manifest,
    config_path,
    out,
    device,
    resume,
    nproc,
    stop_after_steps,
    allow_shared_audio,
    init_from,
    keep_normalization,
    teacher,
    progress,
):
    """Stream 256-frame windows from the store in file order and train the dual-stream model;
    each window predicts a block of K frames.

    The config is the file's (or the defaults), then the preset, then every option that sets a
    config key (--epochs, -K, --set KEY=VALUE, ...). Validation: the manifest's val split, else
    the last validation.holdout_tail (10%) of every training take, which is then not trained on.
    best.pt keeps the best validation.metric (skill by default). Writes to the run folder:
    config.json, metrics.jsonl, TensorBoard events (tb/), checkpoints/ (last.pt, best.pt,
    step_N.pt), loss_curves.png, val_curves.png, stream_weights.png.
    """
    from blendsync.train.core.checkpoint import CheckpointError
    from blendsync.train.core.data import DataError
    from blendsync.train.loop.trainer import fit as run_fit

    cfg, written_loss = _config_file(config_path)
    try:
        overrides = ConfigOverrides.from_settings(config_values(ctx), written_loss)
    except ValueError as e:
        raise UsageFailure(str(e)) from None
    if resume:
        _check_resume(out, (["--config"] if config_path else []) + overrides.given(), init_from)
    start = _init_from(init_from, keep_normalization)
    if nproc > 1:
        _relaunch_with_torchrun(nproc, out)
    if out is None:
        import time

        out = Path("runs") / f"{Path(store_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    bar = _Bar(progress_enabled(progress))
    try:
        res = run_fit(
            store_path,
            cfg=cfg,
            out=out,
            manifest=manifest,
            overrides=overrides,
            device=device,
            resume=resume,
            on_step=bar.update,
            stop_after_steps=stop_after_steps,
            allow_shared_audio=allow_shared_audio,
            init_from=start,
            teacher=teacher,
        )
    except (DataError, CheckpointError, ValueError) as e:
        raise UsageFailure(str(e)) from None
    except OSError as e:
        if is_write_failure(e):
            raise write_failure(e) from None
        raise
    finally:
        bar.close()
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary: rank 0's
        click.echo(_fit_summary(res))


def _check_resume(out, given: list[str], init_from) -> None:
    if given:
        raise UsageFailure(
            f"--resume continues the run with the config it was started with ({out}/config.json), "
            f"so {', '.join(given)} would be ignored: drop them, or start a new run with --out"
        )
    if out is None:
        raise UsageFailure("--resume needs --out: the run folder to continue")
    if init_from:
        raise UsageFailure("--resume continues a run from its own last.pt; --init-from starts a new one")


def _init_from(init_from, keep_normalization: bool):
    """The --init-from checkpoint's weights (and statistics) to start from, or None."""
    from blendsync.train.core.checkpoint import CheckpointError

    if keep_normalization and not init_from:
        raise UsageFailure("--keep-normalization keeps the statistics of the --init-from checkpoint: give --init-from")
    if not init_from:
        return None
    from blendsync.train.loop.finetune import InitFrom

    try:
        return InitFrom.load(init_from, keep_normalization)
    except CheckpointError as e:
        raise UsageFailure(str(e)) from None


def _fit_summary(res) -> str:
    b = res.best
    value = "n/a" if b is None or b["value"] is None else round(b["value"], 4)
    best = "no validation" if b is None else f"best validation {b['metric']} {value} at step {b['step']}"
    early = "; stopped early: no better validation within validation.patience" if res.stopped_early else ""
    return f"trained {res.step} steps ({res.epoch} epochs) -> {res.run_dir} ({best}{early})"


def _config_file(path) -> tuple[TrainConfig, dict]:
    """(the config in the file, or the defaults; its loss section as written)."""
    if not path:
        return TrainConfig(), {}
    try:
        cfg = TrainConfig.load(path)  # checks the file whole, with clear messages
        loss = read_config_file(Path(path)).get("loss") or {}
    except (OSError, ValueError) as e:
        raise UsageFailure(str(e)) from None
    return cfg, loss if isinstance(loss, dict) else {}


def _relaunch_with_torchrun(nproc: int, out) -> None:
    """Run this same command in nproc processes under torchrun (--nproc removed) and exit
    with its status."""
    import subprocess

    if out is None:
        raise UsageFailure("--nproc needs --out: every process must write to the same run folder")
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        args.append(a)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "blendsync.train.cli",
        *args,
    ]
    sys.exit(subprocess.call(cmd))


class _Bar:
    """target frames/s, loss (as last logged), ETA."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar = enabled, None

    def update(self, rec: dict) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=rec["total_steps"], initial=rec["step"] - 1, unit="step", desc="train", dynamic_ncols=True
            )
        self.bar.update(1)
        loss = "-" if rec.get("loss") is None else f"{rec['loss']:.4f}"
        self.bar.set_postfix(loss=loss, frames_s=f"{rec['frames_per_s']:.0f}", epoch=rec["epoch"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


DEFAULT_CONFIG_HEADER = """bstrain train config: every key with its default and what it does. Every key is optional
in a config of your own; bstrain fit --set KEY=VALUE sets one from the command line."""


@click.command("write-default-config")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
def write_default_config(path):
    """Write the default train config, every key described, as YAML to PATH (or stdout)."""
    cfg = TrainConfig()
    write_text_or_stdout(commented_yaml(cfg, cfg.to_dict(), DEFAULT_CONFIG_HEADER), path)


@click.command()
@store_option
@manifest_option
@config_file_option(
    "Train config (its model, window, batch streams, seed and optimiser)", "bstrain write-default-config"
)
@set_option
@config_key_option("--preset", key="preset", type=click.Choice(preset_names()))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Pretraining run folder.")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="Optimiser steps.")
@click.option(
    "--mask-fraction",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.15,
    show_default=True,
    help="Share of a window's frames hidden from both encoders, to be predicted.",
)
@click.option(
    "--span-frames", type=click.IntRange(min=1), default=10, show_default=True, help="Frames per hidden span."
)
@click.option(
    "--checkpoint-every", type=click.IntRange(min=1), default=20, show_default=True, help="Steps between saves."
)
@device_option("auto")
@click.option("--resume", is_flag=True, help="Continue the pretraining run in --out from its last save.")
@click.option("--stop-after-steps", type=click.IntRange(min=1), default=None, hidden=True)
@click.pass_context
def pretrain(
    ctx, store_path, manifest, config_path, out, steps, mask_fraction, span_frames, checkpoint_every, device, resume,
    stop_after_steps,
):  # fmt: skip
    """Pretrain both encoders on every training item of the manifest, with curves or without:
    masked-frame prediction of the mel and eGeMAPS frames. Writes OUT/checkpoints/best.pt
    (lowest masked loss on the val split) and last.pt, for bstrain fit --init-from; the same
    --preset (model sizes) as the fit that starts from it.
    """
    from blendsync.train.core.data import DataError
    from blendsync.train.loop.pretrain import PretrainConfig
    from blendsync.train.loop.pretrain import pretrain as run_pretrain

    cfg, written_loss = _config_file(config_path)
    try:
        overrides = ConfigOverrides.from_settings(config_values(ctx), written_loss)
        cfg, _ = overrides.resolve(cfg, "cpu")
        settings = PretrainConfig(
            steps=steps, mask_fraction=mask_fraction, span_frames=span_frames, checkpoint_every=checkpoint_every
        )
    except ValueError as e:
        raise UsageFailure(str(e)) from None
    if resume and (config_path or overrides.given()):
        raise UsageFailure("--resume continues the run with its own config: drop --config, --preset and --set")
    try:
        res = run_pretrain(store_path, cfg=cfg, out=out, settings=settings, manifest=manifest, resume=resume,
                           stop_after_steps=stop_after_steps, device=device)  # fmt: skip
    except (DataError, ValueError) as e:
        raise UsageFailure(str(e)) from None
    except OSError as e:
        if is_write_failure(e):
            raise write_failure(e) from None
        raise
    loss = "n/a" if res.best_loss is None else f"{res.best_loss:.4f}"
    click.echo(
        f"pretrained {res.step} steps on {res.items} items ({res.frames} frames) -> {res.run_dir} "
        f"(best masked loss {loss}); start a fit from it: bstrain fit --init-from {res.run_dir}/checkpoints/best.pt"
    )
