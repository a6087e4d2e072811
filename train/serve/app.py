"""bstrain serve: one model behind HTTP and WebSocket, for engines, voice pipelines and browsers.

Starlette on uvicorn: an ASGI stack with WebSockets and streaming request bodies built in,
kept up by the Encode team, small (no validation layer we would not use: the wire format is
checked by protocol.py). Every model computation runs on a worker thread, so the event loop
keeps reading every client while frames are computed; torch runs one thread per computation
(sessions are the parallelism).

Routes: GET /healthz; GET /v1/model; POST /v1/animate (an audio file -> the curves `bstrain
predict` writes for it); WebSocket /v1/stream (protocol.py); GET / (the live page). With a
token, every route but /healthz and the page needs it: "Authorization: Bearer TOKEN", or
?token=TOKEN (a browser's WebSocket cannot set headers).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from blendsync.shared.audio import decode_audio_bytes
from blendsync.shared.channels import CHANNEL_ORDERS, check_order, reorder
from blendsync.shared.features.pieces import Workers
from blendsync.train.core.output_gain import check_gain
from blendsync.train.inference.outputs import CURVE_FORMATS
from blendsync.train.inference.predict import Predictor, animate_file
from blendsync.train.inference.stream import keep_collector_short
from blendsync.train.serve.guard import SameMachineOnly
from blendsync.train.serve.protocol import (
    CLOSE_BAD_INPUT,
    CLOSE_SERVER_ERROR,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    MODEL_ORDER,
    ProtocolError,
    end_message,
    error_message,
    frame_message,
    parse_message,
    parse_start,
    ready_message,
)
from blendsync.train.serve.sessions import StreamSession, warm_up
from blendsync.train.serve.upload import Upload, UploadError, upload_of

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page")
# The page's files: the only names GET /NAME serves.
PAGE_FILES = frozenset(p.name for p in PAGE.iterdir() if p.is_file())
# Model work at once, sessions and batch together (one thread per core), and the pieces a file
# is cut into.
CORES = os.cpu_count() or 2
# Frames waiting to be sent: a full queue holds the model back, unless its oldest frame has
# waited STALE_S (a slow client), then the oldest are dropped and counted.
SEND_QUEUE, STALE_S = 300, 2.0
# Audio waiting for the model, per session, before the server stops reading the client (about
# 30 s of 16 kHz 16-bit mono).
INBOX_BYTES = 1 << 20
# A session holds a slot from its connection: one that sends no start message within this
# long is closed (1008), so idle sockets cannot hold every slot.
START_TIMEOUT_S = 10.0
# On SIGINT/SIGTERM: requests in progress (an upload still arriving, a batch) get this long to
# end before the server closes their connections and exits, so that one Ctrl-C stops it.
SHUTDOWN_GRACE_S = 5
# The largest WebSocket message taken (a larger one closes the session with 1009): 2 MiB, over
# a second of any format a session may start (192 kHz, 8 channels, float32: 6 MB a second, in
# pieces), a minute of 16 kHz 16-bit mono. A 16 MB message added about 360 MB to a session.
WS_MAX_MESSAGE_BYTES = 2 << 20
# Audio computed at once, in seconds of the session's format: a message is cut into such
# pieces, so that the features and the model never hold more than this at a time.
PIECE_S = 1.0
# An upload over the limit is read on (and thrown away) up to this much more before the 413, so
# that the client, still sending, reads the answer rather than a broken connection.
DRAIN_BYTES = 16 << 20
# An upload holds a batch slot while its body arrives: one that sends no byte for BODY_IDLE_S,
# or is not whole after BODY_DEADLINE_S (100 MB at 0.4 MB/s), is answered 408 and frees it.
BODY_IDLE_S, BODY_DEADLINE_S = 10.0, 250.0
# A close code asking the client to come back later (RFC 6455 1013: try again later).
CLOSE_BUSY = 1013
BATCH_FORMATS = ("json", "livelink", "npy")


@dataclass(kw_only=True)
class ServerConfig:
    """token: required on every route but /healthz and / (None: none asked);
    max_upload_mb: the largest audio file /v1/animate takes; max_audio_s: the longest audio
    it takes (the file's header says, before a sample is decoded); max_sessions: WebSocket
    sessions at once (more are closed with 1013); allow_livelink: hosts off this machine a
    session may forward Live Link packets to (guard.py)."""

    checkpoint: str
    device: str = "cpu"
    token: str | None = None
    max_upload_mb: float = 100.0
    max_sessions: int = 64
    max_audio_s: float = 1800.0
    allow_livelink: tuple[str, ...] = ()


@dataclass(kw_only=True)
class ServerState:
    pred: Predictor
    config: ServerConfig
    # What GET /v1/model answers and every ready message carries (model_doc).
    model: dict
    sessions: int = 0
    # Totals since start: sessions served, files animated, frames dropped for slow clients.
    served: dict = field(default_factory=lambda: {"sessions_served": 0, "files_animated": 0, "dropped_frames": 0})
    # Batch requests in progress at once (the others wait, their uploads not yet read whole):
    # each already cuts its file into a piece per core.
    batch_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CORES))
    # Model work at once, sessions and batch together: one thread per core. More threads only
    # contend for the interpreter, and the event loop (which answers every client, keep-alive
    # pings included) would wait behind them all.
    compute: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(CORES))


def create_app(config: ServerConfig):
    """The ASGI app serving config.checkpoint (loaded once, here), behind the same-machine guard
    when it asks no token (guard.py)."""
    import torch

    from blendsync.train.core.checkpoint import Checkpoint

    torch.set_num_threads(1)
    ck = Checkpoint.load(config.checkpoint)
    hashes = {"feature_config_hash": ck.feature_config_hash, "train_config_hash": ck.config.hash}
    pred = Predictor.from_checkpoint(ck, config.device)
    warm_up(pred)
    keep_collector_short()  # a full collection over the model's objects would pause every session
    state = ServerState(pred=pred, config=config, model=model_doc(pred, hashes))
    app = Starlette(
        routes=[
            Route("/healthz", partial(healthz, state=state)),
            Route("/v1/model", partial(model_info, state=state)),
            Route("/v1/animate", partial(animate, state=state), methods=["POST"]),
            WebSocketRoute("/v1/stream", partial(stream, state=state)),
            Route("/", page),
            Route("/{name:str}", page),
        ],
    )
    app.state.blendsync = state
    return SameMachineOnly(app, config.token)


def model_doc(pred: Predictor, hashes: dict) -> dict:
    return {
        "channels": list(pred.channels),
        "channel_orders": [MODEL_ORDER, *(o for o in CHANNEL_ORDERS if _order_ok(pred, o))],
        "fps": pred.fps,
        "live": bool(getattr(pred.model, "streaming", False)),
        "lookahead": pred.lookahead,
        "sample_rate": pred.feature_config.sample_rate,
        **hashes,
    }


def _order_ok(pred, order: str) -> bool:
    try:
        check_order(pred.channels, order)
        return True
    except ValueError:
        return False


def _authorized(headers, query, state: ServerState) -> bool:
    token = state.config.token
    if not token:
        return True
    given = query.get("token") or ""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return hmac.compare_digest(given.encode(), token.encode())


def _refused() -> JSONResponse:
    return JSONResponse(
        {"error": "a bearer token is required: Authorization: Bearer TOKEN (or ?token=TOKEN)"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def healthz(request: Request, state: ServerState) -> Response:
    return JSONResponse({"status": "ok", "sessions": state.sessions, **state.served})  # sessions: open now


async def model_info(request: Request, state: ServerState) -> Response:
    if not _authorized(request.headers, request.query_params, state):
        return _refused()
    return JSONResponse(state.model)


async def page(request: Request) -> Response:
    name = request.path_params.get("name", "index.html")
    if name not in PAGE_FILES:
        return PlainTextResponse("not found", status_code=404)
    return FileResponse(PAGE / name)


async def animate(request: Request, state: ServerState) -> Response:
    """The file `bstrain predict` writes for the audio file in the body (or a multipart form's
    file): format json (outputs.curves_json), livelink (its CSV) or npy; fps, gain and
    channel_order as predict's options."""
    if not _authorized(request.headers, request.query_params, state):
        return _refused()
    q = request.query_params
    try:
        fmt = q.get("format", "json")
        if fmt not in BATCH_FORMATS:
            raise ValueError(f"format must be one of {list(BATCH_FORMATS)}, got {fmt!r}")
        fps = _number(q.get("fps", "60"))
        if fps not in (30.0, 60.0):
            raise ValueError(f"fps must be 30 or 60 (as predict's), got {q.get('fps')!r}")
        gain = check_gain(q.get("gain", "1"), "gain")
        order = q.get("channel_order")
        order = None if order == MODEL_ORDER else order
        if order is not None:
            check_order(state.pred.channels, order)
        if fmt == "livelink" and len(state.pred.channels) != 52:
            raise ValueError("format livelink needs the 52 ARKit channels; this model predicts others: use json or npy")
    except ValueError as e:
        return JSONResponse({"error": str(e)}, status_code=400)
    limit = int(state.config.max_upload_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + DRAIN_BYTES:
        return _too_large(state)
    # The slot first, then the body: a request waiting for a slot has its upload not yet read
    # (TCP holds the client back), so waiting uploads cost no memory here.
    async with state.batch_slots:
        try:
            body, size = await _read_body(request, limit)
        except UploadStalled as e:
            return JSONResponse({"error": str(e)}, status_code=408, headers={"Connection": "close"})
        except ClientDisconnect:  # the client left mid-upload: nobody to answer
            log.info("an upload ended mid-body: the client left")
            return Response(status_code=400)
        if size > limit:
            return _too_large(state)
        try:
            upload = upload_of(body, request.headers.get("content-type"))
        except UploadError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        if not upload.data:
            return JSONResponse({"error": "the request body must be an audio file (WAV, FLAC, OGG or MP3)"}, 400)
        del body
        try:
            # This thread decodes, makes the log-mel and writes the answer; the openSMILE pass
            # and the model run in pieces on the compute threads, one core each.
            workers = Workers(parts=CORES, mapper=partial(_map_on_compute, limiter=state.compute))
            content = await anyio.to_thread.run_sync(
                _animate_bytes, state.pred, upload, fmt, fps, gain, order, workers, state.config.max_audio_s
            )
        except ValueError as e:  # not audio, silent, too short: the file's fault (named as the client named it)
            return JSONResponse({"error": str(e)}, status_code=400)
    state.served["files_animated"] += 1
    media = {"json": "application/json", "livelink": "text/csv", "npy": "application/octet-stream"}[fmt]
    return Response(content, media_type=media)


class UploadStalled(Exception):
    """An upload whose body stopped arriving (it would hold a batch slot for as long as it liked)."""


async def _read_body(request: Request, limit: int) -> tuple[bytearray, int]:
    """(the body up to `limit` bytes, the bytes received): read on past the limit up to
    DRAIN_BYTES more (then the 413 is read, not a broken connection). UploadStalled when no
    byte arrives for BODY_IDLE_S or the whole takes over BODY_DEADLINE_S."""
    body, size = bytearray(), 0
    chunks = request.stream().__aiter__()
    deadline = time.monotonic() + BODY_DEADLINE_S
    while True:
        wait = min(BODY_IDLE_S, deadline - time.monotonic())
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), max(wait, 0.0))
        except StopAsyncIteration:
            return body, size
        except TimeoutError:
            why = f"no byte for {BODY_IDLE_S:g} s" if wait == BODY_IDLE_S else f"not whole after {BODY_DEADLINE_S:g} s"
            raise UploadStalled(f"the upload stalled ({why}, after {size} bytes)") from None
        size += len(chunk)
        if size <= limit:
            body += chunk
        elif size > limit + DRAIN_BYTES:
            return body, size


def _number(text: str) -> float | None:
    """A query value as a number, or None where it is not one (the caller names the parameter)."""
    try:
        return float(text)
    except ValueError:
        return None


def _too_large(state: ServerState) -> JSONResponse:
    return JSONResponse({"error": f"the upload exceeds {state.config.max_upload_mb:g} MB (--max-upload-mb)"}, 413)


def _map_on_compute(fn, items, *, limiter: anyio.CapacityLimiter) -> list:
    """map(fn, items) from a worker thread, each item on a compute thread (one per core, shared
    with the live sessions), all at once."""

    async def run_all() -> list:
        out = [None] * len(items)

        async def one(i: int, item) -> None:
            out[i] = await anyio.to_thread.run_sync(fn, item, limiter=limiter)

        async with anyio.create_task_group() as tg:
            for i, item in enumerate(items):
                tg.start_soon(one, i, item)
        return out

    return anyio.from_thread.run(run_all)


def _animate_bytes(
    pred: Predictor,
    upload: Upload,
    fmt: str,
    fps: float,
    gain: float,
    order: str | None,
    workers: Workers,
    max_audio_s: float,
) -> bytes:
    """The file predict would write for the upload: decoded from memory (no path of the
    server's reaches a message), the same curves and the same encoders."""
    cfg = pred.feature_config
    audio = decode_audio_bytes(upload.data, cfg.sample_rate, upload.source, cfg.resampler,
                               rates=(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE), max_duration_s=max_audio_s)  # fmt: skip
    curves, _ = animate_file(pred, audio, fps=fps, gain=gain, workers=workers)
    names = list(pred.channels)
    if order is not None and fmt != "livelink":
        curves, names = reorder(curves, pred.channels, order), list(check_order(pred.channels, order))
    return CURVE_FORMATS[fmt].encode(curves, fps, names, upload.name)


async def stream(ws: WebSocket, state: ServerState) -> None:
    """One session (protocol.py): start, PCM, end; frames sent as they are computed through a
    bounded queue, so that a slow client loses its oldest frames (counted) rather than the
    server growing without bound."""
    if not _authorized(ws.headers, ws.query_params, state):
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            await ws.send_denial_response(_refused())  # 401 with the reason, as every other route
        else:
            await ws.close(code=CLOSE_BAD_INPUT, reason="a bearer token is required")
        return
    await ws.accept()
    if state.sessions >= state.config.max_sessions:
        await ws.send_text(error_message(f"the server is at its {state.config.max_sessions} sessions"))
        await ws.close(code=CLOSE_BUSY, reason="busy")
        return
    state.sessions += 1
    state.served["sessions_served"] += 1
    session = sender = computer = None
    outbox = _Outbox()
    try:
        start = parse_start(await _first_message(ws), tuple(CHANNEL_ORDERS))
        session = await anyio.to_thread.run_sync(
            StreamSession, state.pred, start, state.config.allow_livelink, limiter=state.compute
        )
        await ws.send_text(ready_message(session.channels, session.fps, session.latency_ms, state.model))
        sender = asyncio.create_task(_send_frames(ws, outbox, session.fps, start.format))
        audio = _AudioInbox()
        computer = asyncio.create_task(_compute(session, audio, outbox, state.compute))
        while True:
            msg = await _receive_unless_failed(ws, computer)
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("bytes") is not None:
                audio.put(msg["bytes"])
                await audio.room()  # a client sending faster than the model: stop reading it for a while
                if computer.done():  # it stopped taking audio: its error ends the session (raised here)
                    computer.result()
                continue
            if parse_message(msg.get("text") or "")["type"] == "start":
                raise ProtocolError("a session takes one start message")
            audio.end()
            await computer  # the rest of the audio, then the last frames
            outbox.close()
            await sender
            sender = None
            state.served["dropped_frames"] += outbox.dropped
            await ws.send_text(end_message(session.frames, outbox.dropped))
            await ws.close()
            return
    except ValueError as e:  # ProtocolError, or the audio itself (e.g. a rate the resampler refuses)
        await _close_with(ws, str(e), CLOSE_BAD_INPUT)
    except WebSocketDisconnect:
        pass
    except Exception as e:  # this session ends; the server and every other session go on
        log.exception("session failed")
        await _close_with(ws, f"the server could not go on with this session ({type(e).__name__})", CLOSE_SERVER_ERROR)
    finally:
        state.sessions -= 1
        for task in (sender, computer):
            if task is not None:
                task.cancel()
        if session is not None:
            await anyio.to_thread.run_sync(session.close)


async def _receive_unless_failed(ws: WebSocket, computer: asyncio.Task) -> dict:
    """The client's next message; or, where the session's computation fails first, its error
    (raised here: the session ends with it even when the client sends nothing more)."""
    receive = asyncio.ensure_future(ws.receive())
    await asyncio.wait({receive, computer}, return_when=asyncio.FIRST_COMPLETED)
    if receive.done():
        return receive.result()
    receive.cancel()
    computer.result()  # raises its error (it returns only after the end, which the client sends)
    raise ProtocolError("the session's computation ended before its audio")


class _AudioInbox:
    """A session's audio as it arrives, taken whole by the computing task: while the model is
    busy the messages gather, and the next computation takes them all at once (one thread hop
    and one hand-over to the extractors instead of one per 10 ms message), so a loaded server
    spends its time on frames rather than on wake-ups. Idle, each message is computed as it
    comes."""

    def __init__(self):
        self.data = bytearray()
        self.ended = False
        self.closed = False  # the computing task has stopped: nothing will be taken any more
        self.ready = asyncio.Event()
        self.taken = asyncio.Event()

    def put(self, data: bytes) -> None:
        self.data += data
        self.ready.set()

    async def room(self) -> None:
        """Wait while more than INBOX_BYTES wait to be computed (TCP then slows the client), or
        until the computing task has stopped (then no room will ever come)."""
        while len(self.data) > INBOX_BYTES and not self.closed:
            self.taken.clear()
            await self.taken.wait()

    def close(self) -> None:
        """The computing task is gone (its error, or the end): wake whoever waits for room."""
        self.closed = True
        self.taken.set()

    def end(self) -> None:
        self.ended = True
        self.ready.set()

    async def take(self) -> tuple[bytes, bool]:
        await self.ready.wait()
        self.ready.clear()
        data, self.data = bytes(self.data), bytearray()
        self.taken.set()
        return data, self.ended


class _Outbox:
    """A session's frames waiting to be sent. Full, it holds the model back (the client reads
    as fast as frames come, e.g. a burst after a file sent at once) unless its oldest frame
    has waited STALE_S: then the client is slow, and its oldest frames are dropped (counted)."""

    def __init__(self):
        self.items: deque = deque()  # (enqueued at, (j, values)), or None: no more
        self.dropped = 0
        self.changed = asyncio.Event()

    async def put(self, frames) -> None:
        for f in frames:
            while len(self.items) >= SEND_QUEUE:
                if time.perf_counter() - self.items[0][0] > STALE_S:
                    self.items.popleft()
                    self.dropped += 1
                else:
                    await asyncio.sleep(0.005)
            self.items.append((time.perf_counter(), f))
            self.changed.set()

    def close(self) -> None:
        self.items.append(None)
        self.changed.set()

    async def get(self):
        """The next (j, values), or None after close()."""
        while not self.items:
            self.changed.clear()
            await self.changed.wait()
        item = self.items.popleft()
        return None if item is None else item[1]


async def _compute(session: StreamSession, audio: _AudioInbox, outbox: _Outbox, limiter) -> None:
    start = session.start
    piece = max(1, int(PIECE_S * start.sample_rate)) * start.bytes_per_frame
    try:
        while True:
            data, ended = await audio.take()
            for at in range(0, len(data), piece):  # bounded pieces: memory does not follow the message size
                await outbox.put(await anyio.to_thread.run_sync(session.push, data[at : at + piece], limiter=limiter))
            if ended:
                await outbox.put(await anyio.to_thread.run_sync(session.finish, limiter=limiter))
                return
    finally:
        audio.close()


async def _first_message(ws: WebSocket) -> dict:
    try:
        msg = await asyncio.wait_for(ws.receive(), START_TIMEOUT_S)
    except TimeoutError:
        raise ProtocolError(f"no start message within {START_TIMEOUT_S:g} s of connecting") from None
    if msg["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(msg.get("code", 1000))
    if msg.get("text") is None:
        raise ProtocolError('the first message must be {"type": "start", ...}, not audio')
    parsed = parse_message(msg["text"])
    if parsed["type"] != "start":
        raise ProtocolError('the first message must be {"type": "start", ...}')
    return parsed


async def _send_frames(ws: WebSocket, outbox: _Outbox, fps: float, fmt: str) -> None:
    while True:
        item = await outbox.get()
        if item is None:
            return
        j, values = item
        message = frame_message(j, fps, values, fmt)
        if isinstance(message, bytes):
            await ws.send_bytes(message)
        else:
            await ws.send_text(message)


def close_reason(message: str) -> str:
    """A close frame's reason: at most 123 bytes of UTF-8 (RFC 6455: a control frame carries 125,
    two of them the code), cut between characters."""
    return message.encode("utf-8")[:123].decode("utf-8", "ignore")


async def _close_with(ws: WebSocket, message: str, code: int) -> None:
    try:
        await ws.send_text(error_message(message))
        await ws.close(code=code, reason=close_reason(message))
    except (RuntimeError, WebSocketDisconnect, OSError):  # the client has gone already
        pass


def run_server(config: ServerConfig, host: str, port: int, on_ready=None) -> None:
    """Serve until interrupted (uvicorn's own SIGINT/SIGTERM handling: sessions are closed).
    on_ready(): called once the model is loaded and warmed up, before listening."""
    import uvicorn

    from blendsync.train.serve.connections import EndedAtShutdown, HeaderTimeoutProtocol

    app = create_app(config)
    if on_ready is not None:
        on_ready()
    # No per-message compression: frames are small and many, and deflating each cost more CPU
    # than it saved on a loopback or LAN.
    uvicorn.run(EndedAtShutdown(app), host=host, port=port, log_level="warning", ws_max_size=WS_MAX_MESSAGE_BYTES,
                ws_per_message_deflate=False, http=HeaderTimeoutProtocol,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S)  # fmt: skip
