"""bstrain predict as a library call: audio -> curves, with the checkpoint's feature config
and the same per-file featurize function as bsfeat (no second implementation).

The model's per-window output does not depend on the previous one, so every window of a file
is computed in large batches; the temporal smoothing (a recursive filter carried across the
file, reset at its start) then runs in time order.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from blendsync.shared.audio import decode_audio
from blendsync.shared.config import FeatureConfig
from blendsync.shared.featurize_file import featurize_file
from blendsync.train.checkpoint import load_checkpoint
from blendsync.train.evaluate import load_model
from blendsync.train.outputs import plot_prediction, resample_curves, write_json, write_livelink_csv
from blendsync.train.streaming import Normalizer
from blendsync.train.windows import cut, frame_mask, pad_frames

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".aiff", ".aif", ".ogg", ".mp3")
FORMATS = ("livelink", "npy", "json")


@dataclass
class Predictor:
    """A loaded checkpoint ready to animate audio."""

    model: torch.nn.Module
    norm: Normalizer
    feature_config: FeatureConfig
    channels: list[str]
    window: int
    lookahead: int
    device: torch.device

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "cpu") -> "Predictor":
        ckpt = load_checkpoint(checkpoint)
        dev = torch.device(device)
        model, cfg, norm = load_model(ckpt, dev)
        fcfg = FeatureConfig.from_dict(json.loads(ckpt["feature_config_json"]))
        return cls(model, norm, fcfg, list(ckpt["channels"]), cfg.stream.window, cfg.stream.lookahead, dev)

    @property
    def fps(self) -> float:
        return self.feature_config.fps

    @torch.no_grad()
    def current(self, mel: np.ndarray, emotion: np.ndarray, batch: int = 64) -> np.ndarray:
        """Unsmoothed outputs (T, C) for raw features mel (T, M), emotion (T, E) of a whole file."""
        return self.current_frames(mel, emotion, range(mel.shape[0]), final_frames=mel.shape[0], batch=batch)

    @torch.no_grad()
    def current_frames(self, mel: np.ndarray, emotion: np.ndarray, frames: range, *,
                       final_frames: int | None, first: int = 0, batch: int = 64) -> np.ndarray:
        """Unsmoothed outputs for target frames `frames` from the features at hand: mel (K, M),
        emotion (K, E) of frames first..first+K-1 (first > 0 only when every window starts at
        or after it). final_frames: the file's frame count once known (frames past it are
        padding); None while more audio may come, when every window must lie within the K
        frames at hand."""
        n = self.norm
        L, la = self.window, self.lookahead
        K = mel.shape[0]
        if final_frames is None and frames.stop + la > first + K:
            raise ValueError(f"frame {frames.stop - 1} needs features up to {frames.stop - 1 + la}, "
                             f"have {first + K}")
        if first and frames.start - (L - 1 - la) < first:
            raise ValueError(f"frame {frames.start} needs features from {frames.start - (L - 1 - la)}, have {first}")
        pm = pad_frames(((mel - n.mel_mean) / n.mel_std).astype(np.float32), L, la)
        pe = pad_frames(((emotion - n.emotion_mean) / n.emotion_std).astype(np.float32), L, la)
        pk = frame_mask(K, L, la)
        out = np.empty((len(frames), len(self.channels)), np.float32)
        ks = [k - first for k in frames]
        for s in range(0, len(ks), batch):
            part = ks[s : s + batch]
            m = torch.from_numpy(np.stack([cut(pm, k, L) for k in part])).to(self.device)
            e = torch.from_numpy(np.stack([cut(pe, k, L) for k in part])).to(self.device)
            k_ = torch.from_numpy(np.stack([cut(pk, k, L) for k in part])).to(self.device)
            out[s : s + len(part)] = self.model(m, e, k_)["current"].float().cpu().numpy()
        return out

    def smooth(self, current: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
        """The model's recursive filter over a file in time order; prev = the smoothed output
        just before current[0] (None at a file start)."""
        a = float(torch.sigmoid(self.model.smoothing_alpha.detach()).cpu())
        out = np.empty_like(current)
        last = prev
        for k in range(current.shape[0]):
            last = current[k] if last is None else a * current[k] + (1 - a) * last
            out[k] = last
        return out

    def animate(self, audio: str | Path) -> dict:
        """curves (T, C) at the model's fps for one file, with timings."""
        t0 = time.perf_counter()
        ff = featurize_file(audio, None, self.feature_config)
        t1 = time.perf_counter()
        curves = self.smooth(self.current(ff.mel, ff.emotion))
        t2 = time.perf_counter()
        return {"curves": curves, "duration_s": ff.info["audio_duration_s"],
                "featurize_s": t1 - t0, "model_s": t2 - t1}


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    audio_s: float = 0.0
    featurize_s: float = 0.0
    model_s: float = 0.0
    latency_s: float | None = None

    @property
    def real_time_factor(self) -> float:
        """Audio seconds per second of compute."""
        return self.audio_s / max(self.featurize_s + self.model_s, 1e-9)


def collect_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given; directories searched for audio; .csv files read as manifests."""
    from blendsync.featurize.manifest import read_manifest

    out: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            out += sorted(p for p in item.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        elif item.suffix.lower() == ".csv":
            m = read_manifest(item)
            for prob in m.problems:
                log.error("%s", prob)
            out += [r.audio for r in m.rows]
        else:
            out.append(item)
    return out


def predict(inputs: list[str | Path], checkpoint: str | Path, out_dir: str | Path, *, fps: float = 60.0,
            formats: tuple[str, ...] = ("livelink",), device: str = "cpu", plot: bool = True,
            chunk_seconds: float | None = None) -> PredictReport:
    """chunk_seconds: process each file as a stream of chunks (train.chunked); the curves
    match whole-file processing."""
    pred = Predictor.load(checkpoint, device)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; choose from {FORMATS}")
    if "livelink" in formats and len(pred.channels) != 52:
        raise ValueError(f"this model predicts {len(pred.channels)} custom channels: Live Link Face CSV "
                         "needs the 52 ARKit ones; use --format npy or json")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = PredictReport()
    for audio in collect_inputs(inputs):
        try:
            if chunk_seconds:
                from blendsync.train.chunked import animate_chunked

                res = animate_chunked(pred, audio, chunk_seconds)
                rep.latency_s = res["latency_s"]
            else:
                res = pred.animate(audio)
        except ValueError as e:  # AudioError: the file's fault; the others still go through
            rep.failed.append(str(e))
            log.error("%s", e)
            continue
        curves = resample_curves(res["curves"], pred.fps, fps, res["duration_s"])
        stem = out / Path(audio).stem
        if "livelink" in formats:
            write_livelink_csv(stem.with_suffix(".csv"), curves, fps, pred.channels)
            rep.written.append(stem.with_suffix(".csv"))
        if "npy" in formats:
            np.save(stem.with_suffix(".npy"), curves.astype(np.float32))
            rep.written.append(stem.with_suffix(".npy"))
        if "json" in formats:
            write_json(stem.with_suffix(".json"), curves, fps, pred.channels, str(audio))
            rep.written.append(stem.with_suffix(".json"))
        if plot:
            dec = decode_audio(audio, pred.feature_config.sample_rate)
            plot_prediction(stem.with_suffix(".png"), dec.samples, dec.sample_rate, curves, fps,
                            pred.channels, Path(audio).name)
            rep.written.append(stem.with_suffix(".png"))
        rep.audio_s += res["duration_s"]
        rep.featurize_s += res["featurize_s"]
        rep.model_s += res["model_s"]
    return rep
