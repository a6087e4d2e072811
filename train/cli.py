"""bstrain: the trainer CLI, a thin click layer over blendsync.train.

Exit codes: 0 done; 1 unusable arguments or data (empty split, store without targets,
feature config different from a checkpoint's, unreadable checkpoint).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import numpy as np

from blendsync.shared.config import read_config_file
from blendsync.shared.cli import (UsageFailure, is_write_failure, reported_errors, run_cli, setup_logging, write_failure,
                                  write_text_or_stdout)
from blendsync.shared.channels import CHANNEL_ORDERS
from blendsync.train.core.config import ConfigOverrides, TrainConfig


@click.group(context_settings=dict(show_default=True, help_option_names=["-h", "--help"]))
@click.option("-v", "--verbose", count=True, help="More log output (-v: per-parameter grad norms).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only.")
def cli(verbose: int, quiet: bool) -> None:
    """Train speech-to-blendshape models on a bsfeat feature store."""
    setup_logging(verbose, quiet)


@cli.command()
@click.option("--store", "store_path", required=True, metavar="PATH|URL",
              help="Feature store made by bsfeat extract (a directory or an fsspec URL).")
@click.option("--manifest", default=None, help="Manifest index in the store [default: the only one, else all items].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Train config (YAML/JSON); see write-default-config.")
@click.option("--preset", type=click.Choice(["small", "full"]), default=None,
              help="Model sizes [default: full on a GPU, small on a CPU].")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run folder [default: runs/<store>-<time>].")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs [default: from the config, 10].")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many optimiser steps.")
@click.option("--batch-streams", type=click.IntRange(min=1), default=None, help="Parallel streams B [default: preset's].")
@click.option("--stride", type=click.IntRange(min=1), default=None,
              help="Training blocks start every K x stride frames (stride 1: every frame a target) [default: 1].")
@click.option("--frames-per-window", "-K", "frames_per_window", type=click.IntRange(min=1), default=None,
              help="K: frames one window predicts (stream.frames_per_window; 1 = one output per window) "
                   "[default: from the config, 128].")
@click.option("--loss", "loss_preset", type=click.Choice(["default", "notes", "mse"]), default=None,
              help="Loss preset (loss.preset; the config's other loss keys still override it): default, the "
                   "method notes' weights (notes) or plain MSE [default: from the config, default].")
@click.option("--validate-every", type=click.IntRange(min=0), default=None,
              help="Validate every N optimiser steps and at the end (0: every epoch) [default: from the config, 0].")
@click.option("--patience", type=click.IntRange(min=0), default=None,
              help="Stop after N validations without a better validation metric (0: never) [default: from the config, 0].")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="torch.compile the model for training [default: from the config, off].")
@click.option("--device", default="auto", help="auto, cpu, cuda, cuda:N.")
@click.option("--seed", type=int, default=None, help="Random seed [default: from the config, 0].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (its own config).")
@click.option("--nproc", type=click.IntRange(min=1), default=1,
              help="Training processes on this machine (DistributedDataParallel via torchrun; gloo on CPU, NCCL on GPUs).")
@click.option("--stop-after-steps", type=click.IntRange(min=1), default=None,
              help="End this invocation after that many optimiser steps in all, saving last.pt, without "
                   "changing the schedule (for time-boxed or preemptible jobs; continue with --resume).")
@click.option("--allow-shared-audio", is_flag=True,
              help="Train even when the same audio (content hash) is in the training split and a validation "
                   "or test split (refused by default: its scores would measure memory).")
@click.option("--init-from", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Fine-tune: start from this checkpoint's weights (its model; a fresh optimiser and schedule). "
                   "Channels are matched by name: new ones start at their training mean, missing ones are dropped. "
                   "The store's features must be those it was trained on (its target channels may differ).")
@click.option("--keep-normalization", is_flag=True,
              help="With --init-from: standardise features with the checkpoint's statistics instead of this "
                   "training split's (target statistics are always this data's).")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
def fit(store_path, manifest, config_path, preset, out, epochs, max_steps, batch_streams, stride,
        frames_per_window, loss_preset, validate_every, patience, compile_, device, seed, resume, nproc, stop_after_steps,
        allow_shared_audio, init_from, keep_normalization, progress):
    """Stream 256-frame windows from the store in file order and train the dual-stream model;
    each window predicts a block of K frames.

    Validation: the manifest's val split, else the last validation.holdout_tail (10%) of every
    training take, which is then not trained on. best.pt keeps the best validation.metric
    (skill by default). Writes to the run folder: config.json, metrics.jsonl, TensorBoard events (tb/),
    checkpoints/ (last.pt, best.pt, step_N.pt), loss_curves.png, val_curves.png,
    stream_weights.png.
    """
    from blendsync.train.core.checkpoint import CheckpointError
    from blendsync.train.core.data import DataError
    from blendsync.train.loop.trainer import fit as run_fit

    cfg, written_loss = _config_file(config_path)
    overrides = ConfigOverrides(preset, epochs, max_steps, batch_streams, stride, frames_per_window, loss_preset,
                                validate_every, patience, seed, compile_, written_loss=written_loss)
    if resume:
        given = (["--config"] if config_path else []) + overrides.given()
        if given:
            raise UsageFailure(f"--resume continues the run with the config it was started with ({out}/config.json), "
                               f"so {', '.join(given)} would be ignored: drop them, or start a new run with --out")
        if out is None:
            raise UsageFailure("--resume needs --out: the run folder to continue")
        if init_from:
            raise UsageFailure("--resume continues a run from its own last.pt; --init-from starts a new one")
    if keep_normalization and not init_from:
        raise UsageFailure("--keep-normalization keeps the statistics of the --init-from checkpoint: give --init-from")
    start = None
    if init_from:
        from blendsync.train.loop.finetune import InitFrom

        try:
            start = InitFrom.load(init_from, keep_normalization)
        except CheckpointError as e:
            raise UsageFailure(str(e)) from None
    if nproc > 1:
        _relaunch_with_torchrun(nproc, out)
    if out is None:
        import time

        out = Path("runs") / f"{Path(store_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    show = sys.stderr.isatty() if progress is None else progress
    bar = _Bar(show)
    try:
        res = run_fit(store_path, cfg=cfg, out=out, manifest=manifest, overrides=overrides, device=device,
                      resume=resume, on_step=bar.update, stop_after_steps=stop_after_steps,
                      allow_shared_audio=allow_shared_audio, init_from=start)
    except (DataError, CheckpointError, ValueError) as e:
        raise UsageFailure(str(e)) from None
    except OSError as e:
        if is_write_failure(e):
            raise write_failure(e) from None
        raise
    finally:
        bar.close()
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary: rank 0's
        b = res.best
        best = ("no validation" if b is None else
                f"best validation {b['metric']} {'n/a' if b['value'] is None else round(b['value'], 4)} at step {b['step']}")
        click.echo(f"trained {res.step} steps ({res.epoch} epochs) -> {res.run_dir} ({best}"
                   f"{'; stopped early: no better validation within validation.patience' if res.stopped_early else ''})")


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
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "blendsync.train.cli", *args]
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

            self.bar = tqdm(total=rec["total_steps"], initial=rec["step"] - 1, unit="step",
                            desc="train", dynamic_ncols=True)
        self.bar.update(1)
        loss = "-" if rec.get("loss") is None else f"{rec['loss']:.4f}"
        self.bar.set_postfix(loss=loss, frames_s=f"{rec['frames_per_s']:.0f}", epoch=rec["epoch"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", default="predictions", type=click.Path(file_okay=False, path_type=Path))
@click.option("--fps", type=click.Choice(["30", "60"]), default="60", help="Frame rate of the written curves.")
@click.option("--format", "formats", multiple=True, type=click.Choice(["livelink", "npy", "json"]),
              default=("livelink",), help="Repeat for several.")
@click.option("--device", default="cpu")
@click.option("--plot/--no-plot", default=True, help="PNG of the main curves over the waveform.")
@click.option("--chunk-seconds", type=click.FloatRange(min=0.05), default=None,
              help="Process audio as a stream of chunks of this length (same curves as whole-file).")
@click.option("--frames-per-window", "-K", "frames_per_window", type=click.IntRange(min=1), default=None,
              help="Predict blocks of K frames, at most the trained K (fewer: lower streaming latency, "
                   "more compute per frame) [default: the checkpoint's].")
@click.option("--gain", default="1",
              help="Scale the predicted movement around the training mean (> 1: livelier, at some error; "
                   "bstrain evaluate shows the trade on held-out data), or 'calibrated': the gain with the lowest "
                   "validation error, fitted when the checkpoint was kept.")
@click.option("--channel-order", type=click.Choice(["model", *CHANNEL_ORDERS]), default="model",
              help="Column order of the npy and json outputs, by channel name: the model's own, the Live Link "
                   "Face CSV's (livelink), Unreal's EARFaceBlendShape (unreal), alphabetical (MediaPipe, "
                   "EmoTalk), or their 61-value layouts with head and eye rotations as zeros.")
def predict(inputs, checkpoint, out_dir, fps, formats, device, plot, chunk_seconds, frames_per_window, gain,
            channel_order):
    """Animate INPUTS (audio files, directories of audio, or manifests) with a checkpoint.

    Features come from the checkpoint's own feature config through the same per-file
    function as bsfeat. Writes per file a Live Link Face CSV (Timecode from 00:00:00:00.000,
    BlendshapeCount 61, the 52 ARKit curves, head/eye rotations as zeros) and/or .npy (T, C)
    and .json, plus a PNG. Bad files are reported and skipped (exit 2).
    """
    from blendsync.train.core.checkpoint import CheckpointError
    from blendsync.train.inference.predict import predict as run_predict

    try:
        rep = run_predict(list(inputs), checkpoint, out_dir, fps=float(fps), formats=tuple(formats),
                          device=device, plot=plot, chunk_seconds=chunk_seconds,
                          frames_per_window=frames_per_window, gain=gain,
                          channel_order=None if channel_order == "model" else channel_order)
    except (CheckpointError, ValueError) as e:
        raise UsageFailure(str(e)) from None
    except OSError as e:
        if is_write_failure(e):
            raise write_failure(e) from None
        raise
    click.echo(f"{len(rep.animated)} audio file(s) animated, {len(rep.written)} file(s) written to {out_dir}; "
               f"{rep.audio_s:.1f} s of audio at "
               f"{rep.real_time_factor:.1f}x real time (featurize {rep.featurize_s:.2f} s, "
               f"model {rep.model_s:.2f} s)")
    if rep.latency_s is not None:
        click.echo(f"streaming latency: up to {1000 * rep.latency_s:.0f} ms (chunk + extractor margin + "
                   f"lookahead + K - 1 frames) + compute {1000 * rep.model_s / max(rep.audio_s, 1e-9):.0f} ms per second of audio")
    if rep.failed:
        for line in rep.failed:
            click.echo(f"  failed: {line}", err=True)
        sys.exit(2)


@cli.command()
@click.argument("audio", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "target", default=f"127.0.0.1:11111", show_default=True,
              help="HOST:PORT of the Live Link Face receiver (Unreal's Live Link Face source listens on 11111).")
@click.option("--subject", default="blendsync", show_default=True, help="Live Link subject name.")
@click.option("--fps", type=click.IntRange(1, 240), default=60, show_default=True, help="Frames per second sent.")
@click.option("--start-timecode", default="00:00:00:00", show_default=True,
              help="HH:MM:SS:FF of the first frame (FF counted at --fps); frame numbers count on from it.")
@click.option("--realtime/--no-realtime", default=True, show_default=True,
              help="Pace the audio and the frames in real time, or send as fast as possible.")
@click.option("--stdin-pcm", is_flag=True, help="Read raw little-endian int16 PCM from stdin instead of AUDIO.")
@click.option("--sample-rate", type=click.IntRange(min=1000), default=16000, show_default=True,
              help="Rate of --stdin-pcm audio.")
@click.option("--channels", "n_channels", type=click.IntRange(min=1), default=1, show_default=True,
              help="Channels of --stdin-pcm audio.")
@click.option("--chunk-seconds", type=click.FloatRange(min=0.01), default=0.1, show_default=True,
              help="Audio taken per step.")
@click.option("--frames-per-window", "-K", "frames_per_window", type=click.IntRange(min=1), default=None,
              help="Blocks of K frames, at most the trained K (fewer: lower latency, more compute per frame).")
@click.option("--device", default="cpu")
def stream(audio, checkpoint, target, subject, fps, start_timecode, realtime, stdin_pcm, sample_rate, n_channels,
           chunk_seconds, frames_per_window, device):
    """Animate AUDIO (or raw PCM on stdin) and send each frame to a Live Link Face receiver over
    UDP (packet version 6, the 52 curves in Unreal's order, then 9 rotations as zeros)."""
    from blendsync.train.core.checkpoint import CheckpointError
    from blendsync.train.inference.livelink import file_chunks, stdin_chunks, stream_audio
    from blendsync.train.inference.predict import Predictor

    if (audio is None) == (not stdin_pcm):
        raise UsageFailure("give AUDIO or --stdin-pcm (one of them)")
    host, _, port = target.rpartition(":")
    try:
        port_n = int(port)
        h, m, sec, ff = (int(x) for x in start_timecode.split(":"))
    except ValueError:
        raise UsageFailure(f"--to {target!r} must be HOST:PORT and --start-timecode HH:MM:SS:FF") from None
    try:
        pred = Predictor.load(checkpoint, device, frames_per_window)
        chunks, rate = (stdin_chunks(sample_rate, n_channels, chunk_seconds), sample_rate) if stdin_pcm \
            else file_chunks(audio, chunk_seconds)
        rep = stream_audio(pred, chunks, rate, host=host or "127.0.0.1", port=port_n, subject=subject, fps=fps,
                           start_frame=((h * 60 + m) * 60 + sec) * fps + ff, realtime=realtime)
    except (CheckpointError, ValueError) as e:
        raise UsageFailure(str(e)) from None
    lat = np.asarray(rep.latencies) * 1000 if rep.latencies else np.zeros(1)
    click.echo(f"sent {rep.frames} frames at {fps} fps for {rep.audio_s:.1f} s of audio to {host}:{port_n} "
               f"(subject {subject!r}); frame latency after its audio instant: median {np.median(lat):.0f} ms, "
               f"max {lat.max():.0f} ms")


@cli.command()
@click.argument("audio", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--targets", default=None,
              help="The take's own curves, drawn beside the prediction: a Live Link Face CSV, or an .npz[:NAME] "
                   "or .h5:/DATASET that holds its fps.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="MP4 to write [default: AUDIO's name + .mp4 in the current folder].")
@click.option("--fps", type=click.Choice(["30", "60"]), default="30", show_default=True)
@click.option("--device", default="cpu")
def preview(audio, checkpoint, targets, out, fps, device):
    """Write an MP4 of AUDIO with a face drawn from the predicted curves (left) and, with
    --targets, from the take's own curves (right)."""
    from blendsync.train.inference.preview import preview as run_preview

    with reported_errors():
        path = run_preview(audio, checkpoint, out or Path(audio.stem + ".mp4"), targets=targets, fps=int(fps),
                           device=device)
    click.echo(f"wrote {path}")


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--store", "store_path", required=True, metavar="PATH|URL",
              help="Feature store (a directory or an fsspec URL).")
@click.option("--manifest", default=None)
@click.option("--split", default="test", help="Split to score.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plots", "plot_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the curve plots [default: none].")
@click.option("--device", default="cpu")
@click.option("--gain", default="1", help="Score with this output gain (as predict --gain; 'calibrated' too).")
def evaluate(checkpoint, store_path, manifest, split, as_json, plot_dir, device, gain):
    """Score a checkpoint on a split of a store: the trainer's validation metrics."""
    import json as _json

    from blendsync.train.core.checkpoint import CheckpointError
    from blendsync.train.core.data import DataError
    from blendsync.train.core.config import LOSS_TERMS
    from blendsync.train.loop.evaluation import evaluate_checkpoint
    from blendsync.train.core.metrics import ACTIVE_STD

    try:
        ev = evaluate_checkpoint(checkpoint, store_path, manifest=manifest, split=split, device=device, gain=gain)
    except (CheckpointError, DataError, ValueError) as e:
        raise UsageFailure(str(e)) from None
    m = ev["metrics"]
    if plot_dir is not None:
        from blendsync.train.core.plots import plot_curves

        plot_dir.mkdir(parents=True, exist_ok=True)
        for fid, pred in ev["pred"].items():
            plot_curves(pred, ev["target"][fid], ev["channels"], ev["fps"], f"{split}: {fid}",
                        plot_dir / f"{Path(str(fid)).name}.png")
    if as_json:
        click.echo(_json.dumps({"split": split, "gain": ev["gain"], "terms": ev["terms"], "metrics": m,
                                "gains": ev["gains"]}, indent=2))
        return
    click.echo(f"split {split}: {m['frames']} frames")
    click.echo(f"  loss {ev['terms']['loss']:.5f}  " + "  ".join(f"{k} {ev['terms'][k]:.5f}" for k in LOSS_TERMS))
    click.echo(f"  MSE {m['mse']:.5f}  MAE {m['mae']:.5f}  mean-predictor MSE {m['mse_mean_predictor']:.5f}  "
               f"skill {_num(m['skill'])}")
    t = m["trained"]
    if m["still"]:
        click.echo(f"  trained channels ({t['channels']} of {len(ev['channels'])}; {len(m['still'])} still in training, "
                   f"predicted 0): MSE {t['mse']:.5f}  skill {_num(t['skill'])}  mean r {_num(t['mean_r'])}  "
                   f"amplitude ratio {_num(t['amplitude_ratio'])}")
    click.echo(f"  motion over {m['active_channels']} active channels (target std >= {ACTIVE_STD}): mean r "
               f"{_num(m['mean_r'])}  amplitude ratio {_num(m['amplitude_ratio'])} (median; 1 = the target's movement)")
    click.echo("  output gain (predict --gain): " + "; ".join(
        f"{r['gain']:g}: skill {_num(r['skill'])}, amplitude {_num(r['amplitude_ratio'])}" for r in ev["gains"]))
    for g, v in m["groups"].items():
        if v["channels"]:
            click.echo(f"  {g:10s} ({v['channels']:3d} channels, {v['active_channels']:3d} active)  MSE {v['mse']:.5f}  "
                       f"MAE {v['mae']:.5f}  skill {_num(v['skill'])}  mean r {_num(v['mean_r'])}  "
                       f"amplitude ratio {_num(v['amplitude_ratio'])}")
    click.echo(f"  {'channel':24s} {'MAE':>8s} {'r':>7s} {'amp':>7s}")
    for c, v in m["per_channel"].items():
        click.echo(f"  {c:24s} {v['mae']:8.5f} {_num(v['pearson_r'], 7)} {_num(v['amplitude_ratio'], 7)}"
                   f"{'' if v['active'] else '  (flat)'}")


def _num(x: float | None, width: int = 0) -> str:
    return f"{'n/a':>{width}s}" if x is None else f"{x:{width}.3f}"


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", required=True, type=click.Choice(["onnx", "torchscript"]))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--frames-per-window", "-K", "frames_per_window", type=click.IntRange(min=1), default=None,
              help="Frames per window of the graph, at most the trained K [default: the checkpoint's].")
def export(checkpoint, fmt, out, frames_per_window):
    """Export the model for a runtime: inputs mel, emotion, frame_mask, prev, has_prev
    (dynamic batch); outputs current and smoothed (B, K, C), the K frames of each window's
    block. Standardisation is inside the graph. A JSON sidecar (OUT.json) lists channels, fps,
    window, lookahead, frames_per_window, feature config and statistics."""
    from blendsync.train.inference.export import export as run_export

    with reported_errors():
        side = run_export(checkpoint, out, fmt, frames_per_window)
    click.echo(f"wrote {out} and {side}")


@cli.command("write-default-config")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
def write_default_config(path):
    """Write the default train config as YAML to PATH (or stdout)."""
    text = (
        "# bstrain config. preset: auto (full on a GPU, small on a CPU), small or full replace the\n"
        "# model sizes and stream.batch_streams with the preset's; custom uses them as written.\n"
        + TrainConfig().to_yaml()
    )
    write_text_or_stdout(text, path)


def main(argv: list[str] | None = None) -> None:
    run_cli(cli, "bstrain", argv)


if __name__ == "__main__":
    main()
