"""Who may drive a server that asks no token: this machine's own programs and pages, not any
web page a browser on it opens.

Without a token the server listens on loopback only (bstrain serve refuses anything else), but
a browser on the same machine would still reach it from any site: a page's WebSocket or
cross-site POST (the request carries that site's Origin), or a site whose name is made to
resolve to 127.0.0.1 (DNS rebinding: its requests carry that name as Host). So, without a
token, a request must name a loopback Host and come from no web origin or from the server's
own (its live page). With a token the token decides, as before.

Live Link targets of a session (its start message's "livelink") are resolved once, at the
start, and must be on this machine unless the operator named the host (--allow-livelink):
otherwise any client could make the server send UDP anywhere.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from urllib.parse import urlsplit


def host_is_loopback(host: str) -> bool:
    """A Host header's name (port and IPv6 brackets allowed) is this machine's."""
    m = re.fullmatch(r"\[([0-9a-f:.]+)\](?::\d{1,5})?|([^\[\]:@/\s]+)(?::\d{1,5})?", host.strip().lower())
    if m is None:  # "[::1].evil.example", "127.0.0.1:80@evil": no Host a browser sends
        return False
    name = m.group(1) or m.group(2)
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cross_site_problem(headers) -> str | None:
    """Why a request without a token is refused, or None (headers: the request's)."""
    host = headers.get("host", "")
    if not host_is_loopback(host):
        return f"Host {host!r} is not this machine's: without a token the server answers loopback names only"
    origin = headers.get("origin")
    if origin is not None and urlsplit(origin).netloc.lower() != host.strip().lower():
        return f"requests from the web origin {origin!r} need a token (bstrain serve --token)"
    return None


class SameMachineOnly:
    """ASGI middleware: without a token, every HTTP request and WebSocket must pass
    cross_site_problem (403 with the reason otherwise)."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if self.token or scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = cross_site_problem(headers)
        if problem is None:
            return await self.app(scope, receive, send)
        body = json.dumps({"error": problem}).encode()
        if scope["type"] == "websocket":  # refused at the handshake, with the reason as its body
            await send({"type": "websocket.http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 403, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def livelink_target(text: str, allowed: tuple[str, ...] = ()) -> tuple[str, int]:
    """ "HOST:PORT" -> (the address it resolves to, port), resolved once; ValueError unless the
    address is this machine's or HOST is one the operator allowed."""
    host, _, port = text.rpartition(":")
    host = host.strip()
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        infos = socket.getaddrinfo(name, int(port), type=socket.SOCK_DGRAM)
    except (OSError, ValueError) as e:
        raise ValueError(f"livelink {text!r}: cannot resolve {name!r} ({e})") from None
    address = infos[0][4][0]
    if not ipaddress.ip_address(address.split("%")[0]).is_loopback and name.lower() not in {a.lower() for a in allowed}:
        raise ValueError(
            f"livelink {text!r} is not on this machine ({address}): the server sends Live Link packets to other "
            "hosts only where its operator allows them (bstrain serve --allow-livelink HOST)"
        )
    return address, int(port)
