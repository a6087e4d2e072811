"""Features of audio as it arrives, frame by frame, equal to the whole file's.

FeatureStream takes samples at their source rate (push) and returns the features of the
frames they complete, through the same decoding checks (shared.audio.AudioStream) and the
same gridding (shared.features.features_at) as featurize_file. What it carries between
pushes: the resampler, the samples still needed as left context and the count of frames
done. A frame's features are computed once the audio reaches RIGHT_MARGIN_S past it, from a
segment starting on the 10 ms grid with LEFT_MARGIN_S of audio before its emotion context,
so the extractors' rows fall where the whole-file rows do.
"""

from __future__ import annotations

import math

import numpy as np

from blendsync.shared.audio import AudioStream
from blendsync.shared.config import FeatureConfig
from blendsync.shared.features import features_at
from blendsync.shared.frame_grid import frame_times, n_frames

# Audio beyond a frame's own context that its features depend on: the mel window reaches
# 16 ms to either side; openSMILE's LLD frames reach 50 ms past a context's end, and its
# smoothers (3-frame moving averages, F0 Viterbi) settle within a few hundred ms.
LEFT_MARGIN_S = 1.0
RIGHT_MARGIN_S = 0.3
# openSMILE's first functional row needs its context plus its 60 ms F0 frame.
FIRST_CONTEXT_MARGIN_S = 0.1


class FeatureStream:
    """push(samples (N,) or (N, channels) at source_rate) -> (mel (n, M), emotion (n, E)) of
    the n frames they complete (n may be 0); finish() -> those of the remaining frames."""

    def __init__(self, cfg: FeatureConfig, source_rate: int, source: str = "<stream>"):
        self.cfg = cfg
        self.audio = AudioStream(source_rate, cfg.sample_rate, source, cfg.resampler)
        # Samples from the last segment's start on: y[0] is sample y_base of the stream.
        self._y, self._y_base = np.zeros(0, np.float32), 0
        self.frames = 0  # frames [0, frames) have features

    @property
    def duration_s(self) -> float:
        """Audio received so far, at the feature sample rate."""
        return (self._y_base + len(self._y)) / self.cfg.sample_rate

    def push(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._y = np.concatenate([self._y, self.audio.push(data)])
        have_s, cfg = self.duration_s, self.cfg
        if have_s < cfg.emotion.context_s + FIRST_CONTEXT_MARGIN_S + RIGHT_MARGIN_S:
            upto = self.frames  # the first full context (which frames before it share) is not complete yet
        else:
            upto = max(self.frames, int(math.floor((have_s - RIGHT_MARGIN_S) * cfg.fps)))
        return self._features(upto)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        self._y = np.concatenate([self._y, self.audio.finish()])
        return self._features(n_frames(self.duration_s, self.cfg.fps))

    def _features(self, upto: int) -> tuple[np.ndarray, np.ndarray]:
        cfg, sr = self.cfg, self.cfg.sample_rate
        if upto <= self.frames:
            return (np.zeros((0, cfg.n_mels), np.float32), np.zeros((0, cfg.n_emotion), np.float32))
        hop = int(round(0.01 * sr))
        start_t = self.frames / cfg.fps - cfg.emotion.context_s - LEFT_MARGIN_S
        seg_start = max(self._y_base, int(math.floor(start_t * sr / hop)) * hop)
        self._y, self._y_base = self._y[seg_start - self._y_base :], seg_start
        times = frame_times(upto, cfg.fps)[self.frames :] - seg_start / sr
        f = features_at(self._y, sr, times, cfg)
        self.frames = upto
        return f["mel"].values, f["emotion"].values
