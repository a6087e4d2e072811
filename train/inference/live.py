"""A live model on audio as it arrives: every frame computed once its features (its lookahead
included) are in, at a fixed cost per frame (docs/design.md, The live model).

LiveAnimator pushes samples through shared.streams.live.LiveFeatures and steps the live
model (core.live_model) frame by frame; its curves equal whole-file predict of the same
checkpoint (tested). Its latency, from a frame's instant in the audio to its curves, is the
model's lookahead plus the features' right context, plus compute.
"""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import torch
from torch import nn

from blendsync.shared.streams.live import LiveFeatures


class LiveAnimator:
    """push(samples (N,) or (N, channels) at source_rate) -> smoothed curves (n, C) of the next
    n model frames (n may be 0); finish() -> those of the rest. pred: a predict.Predictor of a
    live checkpoint. The model's step runs as a traced graph (live_step_graph: the
    standardisation inside, the carried state as inputs and outputs), which costs 40% less per
    frame than stepping the module from Python. featurize_s and model_s: CPU seconds of this
    thread in each stage."""

    def __init__(self, pred, source_rate: int, source: str = "<stream>"):
        if not getattr(pred.model, "streaming", False):
            raise ValueError("LiveAnimator steps a live model (bstrain fit --preset live); this is an offline one")
        self.pred = pred
        self.features = LiveFeatures(pred.feature_config, source_rate, source)
        self._step_graph = step_graph_of(pred)
        cfg = pred.feature_config
        self._state = list(live_step_inputs(cfg.n_mels, cfg.n_emotion, pred.model)[4:])  # before its first frame
        self._real = {flag: torch.tensor([flag], device=pred.device) for flag in (True, False)}
        self.steps = 0  # frames stepped
        self.frames = 0  # model frames out
        self.featurize_s = self.model_s = 0.0

    def latency_s(self, chunk_seconds: float = 0.0) -> float:
        """From a frame's instant to its curves, compute aside: the chunk its audio arrives in,
        the lookahead and the features' right context."""
        return chunk_seconds + self.pred.lookahead / self.pred.fps + self.features.right_context_s

    def push(self, data: np.ndarray) -> np.ndarray:
        t0 = time.thread_time()
        mel, emo = self.features.push(data)
        self.featurize_s += time.thread_time() - t0
        return self._run(mel, emo, real=True)

    def finish(self) -> np.ndarray:
        t0 = time.thread_time()
        mel, emo = self.features.finish()
        self.featurize_s += time.thread_time() - t0
        out = [self._run(mel, emo, real=True)]
        # The frames past the end that the last la frames look ahead to: padding, never attended
        # to (the training mean: 0 once standardised).
        la, n = self.pred.lookahead, self.pred.norm
        out.append(self._run(np.repeat(n.mel_mean[None], la, 0), np.repeat(n.emotion_mean[None], la, 0), real=False))
        return np.concatenate(out)  # the model has now given every frame the features had

    def close(self) -> None:
        self.features.close()

    @torch.no_grad()
    def _run(self, mel: np.ndarray, emo: np.ndarray, real: bool) -> np.ndarray:
        """Step raw features (n, M), (n, E) through the graph; the curves of the frames out."""
        if not len(mel):
            return np.zeros((0, len(self.pred.channels)), np.float32)
        t0 = time.thread_time()
        la, out = self.pred.lookahead, []
        dev = self.pred.device
        mel_t = torch.from_numpy(np.ascontiguousarray(mel, np.float32)).to(dev)
        emo_t = torch.from_numpy(np.ascontiguousarray(emo, np.float32)).to(dev)
        for t in range(len(mel)):
            has_prev = self._real[self.steps > la]  # an output before this one
            current, smoothed, *self._state = self._step_graph(mel_t[t : t + 1], emo_t[t : t + 1], self._real[real],
                                                                  has_prev, *self._state)  # fmt: skip
            self.steps += 1
            if self.steps > la:
                out.append(smoothed[0])
        self.frames += len(out)
        self.model_s += time.thread_time() - t0
        if not out:
            return np.zeros((0, len(self.pred.channels)), np.float32)
        return torch.stack(out).cpu().numpy().astype(np.float32)


_GRAPHS_LOCK = threading.Lock()


def step_graph_of(pred) -> torch.jit.ScriptModule:
    """The traced, frozen one-frame step of pred's live model, built once per Predictor and
    shared by every stream of it (it holds no state: the state goes in and out), so that a
    server's sessions start without tracing. A few warm-up steps run here, so that the first
    frames of the first stream do not pay the graph executor's optimisation."""
    with _GRAPHS_LOCK:
        graph = getattr(pred, "_live_step_graph", None)
        if graph is None:
            cfg = pred.feature_config
            example = live_step_inputs(cfg.n_mels, cfg.n_emotion, pred.model)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on constants it keeps
                graph = torch.jit.freeze(torch.jit.trace(live_step_graph(pred.model, pred.norm), example,
                                                         check_trace=False))  # fmt: skip
                state = list(example[4:])
                for _ in range(3):
                    _, _, *state = graph(*example[:4], *state)
            object.__setattr__(pred, "_live_step_graph", graph)
        return graph


def live_step_graph(model: nn.Module, norm) -> nn.Module:
    """A live model's one-frame step as a graph: inputs mel (B, M) and emotion (B, E) raw (the
    statistics are applied inside), real (B,) bool, has_prev (B,) bool, then the carried state
    (core.live_model.state_names); outputs current and smoothed (B, C) of the frame lookahead
    frames back, then the next state in the same order."""

    class LiveStepGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model.eval()
            for name in ("mel_mean", "mel_std", "emotion_mean", "emotion_std"):
                self.register_buffer(name, torch.as_tensor(getattr(norm, name), dtype=torch.float32))

        def forward(self, mel, emotion, real, has_prev, *state):
            s = self.model.state_from(list(state), has_prev)
            mel = (mel - self.mel_mean) / self.mel_std
            emotion = (emotion - self.emotion_mean) / self.emotion_std
            current, smoothed = self.model.advance(s, mel, emotion, real)
            return (current, smoothed, *s.tensors())

    return LiveStepGraph().eval()


def live_step_inputs(n_mels: int, n_emotion: int, model: nn.Module, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Example inputs of live_step_graph: a frame of raw features, real and has_prev, and the
    state of streams before their first frame (what a runtime starts from)."""
    g = torch.Generator().manual_seed(0)
    state = model.start(batch)
    dev = state.prev.device
    return (
        torch.randn(batch, n_mels, generator=g).to(dev),
        torch.randn(batch, n_emotion, generator=g).to(dev),
        torch.ones(batch, dtype=torch.bool, device=dev),
        torch.zeros(batch, dtype=torch.bool, device=dev),
        *state.tensors(),
    )
