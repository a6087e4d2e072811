"""bstrain predict as a library call: audio -> curves, with the checkpoint's feature config
and the same per-file featurize function as bsfeat (no second implementation).

One window predicts a block of K frames (the checkpoint's frames_per_window); the blocks of a
file start at frames 0, K, 2K, … and the model's unsmoothed output of a block does not
depend on the previous block, so all blocks are computed in large batches. The temporal
smoothing (a recursive filter through every frame in time order, reset at the file's start:
the same recursion the model runs through each block with the state carried) comes after.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from blendsync.shared.audio import DecodedAudio, decode_audio
from blendsync.shared.config import FeatureConfig
from blendsync.shared.features.pieces import ONE_PASS, Workers
from blendsync.shared.featurize_file import FeaturizedFile, featurize_file
from blendsync.train.core.checkpoint import Checkpoint
from blendsync.train.core.normalization import Normalizer
from blendsync.train.core.output_gain import apply_gain
from blendsync.train.core.windows import cut, frame_mask, pad_frames
from blendsync.train.inference.outputs import resample_curves

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Predictor:
    """A loaded checkpoint ready to animate audio."""

    model: torch.nn.Module
    norm: Normalizer
    feature_config: FeatureConfig
    channels: list[str]
    window: int
    lookahead: int
    device: torch.device
    frames_per_window: int = 1
    # The output gain fitted on validation data when the checkpoint was kept (None: none ran).
    calibrated_gain: float | None = None

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "cpu", frames_per_window: int | None = None) -> Predictor:
        """frames_per_window: blocks of fewer frames than the model was trained with (lower
        streaming latency, more compute per frame); None: the checkpoint's."""
        return cls.from_checkpoint(Checkpoint.load(checkpoint), device, frames_per_window)

    @classmethod
    def from_checkpoint(cls, ck: Checkpoint, device: str = "cpu", frames_per_window: int | None = None) -> Predictor:
        """As load, from a checkpoint already read (a server that also reports its hashes)."""
        dev = torch.device(device)
        model = ck.build_model(dev)
        if frames_per_window is not None:
            model.use_frames_per_window(frames_per_window)
        return cls(
            model=model,
            norm=ck.normalizer,
            feature_config=ck.feature_config,
            channels=ck.channels,
            window=ck.window,
            lookahead=ck.lookahead,
            device=dev,
            frames_per_window=model.frames_per_window,
            calibrated_gain=ck.calibrated_gain,
        )

    @property
    def fps(self) -> float:
        return self.feature_config.fps

    @property
    def reach(self) -> int:
        """Frames a block's window reaches before the block's first frame."""
        return self.window - self.frames_per_window - self.lookahead

    @property
    def encodes_real_frames(self) -> bool:
        """The offline model encodes a padded window on its real frames (BlendshapeModel's
        real=); the live model's causal streams take the whole window."""
        return bool(getattr(self.model, "encodes_real_frames", False))

    @property
    def batch_windows(self) -> int:
        """Windows per forward pass. On a CPU one: the per-bin mel stream holds 80 sequences
        per window (2.6 MB per activation for the small preset), and one window's activations
        stay in cache where larger batches stream through memory (40% less CPU time for the
        small preset on the 2-core reference VM, the outputs bit-identical). On a GPU 64 for
        the small preset, fewer for wider models."""
        if self.device.type == "cpu":
            return 1
        return max(4, 64 * 32 // int(self.model.blendshape_queries.shape[1]))

    @torch.no_grad()
    def current(self, mel: np.ndarray, emotion: np.ndarray, workers: Workers = ONE_PASS) -> np.ndarray:
        """Unsmoothed outputs (T, C) for raw features mel (T, M), emotion (T, E) of a whole file.
        workers: the blocks as up to workers.parts groups at once (blocks are independent)."""
        T = mel.shape[0]
        n = -(-T // self.frames_per_window)
        parts = max(1, min(workers.parts, n))
        edges = [round(i * n / parts) for i in range(parts + 1)]
        groups = [range(edges[i], edges[i + 1]) for i in range(parts)]
        got = workers.mapper(lambda g: self.current_blocks(mel, emotion, g, final_frames=T), groups)
        return np.concatenate(list(got))

    @torch.no_grad()
    def current_blocks(
        self, mel: np.ndarray, emotion: np.ndarray, blocks: range, *, final_frames: int | None, first: int = 0
    ) -> np.ndarray:
        """Unsmoothed outputs (frames, C) for the frames of `blocks` (block b: frames bK …
        bK + K - 1, cut at final_frames) from the features at hand: mel (N, M), emotion (N, E)
        of frames first … first + N - 1 (first > 0 only when every window starts at or after
        it). final_frames: the file's frame count once known (frames past it are padding);
        None while more audio may come, when every window must lie within the frames at hand."""
        n = self.norm
        L, la, K = self.window, self.lookahead, self.frames_per_window
        N = mel.shape[0]
        starts = [b * K for b in blocks]
        if not starts:
            return np.zeros((0, len(self.channels)), np.float32)
        if final_frames is None and starts[-1] + K + la > first + N:
            raise ValueError(
                f"block at frame {starts[-1]} needs features up to {starts[-1] + K - 1 + la}, have {first + N}"
            )
        if final_frames is not None and starts[-1] >= final_frames:
            raise ValueError(f"block at frame {starts[-1]} starts past the file's {final_frames} frames")
        if first and starts[0] - self.reach < first:
            raise ValueError(f"block at frame {starts[0]} needs features from {starts[0] - self.reach}, have {first}")
        pm = pad_frames(((mel - n.mel_mean) / n.mel_std).astype(np.float32), L, la, block=K)
        pe = pad_frames(((emotion - n.emotion_mean) / n.emotion_std).astype(np.float32), L, la, block=K)
        pk = frame_mask(N, L, la, block=K)
        out = np.empty((len(starts), K, len(self.channels)), np.float32)
        ks = [k - first for k in starts]
        step = self.batch_windows
        for s in range(0, len(ks), step):
            part = ks[s : s + step]
            m = torch.from_numpy(np.stack([cut(pm, k, L) for k in part])).to(self.device)
            e = torch.from_numpy(np.stack([cut(pe, k, L) for k in part])).to(self.device)
            mask = np.stack([cut(pk, k, L) for k in part])
            k_ = None if mask.all() else torch.from_numpy(mask).to(self.device)
            # One padded window (a file's first and last on a CPU): its real frames only.
            real = _real_span(mask[0]) if k_ is not None and len(part) == 1 and self.encodes_real_frames else None
            kw = {} if real is None else {"real": real}
            out[s : s + len(part)] = self.model(m, e, k_, **kw)["current"].float().cpu().numpy()
        stop = starts[-1] + K if final_frames is None else min(starts[-1] + K, final_frames)
        return out.reshape(-1, len(self.channels))[: stop - starts[0]]

    def smooth(self, current: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
        """The model's recursive filter over a file's frames in time order,
        s_k = alpha * c_k + (1 - alpha) * s_{k-1}; prev = the smoothed output just before
        current[0] (None at a file start, where s_0 = c_0)."""
        if current.shape[0] == 0:
            return current.copy()
        a = float(torch.sigmoid(self.model.smoothing_alpha.detach()).cpu())
        p = current[0] if prev is None else prev
        return first_order_filter(current, a, p)

    def featurize(self, audio: str | Path | DecodedAudio, workers: Workers = ONE_PASS) -> dict:
        """One file decoded once (or already decoded at the feature rate) and featurized:
        {"features": FeaturizedFile, "audio": DecodedAudio (kept for the plot), "duration_s",
        "featurize_s"}. AudioError (a ValueError) naming the file when it is not usable audio."""
        t0 = time.perf_counter()
        dec = (
            audio
            if isinstance(audio, DecodedAudio)
            else decode_audio(audio, self.feature_config.sample_rate, self.feature_config.resampler)
        )
        ff = featurize_file(dec, None, self.feature_config, workers=workers)
        return {
            "features": ff,
            "audio": dec,
            "duration_s": ff.info["audio_duration_s"],
            "featurize_s": time.perf_counter() - t0,
        }

    def animate(self, audio: str | Path | DecodedAudio, workers: Workers = ONE_PASS) -> dict:
        """curves (T, C) at the model's fps for one file, with timings (featurize's result
        with "curves" and "model_s"). workers: the file's openSMILE pass and model blocks in
        pieces at once (the same curves)."""
        f = self.featurize(audio, workers)
        t1 = time.perf_counter()
        curves = self.curves(f["features"], workers)
        return {**f, "curves": curves, "model_s": time.perf_counter() - t1}

    def curves(self, ff: FeaturizedFile, workers: Workers = ONE_PASS) -> np.ndarray:
        """A featurized file's smoothed curves (T, C) at the model's fps."""
        return self.smooth(self.current(ff.mel, ff.emotion, workers))


def _real_span(mask: np.ndarray) -> tuple[int, int] | None:
    """(L,) bool -> (lo, hi) when the real frames are exactly lo … hi - 1, else None."""
    idx = np.flatnonzero(mask)
    if not len(idx) or idx[-1] - idx[0] + 1 != len(idx):
        return None
    return int(idx[0]), int(idx[-1]) + 1


def first_order_filter(x: np.ndarray, a: float, prev: np.ndarray) -> np.ndarray:
    """(T, C) -> (T, C) float32: s_k = a * x_k + (1 - a) * s_{k-1}, s_{-1} = prev, in float64.
    scipy.signal.lfilter([a], [1, -(1 - a)], x, zi=(1 - a) * prev) step for step, bit for bit
    (tested), without importing scipy.signal (1.7 s of a predict run's start)."""
    x = x.astype(np.float64)
    c = 1 - a
    out = np.empty_like(x)
    z = c * np.asarray(prev, np.float64)
    for k in range(x.shape[0]):
        out[k] = z + a * x[k]
        z = c * out[k]
    return out.astype(np.float32)


def animate_file(
    pred: Predictor,
    audio: str | Path | DecodedAudio,
    *,
    fps: float,
    gain: float = 1.0,
    chunk_seconds: float | None = None,
    workers: Workers = ONE_PASS,
) -> tuple[np.ndarray, dict]:
    """The curves predict writes for one audio file: (T', C) at fps in the model's channel
    order, movement scaled by gain, and Predictor.animate's result (durations, timings).
    AudioError (a ValueError) naming the file when it is not usable audio."""
    if chunk_seconds:
        from blendsync.train.inference.chunked import animate_chunked

        res = animate_chunked(pred, audio, chunk_seconds)
    else:
        res = pred.animate(audio, workers)
    return output_curves(pred, res["curves"], res["duration_s"], fps=fps, gain=gain), res


def output_curves(pred: Predictor, curves: np.ndarray, duration_s: float, *, fps: float, gain: float) -> np.ndarray:
    """The model's curves (T, C) at its fps -> what predict writes: movement scaled by gain,
    (T', C) at fps covering duration_s."""
    return resample_curves(apply_gain(curves, pred.norm.target_mean, gain), pred.fps, fps, duration_s)


@contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to n for the block (None: unchanged)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
