"""A live session with a running `bstrain serve`, off Blender's main thread: a WAV file is
streamed to /v1/stream as its samples would arrive (real time, in 20 ms chunks) and every
frame the server sends back is queued for the main thread (a timer) to put on shape keys.
Blender's data may be touched only from the main thread, so this module never imports bpy."""

from __future__ import annotations

import json
import queue
import threading
import time
import wave
from dataclasses import dataclass

from .server import ServerError, WebSocket

CHUNK_S = 0.02


@dataclass(frozen=True)
class Frame:
    """Frame n of the session: the instant n / fps of the audio, its values in channels order."""

    n: int
    time: float
    values: tuple[float, ...]


class LiveSession:
    """states: connecting -> streaming -> ended (the server's end message came), stopped (stop()
    asked) or failed (message says why). frames: a queue of Frame; channels and fps from the
    server's ready message; log: every frame received, in order, when keep_log (recording)."""

    def __init__(
        self, url: str, token: str, audio_path: str, fps: int = 60, realtime: bool = True, keep_log: bool = False
    ):
        self.url, self.token, self.audio_path, self.fps, self.realtime = url, token, audio_path, fps, realtime
        self.frames: queue.Queue[Frame] = queue.Queue()
        self.channels: tuple[str, ...] = ()
        self.state, self.message = "connecting", ""
        self.received = 0
        self.log: list[Frame] | None = [] if keep_log else None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._done_sending = threading.Event()
        self._ws: WebSocket | None = None
        self._pcm = self._read_wav(audio_path)
        self._thread = threading.Thread(target=self._run, name="blendsync-live", daemon=True)

    @staticmethod
    def _read_wav(path: str) -> tuple[bytes, int, int]:
        try:
            with wave.open(path, "rb") as w:
                if w.getsampwidth() != 2:
                    raise ServerError(
                        f"{path}: live sessions stream 16-bit PCM WAV; this one has {8 * w.getsampwidth()}-bit samples"
                    )
                return w.readframes(w.getnframes()), w.getframerate(), w.getnchannels()
        except (OSError, EOFError, wave.Error) as e:
            raise ServerError(f"{path}: not a readable WAV file ({e})") from None

    @property
    def running(self) -> bool:
        return self.state in ("connecting", "streaming")

    def start(self) -> LiveSession:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ends the session cleanly: the end message, the close handshake, the thread joined."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._thread.is_alive() and self._ws is not None:  # a server that does not answer
            self._ws.abort()
            self._thread.join(timeout_s)
        if self.running:
            self.state = "stopped"

    def _run(self) -> None:
        try:
            self._ws = WebSocket(self.url, self.token)
            pcm, rate, channels = self._pcm
            self._ws.send(json.dumps({"type": "start", "sample_rate": rate, "channels": channels,
                                      "encoding": "pcm_s16le", "fps": self.fps, "format": "json"}))  # fmt: skip
            sender = threading.Thread(target=self._send_audio, args=(pcm, rate, channels), daemon=True)
            sender.start()
            try:
                self._receive()
            finally:
                self._done_sending.set()  # the server has ended, refused or gone: no more audio
                sender.join(2.0)
        except (ServerError, OSError, ConnectionError, ValueError) as e:
            if not self._stop.is_set():
                self.state, self.message = "failed", str(e)
        except (KeyError, TypeError, AttributeError) as e:  # a message not of the protocol
            self.state, self.message = "failed", f"the server sent a message this add-on does not read ({e!r})"
        finally:
            if self._ws is not None:
                self._ws.close()
            if self.running:
                self.state = "stopped"
            self.ready.set()

    def _send_audio(self, pcm: bytes, rate: int, channels: int) -> None:
        step = int(rate * CHUNK_S) * 2 * channels
        t0 = time.monotonic()
        try:
            for i, at in enumerate(range(0, len(pcm), step)):
                if self._stop.is_set() or self._done_sending.is_set():
                    break
                if self.realtime:
                    time.sleep(max(0.0, t0 + i * CHUNK_S - time.monotonic()))
                self._ws.send(pcm[at : at + step])
            if not self._done_sending.is_set():
                self._ws.send(json.dumps({"type": "end"}))
        except (OSError, ConnectionError):
            pass  # the receiver sees the connection go and says so

    def _receive(self) -> None:
        while True:
            msg = self._ws.recv()
            if msg is None:
                if self.running and not self._stop.is_set():
                    reason = getattr(self._ws, "close_reason", "")
                    self.state, self.message = (
                        "failed",
                        f"the server closed the session{': ' + reason if reason else ''}",
                    )
                return
            if isinstance(msg, bytes):
                continue
            doc = json.loads(msg)
            kind = doc.get("type")
            if kind == "ready":
                self.channels, self.fps = tuple(doc["channels"]), doc.get("fps", self.fps)
                self.state = "streaming"
                self.ready.set()
            elif kind == "frame":
                frame = Frame(int(doc["frame"]), float(doc["time"]), tuple(doc["values"]))
                self.frames.put(frame)
                self.received += 1
                if self.log is not None:
                    self.log.append(frame)
            elif kind == "end":
                self.state = "stopped" if self._stop.is_set() else "ended"
                self.message = f"{doc.get('frames', self.received)} frames"
                return
            elif kind == "error":
                self.state, self.message = "failed", f"the server: {doc.get('message', '')}"
                return
