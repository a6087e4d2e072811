"""How long a connection may live: request headers have a deadline, and requests still running
at shutdown end quietly.

uvicorn times out an idle keep-alive connection, but not one that has sent part of a request:
a client that sends "GET / HTTP/1.1\\r\\nHo" and stops holds its socket, its buffers and a
file descriptor for as long as it likes, and a few thousand such clients exhaust the server's
descriptors. This protocol starts a timer whenever the connection waits for a new request (on
connect, and once a response is complete); unless a new request has begun when it fires, the
connection is closed. A request that has begun (a slow upload, a WebSocket) is not affected.

At shutdown (one Ctrl-C, SIGTERM), uvicorn gives running requests a grace period, then cancels
them: a request cancelled so has ended as the operator asked, not failed, and is not logged as
an exception of the application.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger(__name__)

# Time a client has, from connecting or from the end of the last response, to send a whole
# request line and its headers. A browser or a script sends them in one packet.
HEADER_TIMEOUT_S = 10.0


class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP/1.1 protocol (h11 or httptools) with a deadline for request headers."""

    _header_timer: asyncio.TimerHandle | None = None
    _waited_cycle: object = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._waiting_for_request() and (self._header_timer is None or self._waited_cycle is not self.cycle):
            self._arm_header_timer()  # (re-armed for the next request on a kept-alive connection)
        super().data_received(data)

    def handle_websocket_upgrade(self, *args) -> None:
        self._disarm_header_timer()  # the WebSocket has its own start deadline
        super().handle_websocket_upgrade(*args)

    def connection_lost(self, exc) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _waiting_for_request(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        # The request in progress when armed: a new one replaces self.cycle once its headers
        # are complete, which is what the timer waits for.
        self._waited_cycle = self.cycle
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._on_header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.cycle is self._waited_cycle and self._waiting_for_request() and not self.transport.is_closing():
            self.transport.close()


class EndedAtShutdown:
    """ASGI wrapper: a request cancelled by the server's shutdown ends without a traceback."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if scope["type"] not in ("http", "websocket"):
                raise
            # Only uvicorn's shutdown cancels a request task (a client that leaves does not).
            log.info("%s %s: ended by the server's shutdown", scope["type"], scope.get("path", ""))
