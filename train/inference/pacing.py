"""Frames out at an even pace, a fixed delay behind the audio (docs/design.md, Live path).

Pacer.put(j, row) is called by the thread that computes frames; a thread of the pacer's own
sends frame j at start + j / fps + delay and never before, so that a receiver gets one frame
every 1 / fps s whatever the bursts of compute. A frame computed after its time leaves at once
and is counted late; at most `capacity` frames wait (beyond that the oldest waiting frame is
dropped and counted), so a stream that falls behind says so and never queues without bound.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# A frame reaching the pacer this long after its due time is late.
LATE_TOLERANCE_S = 0.001


@dataclass
class PacingReport:
    """sent: frames sent; late: reached the pacer after their due time (computed late, or
    queued behind a slow send), so sent late; dropped: never sent (the queue was full);
    latencies: per frame sent, seconds from its instant in the audio to its sending."""

    sent: int = 0
    late: int = 0
    dropped: int = 0
    latencies: list[float] = field(default_factory=list)

    def percentiles_ms(self) -> dict[str, float]:
        lat = np.asarray(self.latencies or [0.0]) * 1000
        return {"p50": float(np.median(lat)), "p99": float(np.percentile(lat, 99)), "max": float(lat.max())}


class Pacer:
    """send(j, row) for every frame j at start + j / fps + delay_s (time.perf_counter clock)."""

    def __init__(
        self, send: Callable[[int, np.ndarray], None], *, fps: float, delay_s: float, start: float, capacity: int
    ):
        self.send, self.fps, self.delay_s, self.start = send, float(fps), float(delay_s), float(start)
        self.capacity = max(1, capacity)
        self.report = PacingReport()
        self._queue: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pacer", daemon=True)
        self._thread.start()

    def instant(self, j: int) -> float:
        """When the audio at frame j's instant was fed."""
        return self.start + j / self.fps

    def put(self, j: int, row: np.ndarray) -> None:
        with self._cond:
            if self._error is not None:
                raise RuntimeError(f"sending frames failed: {self._error}") from self._error
            if len(self._queue) >= self.capacity:
                self._queue.popleft()
                self.report.dropped += 1
            self._queue.append((j, row))
            self._cond.notify()

    def close(self) -> PacingReport:
        """Send what waits (at its time) and stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"sending frames failed: {self._error}") from self._error
        return self.report

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    if not self._queue:
                        return
                    j, row = self._queue.popleft()
                due = self.instant(j) + self.delay_s
                taken = time.perf_counter()
                if due > taken:
                    time.sleep(due - taken)
                self.send(j, row)
                now = time.perf_counter()
                r = self.report
                r.sent += 1
                r.latencies.append(now - self.instant(j))
                # Late: it reached the pacer after its time (computed late, or waiting behind a
                # slow send). A sleep that overshoots (the OS's scheduling) is not lateness: it
                # shows in the latencies.
                if taken > due + LATE_TOLERANCE_S:
                    r.late += 1
        except BaseException as e:  # reported by the next put or close
            with self._cond:
                self._error = e
