"""The animation server's wire format (docs/serving.md): the messages of a WebSocket session
and how each is checked, in one place, so that clients can be written against it.

Client → server: {"type": "start", ...} (StartMessage), then binary PCM messages of any
length, then {"type": "end"}. Server → client: {"type": "ready", ...}, one frame message per
output frame ({"type": "frame", "frame": n, "time": n / fps, "values": [...]} as JSON, or
FRAME_HEADER + float32 values as binary), then {"type": "end", "frames": N, "dropped": D};
{"type": "error", "message": ...} and a close code (CLOSE_BAD_INPUT) for bad input.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from blendsync.train.core.output_gain import MAX_GAIN, check_gain

# A WebSocket close code for a message that breaks the protocol (RFC 6455: policy violation).
CLOSE_BAD_INPUT = 1008
# Closed because the server could not go on with the session (an internal error).
CLOSE_SERVER_ERROR = 1011

# PCM encodings a session may send: numpy dtype, bytes per sample, scale to [-1, 1].
ENCODINGS = {"pcm_s16le": ("<i2", 2, 1 / 32768.0), "pcm_f32le": ("<f4", 4, 1.0)}
FRAME_FORMATS = ("json", "binary")
# The channel order named "model": the model's own (what no channel_order gives).
MODEL_ORDER = "model"
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000
MAX_CHANNELS = 8
# Binary frame message: frame index (uint32), time in seconds (float64), then the values
# (float32 each, the ready message's channel order), little-endian.
FRAME_HEADER = struct.Struct("<Id")


class ProtocolError(ValueError):
    """A message that breaks the protocol: sent back as an error message and close 1008."""


@dataclass(frozen=True, kw_only=True)
class StartMessage:
    """What a session streams: PCM at sample_rate with channels interleaved in encoding, and
    the frames it wants back: fps (None: the model's own), as JSON or binary messages, in the
    model's channel order or a named one (shared.channels.CHANNEL_ORDERS), movement scaled by
    gain; livelink "HOST:PORT" forwards the same frames to a Live Link receiver as subject."""

    sample_rate: int
    channels: int = 1
    encoding: str = "pcm_s16le"
    fps: int | None = None
    format: str = "json"
    channel_order: str | None = None
    gain: float = 1.0
    livelink: str | None = None
    subject: str = "blendsync"

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one sample instant (every channel)."""
        return ENCODINGS[self.encoding][1] * self.channels

    def samples(self, data: bytes) -> np.ndarray:
        """Whole sample instants of data -> (N, channels) float32 in [-1, 1]."""
        dtype, _, scale = ENCODINGS[self.encoding]
        x = np.frombuffer(data, dtype=dtype).reshape(-1, self.channels).astype(np.float32)
        return x * np.float32(scale) if scale != 1.0 else x


_START_KEYS = {f for f in StartMessage.__dataclass_fields__} | {"type"}


def parse_message(text: str) -> dict:
    """A text message -> its JSON object with a known "type"; ProtocolError otherwise."""
    try:
        msg = json.loads(text)
    except ValueError as e:
        raise ProtocolError(f"a text message must be a JSON object ({e})") from None
    if not isinstance(msg, dict) or msg.get("type") not in ("start", "end"):
        raise ProtocolError('a text message must be a JSON object with "type": "start" or "end"')
    return msg


def parse_start(msg: dict, channel_orders: tuple[str, ...] = ()) -> StartMessage:
    """The start message, every field checked and named when wrong."""
    unknown = sorted(set(msg) - _START_KEYS)
    if unknown:
        raise ProtocolError(f"start: unknown field(s) {unknown}; allowed: {sorted(_START_KEYS - {'type'})}")
    if "sample_rate" not in msg:
        raise ProtocolError("start: sample_rate is required (e.g. 16000)")
    rate = _integer(msg, "sample_rate", MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)
    channels = _integer(msg, "channels", 1, MAX_CHANNELS, default=1)
    encoding = msg.get("encoding", "pcm_s16le")
    if encoding not in ENCODINGS:
        raise ProtocolError(f"start: encoding must be one of {list(ENCODINGS)}, got {encoding!r}")
    fps = None if msg.get("fps") is None else _integer(msg, "fps", 1, 240)
    fmt = msg.get("format", "json")
    if fmt not in FRAME_FORMATS:
        raise ProtocolError(f"start: format must be one of {list(FRAME_FORMATS)}, got {fmt!r}")
    order = msg.get("channel_order")
    if order is not None and order != MODEL_ORDER and order not in channel_orders:
        raise ProtocolError(f"start: channel_order must be one of {[MODEL_ORDER, *channel_orders]}, got {order!r}")
    order = None if order == MODEL_ORDER else order
    gain = msg.get("gain", 1.0)
    if not isinstance(gain, (int, float)) or isinstance(gain, bool):
        raise ProtocolError(f"start: gain must be a number from 0 to {MAX_GAIN:g}, got {gain!r}")
    try:
        gain = check_gain(gain, "start: gain")
    except ValueError as e:
        raise ProtocolError(str(e)) from None
    livelink = msg.get("livelink")
    if livelink is not None and (not isinstance(livelink, str) or ":" not in livelink):
        raise ProtocolError(f'start: livelink must be "HOST:PORT", got {livelink!r}')
    if livelink is not None:
        port = livelink.rpartition(":")[2]
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ProtocolError(f'start: livelink must be "HOST:PORT" with a port in 1-65535, got {livelink!r}')
    subject = msg.get("subject", "blendsync")
    if not isinstance(subject, str) or not subject.strip() or len(subject.encode()) > 256:
        raise ProtocolError("start: subject must be a name of 1 to 256 bytes")
    return StartMessage(
        sample_rate=rate, channels=channels, encoding=encoding, fps=fps, format=fmt, channel_order=order,
        gain=float(gain), livelink=livelink, subject=subject,
    )  # fmt: skip


def _integer(msg: dict, key: str, low: int, high: int, default: int | None = None) -> int:
    value = msg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError(f"start: {key} must be a whole number in {low}..{high}, got {value!r}")
    return value


def ready_message(channels: list[str], fps: float, latency_ms: float, model: dict) -> str:
    return json.dumps(
        {"type": "ready", "channels": list(channels), "fps": fps, "latency_ms": round(latency_ms, 1), "model": model}
    )


def frame_message(j: int, fps: float, values: np.ndarray, fmt: str) -> str | bytes:
    """Frame j (the instant j / fps of the audio) with its values (C,)."""
    if fmt == "binary":
        return FRAME_HEADER.pack(j, j / fps) + np.asarray(values, "<f4").tobytes()
    return json.dumps({"type": "frame", "frame": j, "time": round(j / fps, 6), "values": _rounded(values)})


def decode_binary_frame(data: bytes) -> tuple[int, float, np.ndarray]:
    """A binary frame message -> (frame, time, values (C,) float32): what a client does."""
    j, t = FRAME_HEADER.unpack_from(data)
    return j, t, np.frombuffer(data, "<f4", offset=FRAME_HEADER.size)


def end_message(frames: int, dropped: int) -> str:
    return json.dumps({"type": "end", "frames": frames, "dropped": dropped})


def error_message(message: str) -> str:
    return json.dumps({"type": "error", "message": message})


def _rounded(values: np.ndarray) -> list[float]:
    # float32 values as JSON: 7 significant digits carry them exactly enough (1e-7 relative).
    return [float(f"{v:.7g}") for v in np.asarray(values, np.float32)]
