"""Live Link Face packets over UDP, as the iPhone app (or `bstrain stream --to`) sends them to
Unreal, received off Blender's main thread and queued as frames like a server session's
(live.Frame), so the same timer puts them on shape keys.

Packet (version 6): uint32 little-endian version, the device id ("$" and a 36-character
UUID), big-endian int32 name length and the subject name, big-endian int32 frame number,
float32 sub-frame, int32 fps numerator and denominator, a uint8 count (61) and 61 big-endian
float32 values: the 52 curves in Unreal's EARFaceBlendShape order (the app's CSV order with
jawLeft/jawRight and mouthLeft/mouthRight the other way round), then 9 head and eye
rotations, which are not shape keys and are not queued."""

from __future__ import annotations

import queue
import socket
import struct
import threading

from .curve_files import CurveFileError
from .live import Frame

# The app's CSV column order (Live Link Face), camelCase as Apple writes the names.
ARKIT_52 = (
    "eyeBlinkLeft eyeLookDownLeft eyeLookInLeft eyeLookOutLeft eyeLookUpLeft eyeSquintLeft eyeWideLeft "
    "eyeBlinkRight eyeLookDownRight eyeLookInRight eyeLookOutRight eyeLookUpRight eyeSquintRight eyeWideRight "
    "jawForward jawRight jawLeft jawOpen mouthClose mouthFunnel mouthPucker mouthRight mouthLeft mouthSmileLeft "
    "mouthSmileRight mouthFrownLeft mouthFrownRight mouthDimpleLeft mouthDimpleRight mouthStretchLeft "
    "mouthStretchRight mouthRollLower mouthRollUpper mouthShrugLower mouthShrugUpper mouthPressLeft mouthPressRight "
    "mouthLowerDownLeft mouthLowerDownRight mouthUpperUpLeft mouthUpperUpRight browDownLeft browDownRight "
    "browInnerUp browOuterUpLeft browOuterUpRight cheekPuff cheekSquintLeft cheekSquintRight noseSneerLeft "
    "noseSneerRight tongueOut"
).split()
_SWAP = {"jawRight": "jawLeft", "jawLeft": "jawRight", "mouthRight": "mouthLeft", "mouthLeft": "mouthRight"}
UNREAL_52 = tuple(_SWAP.get(n, n) for n in ARKIT_52)
DEFAULT_PORT = 11111
_DEVICE_ID = 37  # "$" + a 36-character UUID


class PacketError(ValueError):
    """A datagram that is not a Live Link Face packet."""


def decode_packet(data: bytes) -> tuple[str, int, float, float, tuple[float, ...]]:
    """A packet -> (subject, frame number, sub-frame, fps, the 52 curves in UNREAL_52 order)."""
    try:
        (version,) = struct.unpack_from("<I", data, 0)
        (n,) = struct.unpack_from("!i", data, 4 + _DEVICE_ID)
        at = 8 + _DEVICE_ID
        subject = data[at : at + n].decode("utf-8")
        frame, sub, num, den, count = struct.unpack_from("!ifiiB", data, at + n)
        values = struct.unpack_from(f"!{count}f", data, at + n + 17)
    except (struct.error, UnicodeDecodeError) as e:
        raise PacketError(f"not a Live Link Face packet ({e})") from None
    if version != 6 or count != 61 or den <= 0 or num <= 0:
        raise PacketError(f"not a Live Link Face packet of version 6 with 61 values (version {version}, {count})")
    return subject, frame, sub, num / den, values[:52]


class LiveLinkListener:
    """The same surface as live.LiveSession (states, frames, channels, fps, log, stop) for
    packets on host:port; frame n is the packet's frame number less the first one's. Runs
    until stop(): UDP has no end of stream. Packets of another subject (when subject is given)
    and datagrams that are not packets are counted, not queued."""

    def __init__(self, port: int = DEFAULT_PORT, host: str = "0.0.0.0", subject: str = "", keep_log: bool = False):
        self.frames: queue.Queue[Frame] = queue.Queue()
        self.channels: tuple[str, ...] = UNREAL_52
        self.fps = 60.0
        self.state, self.message = "streaming", ""
        self.received = self.ignored = 0
        self.subject = subject
        self.log: list[Frame] | None = [] if keep_log else None
        self.ready = threading.Event()
        self.ready.set()
        self._first: int | None = None
        self._stop = threading.Event()
        try:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.bind((host, port))
        except OSError as e:
            raise CurveFileError(f"cannot listen for Live Link on {host}:{port} ({e.strerror or e})") from None
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, name="blendsync-livelink", daemon=True)

    @property
    def running(self) -> bool:
        return self.state == "streaming"

    def start(self) -> LiveLinkListener:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        self._sock.close()
        self.state = "stopped"
        self.message = f"{self.received} packets" + (f", {self.ignored} ignored" if self.ignored else "")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                subject, frame, sub, fps, values = decode_packet(data)
            except PacketError:
                self.ignored += 1
                continue
            if self.subject and subject != self.subject:
                self.ignored += 1
                continue
            if self._first is None:
                self._first, self.fps = frame, fps
            f = Frame(frame - self._first, (frame - self._first + sub) / fps, tuple(values))
            self.frames.put(f)
            self.received += 1
            if self.log is not None:
                self.log.append(f)
