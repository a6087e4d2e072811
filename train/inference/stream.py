"""bstrain stream as a library call: one pipeline of push/finish stages that the CLI, a server
and the tests compose the same way (docs/design.md, Live path):

    audio chunks (sources.py) -> an animator: the live model frame by frame (live.py) or an
    offline model block by block (chunked.py) -> frames at the output fps (FrameResampler)
    -> a pacer (pacing.py: even pace, fixed delay, late and dropped frames counted) -> a sink
    (a Live Link Face receiver, livelink.LiveLinkSender, or any callable (j, row))

In real time a frame leaves `delay` after its instant in the audio: the animator's latency
(lookahead and the features' right context), the chunk the audio arrives in, the resampler's
wait for the next model frame when the output fps differs, and a margin for compute. The
audio at instant t counts as fed at start + t: for a file, the moment its chunk is taken at
the pace of the audio; for raw PCM, the first chunk's arrival less its length.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from blendsync.train.inference.chunked import ChunkedAnimator
from blendsync.train.inference.live import LiveAnimator
from blendsync.train.inference.livelink import FrameResampler
from blendsync.train.inference.pacing import Pacer

log = logging.getLogger(__name__)

# Compute time a frame may take after its audio is in before it counts as late. The live
# preset steps a frame in about 2 ms of one core, a 10 ms chunk costs up to 9 ms with its
# features, and the stream's threads (openSMILE's, the pacer's) wait their turn on a busy
# machine: at 44.1 or 22.05 kHz, where the chunk, resampler and mel row waits add up in full
# for some frames, 15 ms left a few frames in a thousand late; 25 ms, none in 3,000.
COMPUTE_MARGIN_S = 0.025
# Frames a pacer holds: a second and a half at 60 fps; a stream further behind drops frames.
PACER_CAPACITY_S = 1.5


@dataclass(kw_only=True)
class StreamReport:
    frames: int = 0  # sent
    audio_s: float = 0.0
    # Per frame sent in real time: seconds from its instant in the audio to its sending.
    latencies: list[float] = field(default_factory=list)
    late: int = 0
    dropped: int = 0
    live: bool = False
    # The animator's latency (the chunk, lookahead and right context, and an offline model's
    # block wait and compute) and the delay frames were paced at (real time only).
    stated_latency_s: float = 0.0
    delay_s: float | None = None
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def summary(self) -> str:
        share = self.cpu_s / max(self.wall_s, 1e-9)
        cpu = f"CPU {share:.0%} of one core ({self.cpu_s / max(self.audio_s, 1e-9) * 1000:.0f} ms per audio second)"
        if self.delay_s is None:  # sent as fast as computed: no latency to speak of
            return f"{self.audio_s / max(self.wall_s, 1e-9):.1f}x real time; {cpu}"
        lat = np.asarray(self.latencies or [0.0]) * 1000
        return (
            f"latency after the audio instant: p50 {np.median(lat):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, "
            f"max {lat.max():.0f} ms; {self.late} late, {self.dropped} dropped; {cpu}"
        )


def make_animator(pred, source_rate: int, source: str = "<stream>"):
    """The live model's frame-by-frame animator, or an offline model's block by block one:
    both on the same incremental features (shared.streams.live)."""
    if getattr(pred.model, "streaming", False):
        return LiveAnimator(pred, source_rate, source)
    anim = ChunkedAnimator(pred, source_rate, source)
    log.warning(
        "this checkpoint is an offline model: it streams block by block, each frame waiting for the %d frames "
        "of its block (%.1f s behind the audio at 0.1 s chunks); a live model (bstrain fit --preset live) "
        "streams a fixed lookahead behind it",
        pred.frames_per_window,
        anim.latency_s(0.1),
    )
    return anim


def keep_collector_short() -> None:
    """Everything loaded so far (torch, the model, openSMILE) out of the garbage collector's
    reach: its full passes over those objects took up to 73 ms, and paused a stream long
    enough to make frames late. What a stream allocates from here on is still collected."""
    import gc

    gc.collect()
    gc.freeze()


def stream_audio(
    pred,
    chunks: Iterator[np.ndarray],
    source_rate: int,
    send: Callable[[int, np.ndarray], None],
    *,
    fps: float,
    realtime: bool = True,
    chunk_seconds: float = 0.01,
    from_file: bool = True,
    on_progress: Callable[[StreamReport], None] | None = None,
    source: str = "<stream>",
) -> StreamReport:
    """Push audio chunks ((N,) or (N, channels) float at source_rate) through the animator and
    send(j, row) every output frame j (rows (C,) in the model's channel order).

    realtime: frames are paced (Pacer) a fixed delay behind the audio; a file's chunks are
    taken at the pace of its audio (from_file), raw PCM as it arrives. Otherwise every frame is
    sent as soon as it is computed. source: how errors name the audio (its file)."""
    anim = make_animator(pred, source_rate, source)
    keep_collector_short()
    resampler = FrameResampler(pred.fps, fps, len(pred.channels))
    live = isinstance(anim, LiveAnimator)
    stated = anim.latency_s(chunk_seconds)
    report = StreamReport(live=live, stated_latency_s=stated)
    c0, w0 = time.process_time(), time.perf_counter()
    pacer = None
    received = 0
    j = 0

    def out(frames: np.ndarray) -> None:
        nonlocal j
        for row in frames:
            if pacer is None:  # as fast as computed
                send(j, row)
                report.frames += 1
            else:
                pacer.put(j, row)
            j += 1

    try:
        for data in chunks:
            received += len(data)
            if realtime and pacer is None:
                start = time.perf_counter() - (0.0 if from_file else len(data) / source_rate)
                report.delay_s = stated + resampler.wait_s + COMPUTE_MARGIN_S
                # Room for every frame between one leaving and the next computed (a block's
                # frames come at once), and PACER_CAPACITY_S more for a busy moment.
                pacer = Pacer(send, fps=fps, delay_s=report.delay_s, start=start,
                              capacity=int((report.delay_s + PACER_CAPACITY_S) * fps))  # fmt: skip
            if realtime and from_file:  # the audio of this chunk has not been spoken before its end
                wait = pacer.start + received / source_rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            out(resampler.push(anim.push(data)))
            if on_progress is not None:
                on_progress(_finish_report(report, pacer, c0, w0, anim, final=False))
        out(resampler.push(anim.finish()))
        report.audio_s = anim.features.duration_s
        out(resampler.finish(report.audio_s))
    finally:
        if hasattr(anim, "close"):
            anim.close()
        if pacer is not None:
            rep = pacer.close()
            report.latencies, report.late, report.dropped, report.frames = (
                rep.latencies,
                rep.late,
                rep.dropped,
                rep.sent,
            )
    return _finish_report(report, None, c0, w0, anim, final=True)


def _finish_report(report: StreamReport, pacer, c0: float, w0: float, anim, final: bool) -> StreamReport:
    report.cpu_s, report.wall_s = time.process_time() - c0, time.perf_counter() - w0
    if not final:
        report.audio_s = anim.features.duration_s
        if pacer is not None:
            report.latencies, report.late, report.dropped = (
                pacer.report.latencies,
                pacer.report.late,
                pacer.report.dropped,
            )
    return report
