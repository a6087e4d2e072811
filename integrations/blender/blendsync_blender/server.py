"""A running `bstrain serve`, from Blender's own Python (no third-party packages): POST an audio
file to /v1/animate for its curves, and a minimal WebSocket client (RFC 6455) for a live
session on /v1/stream. Every failure is a ServerError with one line: what was asked of which
URL and what came back."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import threading
import urllib.error
import urllib.parse
import urllib.request

from .curve_files import CurveFileError, Curves, curves_from_doc

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's accept-key suffix


class ServerError(CurveFileError):
    """The server is down, refused the token or answered with an error."""


def _base(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ServerError(f"server URL must start with http:// or https://, got {url!r}")
    return url


def animate_file(url: str, token: str, audio_path: str, fps: int = 60, timeout_s: float = 300.0) -> Curves:
    """The curves the server predicts for the audio file (format json at fps), as Curves."""
    try:
        with open(audio_path, "rb") as f:
            body = f.read()
    except OSError as e:
        raise ServerError(f"{audio_path}: cannot read the audio file ({e.strerror})") from None
    query = urllib.parse.urlencode({"format": "json", "fps": fps})
    req = urllib.request.Request(f"{_base(url)}/v1/animate?{query}", data=body, method="POST")
    req.add_header("Content-Type", "application/octet-stream")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            doc = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise ServerError(f"{url}: {_http_problem(e)}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ServerError(f"cannot reach the server at {url} ({reason}): is bstrain serve running?") from None
    except ValueError:
        raise ServerError(f"{url}: the answer is not JSON") from None
    return curves_from_doc(doc, f"{url} ({os.path.basename(audio_path)})")


def _http_problem(e: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(e.read()).get("error", "")
    except (ValueError, AttributeError, OSError):
        detail = ""
    if e.code == 401:
        return f"the server refused the token (401{': ' + detail if detail else ''})"
    if e.code == 403:
        return f"the server refused this client (403{': ' + detail if detail else ''})"
    return f"the server answered {e.code}{': ' + detail if detail else ''}"


class WebSocket:
    """One client connection: text and binary messages out (masked, as a client must), whole
    messages in (fragments joined, pings answered)."""

    def __init__(self, url: str, token: str = "", timeout_s: float = 10.0):
        u = urllib.parse.urlsplit(_base(url))
        path = u.path.rstrip("/") + "/v1/stream" + (f"?{urllib.parse.urlencode({'token': token})}" if token else "")
        port = u.port or (443 if u.scheme == "https" else 80)
        host = f"[{u.hostname}]" if ":" in (u.hostname or "") else u.hostname
        self._lock = threading.Lock()  # the sender and the receiver (pongs, close) share the socket
        self._close_sent = False
        self._pending = b""
        try:
            self.sock = socket.create_connection((u.hostname, port), timeout=timeout_s)
        except OSError as e:
            raise ServerError(
                f"cannot reach the server at {url} ({e.strerror or e}): is bstrain serve running?"
            ) from None
        try:
            if u.scheme == "https":
                self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=u.hostname)
            self._handshake(url, host, port, path)
        except BaseException:
            self.sock.close()
            raise

    def _handshake(self, url: str, host: str, port: int, path: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        try:
            self.sock.sendall(
                (
                    f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            head = self._read_head()
        except OSError as e:
            raise ServerError(f"{url}: no WebSocket answer ({e.strerror or e})") from None
        status = head.split(b"\r\n", 1)[0].decode("latin1")
        if " 101 " not in status + " ":
            code = status.split(" ")[1] if len(status.split(" ")) > 1 else "?"
            what = "refused the token" if code in ("401", "403") else "did not open a session"
            raise ServerError(f"{url}: the server {what} ({status.strip()})")
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if accept.encode() not in head:
            raise ServerError(f"{url}: not a WebSocket answer (Sec-WebSocket-Accept missing or wrong)")

    def _read_head(self) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ServerError("the server closed the connection during the WebSocket handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        self._pending = rest  # frames the server sent right after its answer
        return head

    def send(self, payload: bytes | str) -> None:
        opcode = 1 if isinstance(payload, str) else 2
        self._send_frame(opcode, payload.encode() if isinstance(payload, str) else payload)

    def _send_frame(self, opcode: int, data: bytes) -> None:
        """One whole frame, never interleaved with another thread's; nothing after a close."""
        n = len(data)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        with self._lock:
            if self._close_sent:
                raise ConnectionError("the session is closed")
            self._close_sent = opcode == 8
            self.sock.sendall(head + mask + masked)

    def _exact(self, n: int) -> bytes:
        while len(self._pending) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self._pending += chunk
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def recv(self) -> str | bytes | None:
        """The next whole message (str for text, bytes for binary), or None once closed."""
        parts, kind = [], None
        while True:
            b0, b1 = self._exact(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._exact(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._exact(8))
            data = self._exact(n)
            if opcode == 8:  # close: echo it (unless ours came first) and stop
                self.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                self.close_reason = data[2:].decode("utf-8", "replace")
                try:
                    self._send_frame(8, data[:2])
                except (OSError, ConnectionError):
                    pass
                return None
            if opcode == 9:
                self._send_frame(10, data)
                continue
            if opcode == 10:
                continue
            if opcode in (1, 2):
                kind = opcode
            parts.append(data)
            if b0 & 0x80:
                whole = b"".join(parts)
                return whole.decode("utf-8") if kind == 1 else whole

    def abort(self) -> None:
        """Unblocks a recv() in another thread: the connection is shut at once."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self, wait_s: float = 2.0) -> None:
        """The close handshake: our close frame, then the server's (or its end of the
        connection) awaited for up to wait_s before the socket is closed."""
        try:
            self._send_frame(8, struct.pack("!H", 1000))
            self.sock.settimeout(wait_s)
            while self.recv() is not None:
                pass
        except (OSError, ConnectionError, ValueError):
            pass
        self.sock.close()
