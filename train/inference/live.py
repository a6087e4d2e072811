"""A live model on audio as it arrives: every frame computed once its features (its lookahead
included) are in, at a fixed cost per frame (docs/design.md, The live model).

LiveAnimator pushes samples through shared.live_features.LiveFeatures and steps the live
model (core.live_model) frame by frame; its curves equal whole-file predict of the same
checkpoint (tested). Its latency, from a frame's instant in the audio to its curves, is the
model's lookahead plus the features' right context, plus compute.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from blendsync.shared.live_features import LiveFeatures


class LiveAnimator:
    """push(samples (N,) or (N, channels) at source_rate) -> smoothed curves (n, C) of the next
    n model frames (n may be 0); finish() -> those of the rest. pred: a predict.Predictor of a
    live checkpoint. featurize_s and model_s: CPU seconds of this thread in each stage."""

    def __init__(self, pred, source_rate: int, source: str = "<stream>"):
        if not getattr(pred.model, "streaming", False):
            raise ValueError("LiveAnimator steps a live model (bstrain fit --preset live); this is an offline one")
        self.pred = pred
        self.features = LiveFeatures(pred.feature_config, source_rate, source)
        self.state = pred.model.start(1)
        n = pred.norm
        dev = pred.device
        as_t = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=dev)  # noqa: E731
        self._mel_mean, self._mel_std = as_t(n.mel_mean), as_t(n.mel_std)
        self._emo_mean, self._emo_std = as_t(n.emotion_mean), as_t(n.emotion_std)
        self.frames = 0  # model frames out
        self.featurize_s = self.model_s = 0.0

    @property
    def latency_s(self) -> float:
        """From a frame's instant to its curves, compute aside: lookahead + right context."""
        return self.pred.lookahead / self.pred.fps + self.features.right_context_s

    def push(self, data: np.ndarray) -> np.ndarray:
        t0 = time.thread_time()
        mel, emo = self.features.push(data)
        self.featurize_s += time.thread_time() - t0
        return self._step(mel, emo)

    def finish(self) -> np.ndarray:
        t0 = time.thread_time()
        mel, emo = self.features.finish()
        self.featurize_s += time.thread_time() - t0
        out = [self._step(mel, emo)]
        # The frames past the end that the last la frames look ahead to: padding, never attended to.
        la = self.pred.lookahead
        pad_mel, pad_emo = torch.zeros(la, self._mel_mean.shape[0]), torch.zeros(la, self._emo_mean.shape[0])
        out.append(self._run(pad_mel, pad_emo, real=False))
        return np.concatenate(out)  # the model has now given every frame the features had

    def close(self) -> None:
        self.features.close()

    def _step(self, mel: np.ndarray, emo: np.ndarray) -> np.ndarray:
        if not len(mel):
            return np.zeros((0, len(self.pred.channels)), np.float32)
        m = (torch.from_numpy(mel).to(self.pred.device) - self._mel_mean) / self._mel_std
        e = (torch.from_numpy(emo).to(self.pred.device) - self._emo_mean) / self._emo_std
        return self._run(m, e, real=True)

    def _run(self, mel: torch.Tensor, emo: torch.Tensor, real: bool) -> np.ndarray:
        t0 = time.thread_time()
        model, out = self.pred.model, []
        for t in range(mel.shape[0]):
            o = model.step(self.state, mel[t : t + 1], emo[t : t + 1], real=real)
            if o is not None:
                out.append(o["smoothed"][0])
        self.frames += len(out)
        self.model_s += time.thread_time() - t0
        if not out:
            return np.zeros((0, len(self.pred.channels)), np.float32)
        return torch.stack(out).cpu().numpy().astype(np.float32)
