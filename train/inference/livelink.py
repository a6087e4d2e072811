"""Live Link Face: frames to a receiver (Unreal's Live Link Face source) over UDP, as the iPhone
app sends them; and the resampling of a stream's model frames to the output fps.

Packet (version 6; the layout pylivelinkface decodes): uint32 little-endian version, the
device id ("$" and a 36-character UUID), big-endian int32 name length and the subject name,
big-endian int32 frame number, float32 sub-frame, int32 fps numerator and denominator, a
uint8 count (61) and 61 big-endian float32 values: the 52 curves in Unreal's
EARFaceBlendShape order, then head and eye rotations (0: the model predicts none).

Frames go out at the output fps, resampled by time from the model's frames as predict
resamples them (FrameResampler), numbered from a start timecode and one apart (LiveLinkSender).
The stream they belong to is composed in stream.py.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid

import numpy as np

from blendsync.shared.channels import CHANNEL_ORDERS, reorder
from blendsync.shared.frame_grid import frame_times, n_frames, rows_to_grid

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
    whole file, each emitted once the model frame after its instant exists. Holds only the
    model frames later output frames still need, so a stream of hours costs no more."""

    def __init__(self, fps_in: float, fps_out: float, channels: int):
        self.fps_in, self.fps_out = fps_in, fps_out
        self._rows = np.zeros((0, channels), np.float32)
        self._first = 0  # model frame of _rows[0]
        self.emitted = 0

    @property
    def wait_s(self) -> float:
        """Longest wait of an output frame for the model frame after its instant."""
        return 0.0 if self.fps_in == self.fps_out else 1.0 / self.fps_in

    def push(self, rows: np.ndarray) -> np.ndarray:
        if self.fps_in == self.fps_out:  # the model's own rate: every frame as it is (resample_curves too)
            self.emitted += len(rows)
            return rows
        self._rows = np.concatenate([self._rows, rows])
        last = self._first + len(self._rows) - 1
        if last < 0:
            return self._emit(0)
        # Output frames up to the last model frame's instant have both neighbours.
        return self._emit(int(np.floor(last / self.fps_in * self.fps_out + 1e-9)) + 1)

    def finish(self, duration_s: float) -> np.ndarray:
        if self.fps_in == self.fps_out:
            return np.zeros((0, self._rows.shape[1]), np.float32)
        return self._emit(n_frames(duration_s, self.fps_out))

    def _emit(self, upto: int) -> np.ndarray:
        if upto <= self.emitted or not len(self._rows):
            return np.zeros((0, self._rows.shape[1]), np.float32)
        t = frame_times(upto, self.fps_out)[self.emitted :]
        row_t = (self._first + np.arange(len(self._rows))) / float(self.fps_in)
        out = np.clip(rows_to_grid(self._rows, row_t, t).values, 0, 1)
        self.emitted = upto
        keep = max(0, int(np.floor(t[-1] * self.fps_in + 1e-9)) - self._first)  # the model frame at or before
        self._rows, self._first = self._rows[keep:], self._first + keep
        return out


class LiveLinkSender:
    """Sends frames (C,) in the model's channel order to a Live Link Face receiver: packet j
    carries frame start_frame + j at fps, the 52 curves in Unreal's order and 9 rotations of 0."""

    def __init__(
        self,
        channels: list[str],
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        subject: str = "blendsync",
        fps: int = 60,
        start_frame: int = 0,
        device_id: str | None = None,
    ):
        if set(channels) != set(CHANNEL_ORDERS["livelink"]):
            raise ValueError(
                f"Live Link Face carries the 52 ARKit curves; this model predicts {len(channels)} other channels"
            )
        self.channels, self.subject, self.fps, self.start_frame = list(channels), subject, fps, start_frame
        self.device_id = device_id or "$" + str(uuid.uuid4())
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address = (host, port)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self._next_send = 0.0

    # Frames leave at most this often a second (after a burst of BURST): --no-realtime
    # computes whole blocks at once, and a receiver with the system's default UDP buffer drops
    # what arrives faster than it reads (166 of 180 frames arrived). 16x a 60 fps stream.
    MAX_RATE, BURST = 1000.0, 16

    def _pace(self) -> None:
        now = time.perf_counter()
        self._next_send = max(self._next_send, now - self.BURST / self.MAX_RATE) + 1.0 / self.MAX_RATE
        if self._next_send > now:
            time.sleep(self._next_send - now)

    def __call__(self, j: int, row: np.ndarray) -> None:
        values = reorder(row[None], self.channels, "unreal61")[0]
        self._pace()
        self.sock.sendto(
            encode_packet(self.device_id, self.subject, self.start_frame + j, self.fps, values), self.address
        )

    def close(self) -> None:
        self.sock.close()
