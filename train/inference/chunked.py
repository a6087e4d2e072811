"""An offline model on audio as it arrives (a stream, or predict --chunk-seconds): curves
leave block by block, a fixed latency behind the audio, equal to whole-file prediction.

ChunkedAnimator pushes samples through shared.streams.live.LiveFeatures, the incremental
features a live model streams on (every sample processed once; the offline feature config's
emotion row simply waits for more audio after its instant), and runs the model on each block
of K frames once the lookahead frames after its last frame have features, so a frame waits
for up to K - 1 later frames as well (the latency frame blocks add). Carried between pushes:
the features a future window still reaches (L - K - lookahead frames before its block) and
the last smoothed output.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from blendsync.shared.audio import AudioError, decode_failure
from blendsync.shared.streams.live import LiveFeatures


class ChunkedAnimator:
    """push(samples (N,) or (N, channels) at source_rate) -> smoothed curves (n, C) of the
    frames that became final (n may be 0); finish() -> those of the remaining frames.
    pred: a predict.Predictor."""

    def __init__(self, pred, source_rate: int, source: str = "<stream>"):
        self.pred = pred
        self.features = LiveFeatures(pred.feature_config, source_rate, source)
        self.compute_s = block_compute_s(pred)
        # Features from the earliest frame a future window reaches: mel[0] is frame first.
        self._mel = np.zeros((0, pred.feature_config.n_mels), np.float32)
        self._emo = np.zeros((0, pred.feature_config.n_emotion), np.float32)
        self._first = 0
        self.done = 0  # frames [0, done) have curves
        self._prev = None
        self.featurize_s = self.model_s = 0.0

    def push(self, data: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        self._add(*self.features.push(data))
        self.featurize_s += time.perf_counter() - t0
        return self._blocks(final=False)

    def finish(self) -> np.ndarray:
        t0 = time.perf_counter()
        self._add(*self.features.finish())
        self.featurize_s += time.perf_counter() - t0
        return self._blocks(final=True)

    def close(self) -> None:
        self.features.close()

    def latency_s(self, chunk_seconds: float) -> float:
        """From a frame's instant to its curves, at most: the chunk its audio arrives in, the
        features' right context, the lookahead and the K - 1 later frames of its block, and
        the block's model time (what it measured, with room for a busy moment: BLOCK_MARGIN_S)."""
        p = self.pred
        block_wait = (p.lookahead + p.frames_per_window - 1) / p.fps
        compute = COMPUTE_ALLOWANCE * self.compute_s + BLOCK_MARGIN_S
        return chunk_seconds + self.features.right_context_s + block_wait + compute

    def _add(self, mel: np.ndarray, emo: np.ndarray) -> None:
        if len(mel):
            self._mel, self._emo = np.concatenate([self._mel, mel]), np.concatenate([self._emo, emo])

    def _blocks(self, final: bool) -> np.ndarray:
        """The blocks whose windows lie within the frames featurized (all of them at the end)."""
        p, featurized = self.pred, self.features.frames
        K, la = p.frames_per_window, p.lookahead
        ready = -(-featurized // K) if final else max(0, featurized - la) // K
        last = featurized if final else ready * K
        if last <= self.done:
            return np.zeros((0, len(p.channels)), np.float32)
        t0 = time.perf_counter()
        cur = p.current_blocks(
            self._mel,
            self._emo,
            range(self.done // K, ready),
            first=self._first,
            final_frames=featurized if final else None,
        )
        smoothed = p.smooth(cur, self._prev)
        self._prev = smoothed[-1]
        self.done = last
        keep = max(self._first, self.done - p.reach)
        self._mel, self._emo = self._mel[keep - self._first :], self._emo[keep - self._first :]
        self._first = keep
        self.model_s += time.perf_counter() - t0
        return smoothed


# A block's model time, as measured, times this is the room the stated latency leaves for it,
# and BLOCK_MARGIN_S more for a busy moment (the openSMILE thread's turn, the machine's other
# work): at K = 128 a block's frames wait seconds anyway, and 0.1 s of them is 2%. (Without it,
# 1 frame in 6,000 was late in real-time streams of the quickstart's model.)
COMPUTE_ALLOWANCE = 3.0
BLOCK_MARGIN_S = 0.1
_MEASURED_LOCK = threading.Lock()


def block_compute_s(pred) -> float:
    """Seconds of one block's model work on this machine (one window, warm), measured once per
    Predictor: what a block adds to the latency after its features are in."""
    with _MEASURED_LOCK:
        measured = getattr(pred, "_block_compute_s", None)
        if measured is None:
            n, K = 2 * pred.window, pred.frames_per_window
            mel = np.tile(pred.norm.mel_mean.astype(np.float32), (n, 1))
            emo = np.tile(pred.norm.emotion_mean.astype(np.float32), (n, 1))
            b = -(-pred.reach // K)  # the first block whose window holds no padding
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                pred.current_blocks(mel, emo, range(b, b + 1), final_frames=n)
                times.append(time.perf_counter() - t0)
            measured = min(times[1:])
            object.__setattr__(pred, "_block_compute_s", measured)
        return measured


def animate_chunked(pred, audio: str | Path, chunk_seconds: float) -> dict:
    """Curves (T, C) at the model's fps for a file read chunk by chunk, with the audio
    duration, featurize and model seconds, and the latency (ChunkedAnimator.latency_s)."""
    try:
        info = sf.info(str(audio))
    except Exception as e:
        raise AudioError(f"{audio}: cannot decode audio ({decode_failure(e)})") from None
    anim = ChunkedAnimator(pred, info.samplerate, str(audio))
    block = max(1, int(round(chunk_seconds * info.samplerate)))
    try:
        out = [anim.push(data) for data in sf.blocks(str(audio), blocksize=block, dtype="float32", always_2d=True)]
        out.append(anim.finish())
    finally:
        anim.close()
    curves = np.concatenate(out)
    if not len(curves):
        raise AudioError(f"{audio}: no frames")
    return {
        "curves": curves,
        "duration_s": anim.features.duration_s,
        "featurize_s": anim.featurize_s,
        "model_s": anim.model_s,
        "latency_s": anim.latency_s(chunk_seconds),
    }
