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
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from blendsync.shared.audio import decode_audio
from blendsync.shared.channels import check_order, reorder
from blendsync.shared.config import FeatureConfig
from blendsync.shared.features.pieces import ONE_PASS, Workers
from blendsync.shared.featurize_file import featurize_file
from blendsync.train.core.checkpoint import Checkpoint
from blendsync.train.core.normalization import Normalizer
from blendsync.train.core.output_gain import apply_gain, resolve_gain
from blendsync.train.core.windows import cut, frame_mask, pad_frames
from blendsync.train.inference.outputs import CURVE_FORMATS, plot_prediction, resample_curves

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".aiff", ".aif", ".ogg", ".mp3")


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
            out[s : s + len(part)] = self.model(m, e, k_)["current"].float().cpu().numpy()
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

    def featurize(self, audio: str | Path, workers: Workers = ONE_PASS) -> dict:
        """One file decoded once and featurized: {"features": FeaturizedFile, "audio":
        DecodedAudio (kept for the plot), "duration_s", "featurize_s"}. AudioError (a
        ValueError) naming the file when it is not usable audio."""
        t0 = time.perf_counter()
        dec = decode_audio(audio, self.feature_config.sample_rate)
        ff = featurize_file(dec, None, self.feature_config, workers=workers)
        return {
            "features": ff,
            "audio": dec,
            "duration_s": ff.info["audio_duration_s"],
            "featurize_s": time.perf_counter() - t0,
        }

    def animate(self, audio: str | Path, workers: Workers = ONE_PASS) -> dict:
        """curves (T, C) at the model's fps for one file, with timings (featurize's result
        with "curves" and "model_s"). workers: the file's openSMILE pass and model blocks in
        pieces at once (the same curves)."""
        f = self.featurize(audio, workers)
        t1 = time.perf_counter()
        ff = f["features"]
        curves = self.smooth(self.current(ff.mel, ff.emotion, workers))
        return {**f, "curves": curves, "model_s": time.perf_counter() - t1}


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


@dataclass(kw_only=True)
class PredictReport:
    # Audio files animated, and every file written for them (curves in each format, plots).
    animated: list[Path] = field(default_factory=list)
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


def collect_inputs(inputs: list[str | Path]) -> list[tuple[Path, Path]]:
    """(audio file, output name without suffix, relative to --out) for every input: files as
    given; directories searched for audio; .csv files read as manifests. A file reached twice
    is animated once.

    Names never collide: a file found in a directory keeps its path under that directory
    (dir/x/take.wav -> x/take); files whose names would still meet (x/take.wav and y/take.wav
    given one by one, take.wav and take.flac) keep their paths relative to the folder they
    share, and their audio suffix where that is all that differs."""
    from blendsync.shared.manifest import read_manifest

    found: list[tuple[Path, Path]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += [
                (p, p.relative_to(item).with_suffix(""))
                for p in sorted(item.rglob("*"))
                if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
            ]
        elif item.suffix.lower() == ".csv":
            m = read_manifest(item)
            for prob in m.problems:
                log.error("%s", prob)
            found += [(r.audio, Path(r.audio.stem)) for r in m.rows]
        else:
            found.append((item, Path(item.stem)))
    seen: set[Path] = set()
    unique = []
    for audio, name in found:
        real = audio.resolve()
        if real not in seen:
            seen.add(real)
            unique.append((audio, name))
    return _without_collisions(unique)


def _without_collisions(files: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """Rename the files whose output names meet (compared without case: the output folder
    may be on a case-insensitive file system)."""
    groups: dict[str, list[int]] = {}
    for i, (_, name) in enumerate(files):
        groups.setdefault(name.as_posix().lower(), []).append(i)
    out = list(files)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        paths = [files[i][0].resolve() for i in idx]
        common = Path(os.path.commonpath([p.parent for p in paths]))
        names = [p.relative_to(common).with_suffix("") for p in paths]
        counts: dict[str, int] = {}
        for n in names:
            counts[n.as_posix().lower()] = counts.get(n.as_posix().lower(), 0) + 1
        # Same folder, same stem: the audio suffix tells them apart.
        names = [n.with_name(p.name) if counts[n.as_posix().lower()] > 1 else n for n, p in zip(names, paths)]
        for i, n in zip(idx, names):
            out[i] = (files[i][0], n)
    taken = [n.as_posix().lower() for _, n in out]
    if len(set(taken)) < len(taken):  # a renamed file met another name: number them
        count: dict[str, int] = {}
        for i, (a, n) in enumerate(out):
            k = n.as_posix().lower()
            count[k] = count.get(k, 0) + 1
            if count[k] > 1:
                out[i] = (a, n.with_name(f"{n.name}-{count[k]}"))
    return out


def _with_suffix(base: Path, ext: str) -> Path:
    """base + ext: a name may hold dots of its own (take.v2), so never Path.with_suffix."""
    return base.parent / (base.name + ext)


def animate_file(
    pred: Predictor,
    audio: str | Path,
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
    curves = apply_gain(res["curves"], pred.norm.target_mean, gain)
    return resample_curves(curves, pred.fps, fps, res["duration_s"]), res


def predict(
    inputs: list[str | Path],
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    fps: float = 60.0,
    formats: tuple[str, ...] = ("livelink",),
    device: str = "cpu",
    plot: bool = True,
    chunk_seconds: float | None = None,
    frames_per_window: int | None = None,
    gain: float | str = 1.0,
    channel_order: str | None = None,
) -> PredictReport:
    """chunk_seconds: process each file as a stream of chunks (train.chunked); the curves
    match whole-file processing. frames_per_window: see Predictor.load. gain: movement
    around the training mean scaled by this (output_gain.apply_gain; 1 = as trained), or
    "calibrated": the gain with the lowest validation error, stored with the checkpoint.
    channel_order: a name of shared.channels.CHANNEL_ORDERS for the npy and json outputs
    (mapped by name; None: the model's own order). The Live Link Face CSV has its own."""
    pred = Predictor.load(checkpoint, device, frames_per_window)
    gain = resolve_gain(gain, pred.calibrated_gain, checkpoint)
    unknown = [f for f in formats if f not in CURVE_FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; choose from {list(CURVE_FORMATS)}")
    if "livelink" in formats and len(pred.channels) != 52:
        raise ValueError(
            f"this model predicts {len(pred.channels)} custom channels: Live Link Face CSV "
            "needs the 52 ARKit ones; use --format npy or json"
        )
    order_names = list(pred.channels if channel_order is None else check_order(pred.channels, channel_order))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(CORES) as pool, torch_threads(1 if CORES > 1 else None):
        # A long file's openSMILE pass and model blocks in pieces, one per core (the same
        # curves): torch keeps one thread per piece.
        return _predict_files(
            pred, collect_inputs(inputs), out, Workers(CORES, pool.map), fps=fps, formats=formats, plot=plot,
            chunk_seconds=chunk_seconds, gain=gain, channel_order=channel_order, order_names=order_names,
        )  # fmt: skip


CORES = os.cpu_count() or 1


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


def _predict_files(
    pred: Predictor,
    files: list[tuple[Path, Path]],
    out: Path,
    workers: Workers,
    *,
    fps: float,
    formats: tuple[str, ...],
    plot: bool,
    chunk_seconds: float | None,
    gain: float,
    channel_order: str | None,
    order_names: list[str],
) -> PredictReport:
    rep = PredictReport()
    for audio, name in files:
        try:
            curves, res = animate_file(pred, audio, fps=fps, gain=gain, chunk_seconds=chunk_seconds, workers=workers)
            rep.latency_s = res.get("latency_s", rep.latency_s)
        except ValueError as e:  # AudioError: the file's fault; the others still go through
            rep.failed.append(str(e))
            log.debug("%s", e)  # listed once, by the report
            continue
        base = out / name
        base.parent.mkdir(parents=True, exist_ok=True)
        path = partial(_with_suffix, base)

        ordered = curves if channel_order is None else reorder(curves, pred.channels, channel_order)
        for key, fmt in CURVE_FORMATS.items():
            if key in formats:
                values, names = (ordered, order_names) if fmt.reorderable else (curves, list(pred.channels))
                fmt.write(path(fmt.suffix), values, fps, names, str(audio))
                rep.written.append(path(fmt.suffix))
        if plot:
            dec = res.get("audio") or decode_audio(audio, pred.feature_config.sample_rate)
            plot_prediction(path(".png"), dec.samples, dec.sample_rate, curves, fps, pred.channels, Path(audio).name)
            rep.written.append(path(".png"))
        rep.animated.append(Path(audio))
        rep.audio_s += res["duration_s"]
        rep.featurize_s += res["featurize_s"]
        rep.model_s += res["model_s"]
    return rep
