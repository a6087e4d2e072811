"""One WebSocket session's animation: PCM bytes in, output frames out, isolated from every
other session (its own features, model state and carried frame).

A session is bstrain stream's pipeline without the pacing: the live model's frame-by-frame
animator (or an offline model's chunked one: make_animator), the output gain, a resampler to
the session's fps and its channel order. Its frames equal `bstrain stream` of the same audio
within the JSON message's rounding (tested). Each call runs on a worker thread (app.py), one
at a time per session.
"""

from __future__ import annotations

import logging

import numpy as np

from blendsync.shared.channels import check_order, reorder
from blendsync.train.core.output_gain import apply_gain
from blendsync.train.inference.livelink import FrameResampler, LiveLinkSender
from blendsync.train.inference.stream import make_animator
from blendsync.train.serve.guard import livelink_target
from blendsync.train.serve.protocol import ProtocolError, StartMessage

log = logging.getLogger(__name__)


class StreamSession:
    """push(pcm bytes) -> output frames [(j, values (C',))] computed since the last call;
    finish() -> the rest. Bytes that end mid sample instant wait for the next message."""

    def __init__(self, pred, start: StartMessage, allow_livelink: tuple[str, ...] = ()):
        self.pred, self.start = pred, start
        self.fps = float(start.fps or pred.fps)
        if start.channel_order is not None:
            try:
                self.channels = list(check_order(pred.channels, start.channel_order))
            except ValueError as e:
                raise ProtocolError(f"start: {e}") from None
        else:
            self.channels = list(pred.channels)
        self.anim = make_animator(pred, start.sample_rate, source="<session>")
        self.live = getattr(pred.model, "streaming", False)
        self.resampler = FrameResampler(pred.fps, self.fps, len(pred.channels))
        self.sender = None
        if start.livelink is not None:
            try:
                host, port = livelink_target(start.livelink, allow_livelink)  # resolved once, here
                self.sender = LiveLinkSender(list(pred.channels), host=host, port=port,
                                             subject=start.subject, fps=int(round(self.fps)))  # fmt: skip
            except (ValueError, OSError) as e:
                raise ProtocolError(f"start: {e}") from None
        self._rest = b""
        self.frames = 0  # output frames computed
        self.samples = 0  # sample instants received

    @property
    def latency_ms(self) -> float:
        """From a frame's instant to its computation, compute aside (the stated latency)."""
        return 1000.0 * (self.anim.latency_s(0.0) + self.resampler.wait_s)

    def push(self, data: bytes) -> list[tuple[int, np.ndarray]]:
        data = self._rest + data
        whole = len(data) - len(data) % self.start.bytes_per_frame
        self._rest = data[whole:]
        if not whole:
            return []
        x = self.start.samples(data[:whole])
        self.samples += len(x)
        return self._out(self.resampler.push(self._gain(self.anim.push(x))))

    def finish(self) -> list[tuple[int, np.ndarray]]:
        rows = self.resampler.push(self._gain(self.anim.finish()))
        rows = np.concatenate([rows, self.resampler.finish(self.anim.features.duration_s)])
        return self._out(rows)

    def close(self) -> None:
        if hasattr(self.anim, "close"):
            self.anim.close()
        if self.sender is not None:
            self.sender.close()

    def _gain(self, rows: np.ndarray) -> np.ndarray:
        return apply_gain(rows, self.pred.norm.target_mean, self.start.gain)

    def _out(self, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
        if not len(rows):
            return []
        if self.sender is not None:
            for k, row in enumerate(rows):
                self.sender(self.frames + k, row)
        if self.start.channel_order is not None:
            rows = reorder(rows, self.pred.channels, self.start.channel_order)
        out = [(self.frames + k, row) for k, row in enumerate(rows)]
        self.frames += len(rows)
        return out


def warm_up(pred) -> None:
    """One short session of quiet noise at start-up: loads what the first session would
    (openSMILE, the resampler, the traced step) so that no client waits for it."""
    start = StartMessage(sample_rate=pred.feature_config.sample_rate)
    session = StreamSession(pred, start)
    try:
        noise = np.random.default_rng(0).normal(0, 0.01, pred.feature_config.sample_rate)
        session.push((noise * 32767).astype("<i2").tobytes())
        session.finish()
    finally:
        session.close()
