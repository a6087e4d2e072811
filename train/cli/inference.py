"""bstrain predict, stream, preview and export: a trained model on new audio."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from blendsync.shared.channels import CHANNEL_ORDERS
from blendsync.shared.cli import (
    FiniteFloatRange,
    UsageFailure,
    is_write_failure,
    progress_enabled,
    progress_option,
    reported_errors,
    write_failure,
)
from blendsync.train.cli.options import (
    checkpoint_option,
    curve_fps_option,
    device_option,
    frames_per_window_option,
    gain_option,
)
from blendsync.train.inference.export import FORMATS as EXPORT_FORMATS
from blendsync.train.inference.export import GRAPHS as EXPORT_GRAPHS
from blendsync.train.inference.outputs import CURVE_FORMATS


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@checkpoint_option
@click.option(
    "--out",
    "out_dir",
    default="predictions",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the written files; an input's path under a searched directory is kept under it.",
)
@curve_fps_option("60")
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(list(CURVE_FORMATS)),
    default=("livelink",),
    help="Curve files to write per audio file (repeat for several): "
    + "; ".join(f"{k}: {f.doc}" for k, f in CURVE_FORMATS.items())
    + ".",
)
@device_option("cpu")
@click.option("--plot/--no-plot", default=True, help="PNG of the main curves over the waveform.")
@click.option(
    "--chunk-seconds",
    type=FiniteFloatRange(min=0.05),
    default=None,
    help="Process audio as a stream of chunks of this length (same curves as whole-file).",
)
@frames_per_window_option
@gain_option
@click.option(
    "--channel-order",
    type=click.Choice(["model", *CHANNEL_ORDERS]),
    default="model",
    help="Column order of the npy and json outputs, by channel name: the model's own, the Live Link "
    "Face CSV's (livelink), Unreal's EARFaceBlendShape (unreal), alphabetical (MediaPipe, "
    "EmoTalk), or their 61-value layouts with head and eye rotations as zeros.",
)
def predict(
    inputs, checkpoint, out_dir, fps, formats, device, plot, chunk_seconds, frames_per_window, gain, channel_order
):
    """Animate INPUTS (audio files, directories of audio, or manifests) with a checkpoint.

    Features come from the checkpoint's own feature config through the same per-file
    function as bsfeat. Writes per file a Live Link Face CSV (Timecode from 00:00:00:00.000,
    BlendshapeCount 61, the 52 ARKit curves, head/eye rotations as zeros) and/or .npy (T, C)
    and .json, plus a PNG. Bad files are reported and skipped (exit 2).
    """
    # Not the predictor: it imports torch, which the files' features do not wait for (batch).
    from blendsync.train.inference.allocator import keep_freed_memory
    from blendsync.train.inference.batch import predict as run_predict

    keep_freed_memory()

    try:
        rep = run_predict(
            list(inputs),
            checkpoint,
            out_dir,
            fps=float(fps),
            formats=tuple(formats),
            device=device,
            plot=plot,
            chunk_seconds=chunk_seconds,
            frames_per_window=frames_per_window,
            gain=gain,
            channel_order=None if channel_order == "model" else channel_order,
        )
    except ValueError as e:  # CheckpointError included
        raise UsageFailure(str(e)) from None
    except OSError as e:
        if is_write_failure(e):
            raise write_failure(e) from None
        raise
    if rep.failed and not rep.animated:  # nothing to sum up: the reasons only
        for line in rep.failed:
            click.echo(f"error: {line}", err=True)
        sys.exit(2)
    click.echo(
        f"{len(rep.animated)} audio file(s) animated, {len(rep.written)} file(s) written to {out_dir}; "
        f"{rep.audio_s:.1f} s of audio at "
        f"{rep.real_time_factor:.1f}x real time ({rep.wall_s:.2f} s; summed over files: featurize "
        f"{rep.featurize_s:.2f} s, model {rep.model_s:.2f} s)"
    )
    if rep.latency_s is not None:
        click.echo(
            f"streaming latency: up to {1000 * rep.latency_s:.0f} ms (chunk + extractor margin + "
            f"lookahead + K - 1 frames) + compute {1000 * rep.model_s / max(rep.audio_s, 1e-9):.0f} ms per second of "
            "audio"
        )
    if rep.failed:
        for line in rep.failed:
            click.echo(f"  failed: {line}", err=True)
        sys.exit(2)


@click.command()
@click.argument("audio", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@checkpoint_option
@click.option(
    "--to",
    "target",
    default="127.0.0.1:11111",
    show_default=True,
    help="HOST:PORT ([IPv6]:PORT) of the Live Link Face receiver (Unreal's Live Link Face source listens on 11111).",
)
@click.option("--subject", default="blendsync", show_default=True, help="Live Link subject name.")
@click.option(
    "--fps",
    type=click.IntRange(1, 240),
    default=None,
    help="Frames per second sent [default: the model's own for a live model (no wait for the next model frame), "
    "60 for an offline one].",
)
@click.option(
    "--start-timecode",
    default="00:00:00:00",
    show_default=True,
    help="HH:MM:SS:FF of the first frame (FF counted at --fps); frame numbers count on from it.",
)
@click.option(
    "--realtime/--no-realtime",
    default=True,
    show_default=True,
    help="Take a file's audio at its own pace and send frames evenly a fixed delay behind it, or send every "
    "frame as fast as it is computed.",
)
@click.option("--stdin-pcm", is_flag=True, help="Read raw little-endian int16 PCM from stdin instead of AUDIO.")
@click.option(
    "--mic",
    is_flag=True,
    help="Read an input device (a microphone: the default one, or --input-device) instead of AUDIO, until "
    "Ctrl-C; needs pip install -e '.[mic]' and PortAudio (apt-get install libportaudio2). --sample-rate and "
    "--channels set its format.",
)
@click.option(
    "--input-device",
    default=None,
    metavar="NAME|INDEX",
    help="The --mic device: its index or a part of its name, as --list-devices shows them [default: the system's "
    "default input].",
)
@click.option(
    "--list-devices",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=lambda ctx, param, value: _list_devices(ctx) if value else None,
    help="List the audio input devices (index, name, channels, default rate) and exit.",
)
@click.option(
    "--sample-rate",
    type=click.IntRange(min=1000, max=768000),
    default=None,
    help="Rate of --stdin-pcm audio [default: 16000] or --mic audio [default: the device's own rate]. Any rate "
    "streams at the same latency.",
)
@click.option(
    "--channels",
    "n_channels",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Channels of --stdin-pcm or --mic audio.",
)
@click.option(
    "--chunk-seconds",
    type=FiniteFloatRange(min=0.001),
    default=None,
    help="Audio taken per step [default: 0.01 for a live model (a sound card's buffer), 0.1 for an offline one].",
)
@frames_per_window_option
@device_option("cpu")
def stream(
    audio,
    checkpoint,
    target,
    subject,
    fps,
    start_timecode,
    realtime,
    stdin_pcm,
    mic,
    input_device,
    sample_rate,
    n_channels,
    chunk_seconds,
    frames_per_window,
    device,
):
    """Animate AUDIO (or raw PCM on stdin) and send each frame to a Live Link Face receiver over
    UDP (packet version 6, the 52 curves in Unreal's order, then 9 rotations as zeros).

    A live model (bstrain fit --preset live) steps frame by frame and frames leave evenly, a
    fixed delay behind the audio (its lookahead, the features' right context, the chunk and a
    margin for compute); late and dropped frames are counted. An offline model streams block
    by block, seconds behind. Prints the latency after each frame's instant (p50, p99, max) and
    the CPU share at the end (every 5 s as well with -v)."""
    import logging

    from blendsync.train.core.checkpoint import CheckpointError
    from blendsync.train.inference.livelink import LiveLinkSender
    from blendsync.train.inference.predict import Predictor
    from blendsync.train.inference.stream import stream_audio

    if (audio is not None) + stdin_pcm + mic != 1:
        raise UsageFailure("give one source: AUDIO, --stdin-pcm or --mic")
    if input_device is not None and not mic:
        raise UsageFailure("--input-device picks the --mic device: give --mic")
    host, port_n = _live_link_target(target)
    h, m, sec, ff = _start_timecode(start_timecode, fps)
    if not subject.strip() or len(subject.encode("utf-8")) > MAX_SUBJECT_BYTES:
        raise UsageFailure(f"--subject must be a name of 1 to {MAX_SUBJECT_BYTES} bytes (UTF-8)")
    try:
        pred = Predictor.load(checkpoint, device, frames_per_window)
        live = getattr(pred.model, "streaming", False)
        import torch

        # A frame's (or a block's) work is too small to share: more threads only spin (2.4x the
        # CPU with 2 for the live model).
        torch.set_num_threads(1)
        fps = fps or (int(round(pred.fps)) if live else 60)
        if ff >= fps:
            raise UsageFailure(f"--start-timecode {start_timecode!r}: frame {ff} does not exist at {fps} fps")
        chunk_seconds = chunk_seconds or (0.01 if live else 0.1)
        chunks, rate = _stream_source(audio, mic, input_device, sample_rate, n_channels, chunk_seconds)
        sender = LiveLinkSender(pred.channels, host=host, port=port_n, subject=subject, fps=fps,
                                start_frame=((h * 60 + m) * 60 + sec) * fps + ff)  # fmt: skip
        verbose = logging.getLogger("blendsync").getEffectiveLevel() <= logging.DEBUG
        last = [0.0]

        def progress(rep) -> None:
            if verbose and rep.wall_s - last[0] >= 5.0:
                last[0] = rep.wall_s
                click.echo(f"  {rep.audio_s:.0f} s of audio, {len(rep.latencies)} frames: {rep.summary()}", err=True)

        try:
            source = str(audio) if audio is not None else "stdin" if stdin_pcm else "the microphone"
            rep = stream_audio(pred, chunks, rate, sender, fps=fps, realtime=realtime, chunk_seconds=chunk_seconds,
                               from_file=audio is not None, on_progress=progress, source=source)  # fmt: skip
        finally:
            sender.close()
    except (CheckpointError, ValueError) as e:
        raise UsageFailure(str(e)) from None
    click.echo(
        f"sent {rep.frames} frames at {fps} fps for {rep.audio_s:.1f} s of audio to {target} (subject {subject!r}); "
        + (f"paced {1000 * rep.delay_s:.0f} ms behind the audio; " if rep.delay_s is not None else "")
        + rep.summary()
    )


def _stream_source(audio, mic: bool, input_device, sample_rate, n_channels: int, chunk_seconds: float):
    """(chunks, their rate) of a stream's source: a file, an input device or PCM on stdin."""
    from blendsync.train.inference.sources import (
        file_chunks,
        input_devices,
        mic_chunks,
        pick_input_device,
        stdin_chunks,
    )

    if audio is not None:
        return file_chunks(audio, chunk_seconds)
    if not mic:
        rate = sample_rate or 16000
        return stdin_chunks(rate, n_channels, chunk_seconds), rate
    dev = pick_input_device(input_devices(), input_device)
    if n_channels > dev["channels"]:
        raise ValueError(f"--channels {n_channels}: {dev['name']} has {dev['channels']} input channel(s)")
    rate = sample_rate or int(dev["sample_rate"])
    click.echo(f"input device {dev['index']}: {dev['name']} at {rate} Hz", err=True)
    return mic_chunks(rate, n_channels, chunk_seconds, dev["index"]), rate


def _list_devices(ctx: click.Context) -> None:
    from blendsync.train.inference.sources import input_devices

    try:
        devices = input_devices()
    except ValueError as e:
        raise UsageFailure(str(e)) from None
    if not devices:
        click.echo("no audio input devices found")
    for d in devices:
        mark = " (default)" if d["default"] else ""
        click.echo(f"{d['index']:3d}  {d['name']}{mark}: {d['channels']} channel(s), {d['sample_rate']:g} Hz")
    ctx.exit(0)


# A Live Link subject name: what Unreal shows in its subject list (the packet allows more, a
# receiver's buffer does not).
MAX_SUBJECT_BYTES = 256


def _start_timecode(text: str, fps: int | None) -> tuple[int, int, int, int]:
    """HH:MM:SS:FF -> its fields, within a day; the frame below fps (checked again once fps is
    the model's)."""
    try:
        h, m, s, ff = (int(x) for x in text.split(":"))
    except ValueError:
        raise UsageFailure(f"--start-timecode {text!r} must be HH:MM:SS:FF") from None
    if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 60 and 0 <= ff < (fps or 1000)):
        raise UsageFailure(
            f"--start-timecode {text!r} must be HH:MM:SS:FF within a day: hours 0-23, minutes and seconds 0-59, "
            "frame 0 to fps - 1"
        )
    return h, m, s, ff


def _live_link_target(target: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT -> (host, port), checked before any work is done."""
    import socket

    host, sep, port = target.rpartition(":")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise UsageFailure(f"--to {target!r} must be HOST:PORT; an IPv6 address goes in brackets ([::1]:11111)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port_n = int(port)
    except ValueError:
        port_n = -1
    if not sep or not host or not 1 <= port_n <= 65535:
        raise UsageFailure(f"--to {target!r} must be HOST:PORT with a port in 1-65535 ([::1]:11111 for IPv6)")
    try:
        socket.getaddrinfo(host, port_n, type=socket.SOCK_DGRAM)
    except OSError as e:
        raise UsageFailure(f"--to {target!r}: cannot resolve {host!r} ({e})") from None
    return host, port_n


@click.command()
@click.argument("audio", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@checkpoint_option
@click.option(
    "--targets",
    default=None,
    help="The take's own curves, drawn beside the prediction: a Live Link Face CSV, or an .npz[:NAME] "
    "or .h5:/DATASET that holds its fps.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="MP4 to write [default: AUDIO's name + .mp4 in the current folder].",
)
@curve_fps_option("30")
@device_option("cpu")
@progress_option
def preview(audio, checkpoint, targets, out, fps, device, progress):
    """Write an MP4 of AUDIO with a face drawn from the predicted curves (left) and, with
    --targets, from the take's own curves (right). The face is ARKit's: a model of another
    rig draws the channels named like ARKit's (none: refused)."""
    from blendsync.train.inference.preview import preview as run_preview

    bar = None
    if progress_enabled(progress):
        from tqdm import tqdm

        bar = tqdm(unit="frame", desc="preview", dynamic_ncols=True)
    try:
        with reported_errors():
            path = run_preview(
                audio,
                checkpoint,
                out or Path(audio.stem + ".mp4"),
                targets=targets,
                fps=int(fps),
                device=device,
                progress=bar.update if bar is not None else None,
            )
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"wrote {path}")


@click.command()
@checkpoint_option
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(list(EXPORT_FORMATS)),
    help="onnx (opset 18, for onnxruntime and engines) or torchscript (for libtorch).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The graph file to write; its sidecar is OUT.json.",
)
@frames_per_window_option
@click.option(
    "--graph",
    type=click.Choice(list(EXPORT_GRAPHS)),
    default="window",
    help="window: a block of frames per window (every model); step: a live model's one frame, its carried state "
    "as inputs and outputs (the sidecar lists them).",
)
def export(checkpoint, fmt, out, frames_per_window, graph):
    """Export the model for a runtime: inputs mel, emotion, frame_mask, prev, has_prev
    (dynamic batch); outputs current and smoothed (B, K, C), the K frames of each window's
    block. Standardisation is inside the graph. A JSON sidecar (OUT.json) lists channels, fps,
    window, lookahead, frames_per_window, feature config and statistics."""
    from blendsync.train.inference.export import export as run_export

    with reported_errors():
        side = run_export(checkpoint, out, fmt, frames_per_window, graph)
    click.echo(f"wrote {out} and {side}")
