"""Audio sources of a stream: a file read in chunks, or raw PCM from a byte stream (stdin, a
socket). Each yields (N, channels) float32 chunks in [-1, 1]."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np


def file_chunks(path: Path, chunk_seconds: float) -> tuple[Iterator[np.ndarray], int]:
    """(chunks of an audio file, its sample rate); AudioError naming the file when it is not
    audio soundfile can read (as predict says it)."""
    import soundfile as sf

    from blendsync.shared.audio import AudioError, decode_failure

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{path}: cannot decode audio ({decode_failure(e)})") from None
    if info.frames == 0:
        raise AudioError(f"{path}: audio is empty (0 samples)")
    block = max(1, int(round(chunk_seconds * info.samplerate)))
    return sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True), info.samplerate


def pcm_chunks(stream: BinaryIO, sample_rate: int, channels: int, chunk_seconds: float) -> Iterator[np.ndarray]:
    """Raw little-endian int16 PCM (interleaved channels) from a byte stream, in chunks of at
    most chunk_seconds: whatever one read returns is passed on at once (a live source is
    not waited on to fill a chunk)."""
    frame_bytes = 2 * channels
    want = max(1, int(round(chunk_seconds * sample_rate))) * frame_bytes
    read = getattr(stream, "read1", stream.read)
    rest = b""
    while True:
        data = read(want)
        if not data:
            break
        data = rest + data
        whole = len(data) - len(data) % frame_bytes
        rest = data[whole:]
        if whole:
            yield (np.frombuffer(data[:whole], "<i2").reshape(-1, channels).astype(np.float32) / 32768.0)


def stdin_chunks(sample_rate: int, channels: int, chunk_seconds: float) -> Iterator[np.ndarray]:
    return pcm_chunks(sys.stdin.buffer, sample_rate, channels, chunk_seconds)


MIC_INSTALL = "pip install -e '.[mic]' and PortAudio (apt-get install libportaudio2)"
NO_INPUT_DEVICE = "no audio input device found; list them with: bstrain stream --list-devices"


def _sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as e:  # OSError: the package is there, PortAudio is not
        raise ValueError(f"microphone input needs the sounddevice package and PortAudio: {MIC_INSTALL} ({e})") from None
    return sounddevice


def input_devices() -> list[dict]:
    """The input devices PortAudio sees: {"index", "name", "channels", "sample_rate", "default"}."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        default = sd.default.device[0]
    except Exception as e:  # noqa: BLE001 - PortAudio's errors name the problem
        raise ValueError(f"cannot list the audio devices: {e}") from None
    return [
        {
            "index": int(d["index"]),
            "name": str(d["name"]),
            "channels": int(d["max_input_channels"]),
            "sample_rate": float(d["default_samplerate"]),
            "default": int(d["index"]) == default,
        }  # fmt: skip
        for d in devices
        if d["max_input_channels"] > 0
    ]


def pick_input_device(devices: list[dict], spec: str | None) -> dict:
    """The device spec names among devices (input_devices()): an index, or a part of one name
    (case ignored); None: the default, else the first. ValueError saying what there is."""
    if not devices:
        raise ValueError(NO_INPUT_DEVICE)
    if spec is None:
        return next((d for d in devices if d["default"]), devices[0])
    if spec.strip().isdigit():
        found = [d for d in devices if d["index"] == int(spec)]
    else:
        found = [d for d in devices if spec.strip().lower() in d["name"].lower()]
        exact = [d for d in found if d["name"].lower() == spec.strip().lower()]
        found = exact or found
    if len(found) != 1:
        names = ", ".join(f"{d['index']}: {d['name']}" for d in (found or devices))
        what = "names several input devices" if found else "names no input device"
        raise ValueError(f"--input-device {spec!r} {what} ({names}); list them with: bstrain stream --list-devices")
    return found[0]


def mic_chunks(
    sample_rate: int, channels: int, chunk_seconds: float, device: int | None = None
) -> Iterator[np.ndarray]:
    """An input device through PortAudio (the sounddevice package: pip install -e ".[mic]",
    and PortAudio itself, e.g. apt-get install libportaudio2), in chunks of chunk_seconds as
    the device delivers them, until the stream is interrupted. device: an index of
    input_devices() (None: the default)."""
    import queue

    sounddevice = _sounddevice()
    blocks: queue.Queue[np.ndarray] = queue.Queue(maxsize=int(10 / chunk_seconds) + 1)

    def callback(indata, frames, when, status) -> None:
        try:
            blocks.put_nowait(indata.copy())
        except queue.Full:  # the stream fell 10 s behind: the next chunk says so by its absence
            pass

    try:
        stream = sounddevice.InputStream(
            samplerate=sample_rate, channels=channels, dtype="float32", device=device,
            blocksize=max(1, int(round(chunk_seconds * sample_rate))), callback=callback,
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - PortAudio's errors name the device problem
        raise ValueError(f"cannot open the audio input device: {e}") from None
    with stream:
        while True:
            yield blocks.get()
