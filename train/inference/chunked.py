"""Chunked (streaming) prediction: audio arrives N seconds at a time and curves leave with a
fixed latency, matching whole-file prediction.

ChunkedAnimator pushes samples through shared.streams.chunked.FeatureStream (the decoding
checks and feature gridding of whole files) and runs the model on each block of K frames
once the lookahead frames after its last frame have features, so a frame waits for up to
K - 1 later frames as well (the latency frame blocks add). Carried between pushes: the
features a future window still reaches (L - K - lookahead frames before its block) and the
last smoothed output.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import soundfile as sf

from blendsync.shared.audio import AudioError, decode_failure
from blendsync.shared.streams.chunked import RIGHT_MARGIN_S, FeatureStream


class ChunkedAnimator:
    """push(samples (N,) or (N, channels) at source_rate) -> smoothed curves (n, C) of the
    frames that became final (n may be 0); finish() -> those of the remaining frames.
    pred: a predict.Predictor."""

    def __init__(self, pred, source_rate: int, source: str = "<stream>"):
        self.pred = pred
        self.features = FeatureStream(pred.feature_config, source_rate, source)
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

    def latency_s(self, chunk_seconds: float) -> float:
        """From a sample arriving to its frame's curves, at most: the chunk, the extractor
        margin, the lookahead and K - 1 frames of the block (compute comes on top)."""
        p = self.pred
        return chunk_seconds + RIGHT_MARGIN_S + (p.lookahead + p.frames_per_window - 1) / p.fps

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


def animate_chunked(pred, audio: str | Path, chunk_seconds: float) -> dict:
    """Curves (T, C) at the model's fps for a file read chunk by chunk, with the audio
    duration, featurize and model seconds, and the latency (ChunkedAnimator.latency_s)."""
    try:
        info = sf.info(str(audio))
    except Exception as e:
        raise AudioError(f"{audio}: cannot decode audio ({decode_failure(e)})") from None
    anim = ChunkedAnimator(pred, info.samplerate, str(audio))
    block = max(1, int(round(chunk_seconds * info.samplerate)))
    out = [anim.push(data) for data in sf.blocks(str(audio), blocksize=block, dtype="float32", always_2d=True)]
    out.append(anim.finish())
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
