"""bstrain stream: animate audio as it arrives and send each frame to a Live Link Face
receiver (Unreal's Live Link Face source) over UDP, as the iPhone app does.

Packet (version 6; the layout pylivelinkface decodes): uint32 little-endian version, the
device id ("$" and a 36-character UUID), big-endian int32 name length and the subject name,
big-endian int32 frame number, float32 sub-frame, int32 fps numerator and denominator, a
uint8 count (61) and 61 big-endian float32 values: the 52 curves in Unreal's
EARFaceBlendShape order, then head and eye rotations (0: the model predicts none).

Frames go out at the output fps (60 by default), resampled by time from the model's frames
as predict resamples them, numbered from a start timecode and one apart; with real-time pacing
a frame leaves no earlier than its instant in the audio.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from blendsync.shared.channels import CHANNEL_ORDERS, reorder
from blendsync.shared.frame_grid import frame_times, n_frames, rows_to_grid
from blendsync.train.inference.chunked import ChunkedAnimator

PACKET_VERSION = 6
DEFAULT_PORT = 11111


def encode_packet(
    device_id: str, subject: str, frame: int, fps: int, values: np.ndarray, sub_frame: float = 0.0
) -> bytes:
    """One Live Link Face packet; values (61,) in the unreal61 order."""
    if len(values) != 61:
        raise ValueError(f"a Live Link Face packet carries 61 values, got {len(values)}")
    dev = device_id if device_id.startswith("$") else "$" + device_id
    name = subject.encode("utf-8")
    return (
        struct.pack("<I", PACKET_VERSION)
        + dev.encode("ascii")
        + struct.pack("!i", len(name))
        + name
        + struct.pack("!ifii", int(frame), float(sub_frame), int(fps), 1)
        + struct.pack("!B61f", 61, *np.asarray(values, dtype=np.float64).tolist())
    )


class FrameResampler:
    """Model frames (at fps_in) as they come -> output frames at fps_out by linear
    interpolation in time, clipped to [0, 1]: the frames output.resample_curves gives for the
    whole file, each emitted once the model frame after its instant exists."""

    def __init__(self, fps_in: float, fps_out: float, channels: int):
        self.fps_in, self.fps_out = fps_in, fps_out
        self._rows = np.zeros((0, channels), np.float32)
        self.emitted = 0

    def push(self, rows: np.ndarray) -> np.ndarray:
        self._rows = np.concatenate([self._rows, rows])
        if not len(self._rows):
            return self._emit(0)
        # Output frames up to the last model frame's instant have both neighbours.
        last_t = (len(self._rows) - 1) / self.fps_in
        return self._emit(int(np.floor(last_t * self.fps_out + 1e-9)) + 1)

    def finish(self, duration_s: float) -> np.ndarray:
        return self._emit(n_frames(duration_s, self.fps_out))

    def _emit(self, upto: int) -> np.ndarray:
        if upto <= self.emitted or not len(self._rows):
            return np.zeros((0, self._rows.shape[1]), np.float32)
        t = frame_times(upto, self.fps_out)[self.emitted :]
        out = np.clip(rows_to_grid(self._rows, frame_times(len(self._rows), self.fps_in), t).values, 0, 1)
        self.emitted = upto
        return out


@dataclass
class StreamReport:
    frames: int = 0
    audio_s: float = 0.0
    # Seconds from a frame's instant in the audio (stream start + t) to its packet leaving.
    latencies: list[float] = field(default_factory=list)


def stream_audio(
    pred,
    chunks: Iterator[np.ndarray],
    source_rate: int,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    subject: str = "blendsync",
    fps: int = 60,
    start_frame: int = 0,
    realtime: bool = True,
    device_id: str | None = None,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
) -> StreamReport:
    """Push audio chunks ((N,) or (N, channels) float at source_rate) through the chunked
    animator and send every output frame as a packet to host:port. realtime: chunks are taken
    at the pace of the audio and each frame leaves no earlier than its instant."""
    if set(pred.channels) != set(CHANNEL_ORDERS["livelink"]):
        raise ValueError(
            f"Live Link Face carries the 52 ARKit curves; this model predicts {len(pred.channels)} other channels"
        )
    dev = device_id or "$" + str(uuid.uuid4())
    anim = ChunkedAnimator(pred, source_rate, "<stream>")
    resampler = FrameResampler(pred.fps, fps, len(pred.channels))
    report = StreamReport()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t0 = time.perf_counter()
    received = 0

    def send(frames: np.ndarray) -> None:
        for row in reorder(frames, pred.channels, "unreal61"):
            j = report.frames
            due = t0 + j / fps
            if realtime:
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            sock.sendto(encode_packet(dev, subject, start_frame + j, fps, row), (host, port))
            report.latencies.append(time.perf_counter() - due)
            if on_frame:
                on_frame(start_frame + j, row)
            report.frames += 1

    try:
        for data in chunks:
            received += len(data)
            if realtime:  # the audio of this chunk has not been spoken before its end
                wait = t0 + received / source_rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            send(resampler.push(anim.push(data)))
        send(resampler.push(anim.finish()))
        report.audio_s = anim.features.duration_s
        send(resampler.finish(report.audio_s))
    finally:
        sock.close()
    return report


def file_chunks(path: Path, chunk_seconds: float) -> tuple[Iterator[np.ndarray], int]:
    """(chunks of an audio file, its sample rate)."""
    import soundfile as sf

    info = sf.info(str(path))
    block = max(1, int(round(chunk_seconds * info.samplerate)))
    return sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True), info.samplerate


def pcm_chunks(stream: BinaryIO, sample_rate: int, channels: int, chunk_seconds: float) -> Iterator[np.ndarray]:
    """Raw little-endian int16 PCM (interleaved channels) from a byte stream, in chunks."""
    frame_bytes = 2 * channels
    want = max(1, int(round(chunk_seconds * sample_rate))) * frame_bytes
    rest = b""
    while True:
        data = stream.read(want)
        if not data:
            break
        data = rest + data
        whole = len(data) - len(data) % frame_bytes
        rest = data[whole:]
        if whole:
            yield (np.frombuffer(data[:whole], "<i2").reshape(-1, channels).astype(np.float32) / 32768.0)


def stdin_chunks(sample_rate: int, channels: int, chunk_seconds: float) -> Iterator[np.ndarray]:
    return pcm_chunks(sys.stdin.buffer, sample_rate, channels, chunk_seconds)
