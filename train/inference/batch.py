"""bstrain predict over files: inputs collected, every core kept busy, the outputs written.

The files run side by side, one per core (a five-second line alone keeps about one core
busy: its openSMILE pass, then its model windows, then its files); a long file runs its
openSMILE pass and model blocks in pieces on every core instead (the same curves). The
work starts before torch is imported: the checkpoint's feature config is read ahead
without torch (train.core.checkpoint_header), the files are decoded and featurized while
the main thread imports torch and loads the model, and they wait for the model only for
their model windows. A feature config read ahead that the real load does not confirm has
its features computed again.

This module imports neither torch nor the model: the CLI starts here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from blendsync.shared.audio import decode_audio
from blendsync.shared.config import FeatureConfig
from blendsync.shared.features.pieces import MIN_PIECE_S, ONE_PASS, Workers
from blendsync.shared.features.smile import abort_running
from blendsync.shared.featurize_file import featurize_file
from blendsync.shared.interrupts import interruptible
from blendsync.train.core.checkpoint_header import peek_feature_config
from blendsync.train.inference.outputs import CURVE_FORMATS, finite_curves, plot_prediction

if TYPE_CHECKING:
    import numpy as np

    from blendsync.train.inference.predict import Predictor

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".aiff", ".aif", ".ogg", ".mp3")
CORES = os.cpu_count() or 1
# A file at least this long runs its openSMILE pass and model blocks in pieces on every core
# (two pieces of shared.features.pieces.MIN_PIECE_S); shorter files take one core each.
LONG_FILE_S = 2 * MIN_PIECE_S
# How often a stopped run asks its openSMILE passes again to end (Ctrl-C).
STOP_WAIT_S = 0.5


@dataclass(kw_only=True)
class PredictReport:
    # Audio files animated, and every file written for them (curves in each format, plots).
    animated: list[Path] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    audio_s: float = 0.0
    # Summed over files (files run side by side: more than the wall time).
    featurize_s: float = 0.0
    model_s: float = 0.0
    # From the first file's start (the model loads meanwhile) to the last file's outputs.
    wall_s: float = 0.0
    latency_s: float | None = None

    @property
    def real_time_factor(self) -> float:
        """Audio seconds per wall second, the model's load and the files' outputs included."""
        return self.audio_s / max(self.wall_s, 1e-9)


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


@dataclass(frozen=True, kw_only=True)
class _Setup:
    """What every file needs from the loaded checkpoint."""

    pred: Predictor
    gain: float
    order_names: list[str]


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
    (mapped by name; None: the model's own order). The Live Link Face CSV has its own.

    A checkpoint that cannot be used, or options it rejects, raise before anything is
    written (files featurized ahead are dropped)."""
    unknown = [f for f in formats if f not in CURVE_FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; choose from {list(CURVE_FORMATS)}")
    files = collect_inputs(inputs)
    # No read-ahead where the work would be chunked streams or the checkpoint is unreadable.
    hint = None if chunk_seconds or not files else peek_feature_config(checkpoint)
    ready: Future = Future()
    stop = threading.Event()
    futures: list[Future] = []
    out = Path(out_dir)
    options = dict(fps=fps, formats=formats, plot=plot, chunk_seconds=chunk_seconds, channel_order=channel_order)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(CORES, "predict-file") as file_pool, ThreadPoolExecutor(CORES, "predict-piece") as pieces:
        job = partial(_animate_and_write, ready=ready, hint=hint, out=out, pieces=Workers(CORES, pieces.map), stop=stop)

        def halt() -> None:
            stop.set()
            for f in futures:
                f.cancel()
            abort_running()

        futures += [file_pool.submit(job, audio, name, **options) for audio, name in files]
        made = not out.exists()  # removed again when no file is written into it
        try:
            setup = _load(checkpoint, device, frames_per_window, gain, formats, channel_order)
            out.mkdir(parents=True, exist_ok=True)
        except BaseException as e:  # the checkpoint's error (or Ctrl-C) ends the files too
            ready.set_exception(e)
            _stop_and_wait(futures, halt)
            raise
        from blendsync.train.inference.predict import torch_threads

        # One torch thread per file or piece: the cores are shared out by the files.
        with torch_threads(1 if CORES > 1 else None):
            ready.set_result(setup)
            results = interruptible(lambda: [f.result() for f in futures], stop=halt)
    rep = PredictReport(wall_s=time.perf_counter() - t0)
    for r in results:
        if r is None:  # stopped before its outputs (only where the run raised: never here)
            continue
        if isinstance(r, str):
            rep.failed.append(r)
            continue
        rep.animated.append(r["audio"])
        rep.written += r["written"]
        rep.audio_s += r["duration_s"]
        rep.featurize_s += r["featurize_s"]
        rep.model_s += r["model_s"]
        rep.latency_s = r.get("latency_s", rep.latency_s)
    if made and not rep.written:
        _remove_empty_folders(out)
    return rep


def _remove_empty_folders(top: Path) -> None:
    """top and the folders under it, where they hold nothing."""
    for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if top.is_dir() and not any(top.iterdir()):
        top.rmdir()


def _load(checkpoint, device, frames_per_window, gain, formats, channel_order) -> _Setup:
    """The model (torch imported here) and the options checked against it."""
    from blendsync.shared.channels import check_order
    from blendsync.train.core.output_gain import resolve_gain
    from blendsync.train.inference.predict import Predictor

    pred = Predictor.load(checkpoint, device, frames_per_window)
    gain = resolve_gain(gain, pred.calibrated_gain, checkpoint)
    if "livelink" in formats and len(pred.channels) != 52:
        raise ValueError(
            f"this model predicts {len(pred.channels)} custom channels: Live Link Face CSV "
            "needs the 52 ARKit ones; use --format npy or json"
        )
    order_names = list(pred.channels if channel_order is None else check_order(pred.channels, channel_order))
    return _Setup(pred=pred, gain=gain, order_names=order_names)


def _stop_and_wait(futures: list[Future], halt) -> None:
    """Every file stopped and ended (openSMILE passes asked again until they return)."""
    while True:
        halt()
        if not wait(futures, timeout=STOP_WAIT_S).not_done:
            return


def _animate_and_write(
    audio: Path,
    name: Path,
    *,
    ready: Future,
    hint: FeatureConfig | None,
    out: Path,
    pieces: Workers,
    stop: threading.Event,
    fps: float,
    formats: tuple[str, ...],
    plot: bool,
    chunk_seconds: float | None,
    channel_order: str | None,
) -> dict | str | None:
    """One file animated and its files written: {"audio", "written", "duration_s",
    "featurize_s", "model_s"[, "latency_s"]}, or the AudioError's text naming the file (the
    others still go through); None when the run stopped first. Features are computed with
    the feature config read ahead (hint) while the model loads; nothing is written before
    the model is ready, nor once stop is set."""
    try:
        if chunk_seconds:
            from blendsync.train.inference.predict import animate_file

            setup: _Setup = ready.result()
            curves, res = animate_file(setup.pred, audio, fps=fps, gain=setup.gain, chunk_seconds=chunk_seconds)
        else:
            setup, curves, res = _features_then_model(audio, ready, hint, pieces, fps, stop)
    except _Stopped:
        return None
    except ValueError as e:  # AudioError: the file's fault; the others still go through
        log.debug("%s", e)  # listed once, by the report
        return None if stop.is_set() or ready.exception() else str(e)
    if stop.is_set():
        return None
    pred = setup.pred
    base = out / name
    base.parent.mkdir(parents=True, exist_ok=True)
    path = partial(_with_suffix, base)
    written = []
    if channel_order is None:
        ordered = curves
    else:
        from blendsync.shared.channels import reorder

        ordered = reorder(curves, pred.channels, channel_order)
    try:
        finite_curves(curves)
    except ValueError as e:  # a model that gives NaN: this file's error, nothing written for it
        return f"{audio}: {e}"
    for key, fmt in CURVE_FORMATS.items():
        if key in formats:
            values, names = (ordered, setup.order_names) if fmt.reorderable else (curves, list(pred.channels))
            fmt.write(path(fmt.suffix), values, fps, names, str(audio))
            written.append(path(fmt.suffix))
    if plot:
        dec = res.get("audio") or decode_audio(audio, pred.feature_config.sample_rate, pred.feature_config.resampler)
        plot_prediction(path(".png"), dec.samples, dec.sample_rate, curves, fps, pred.channels, Path(audio).name)
        written.append(path(".png"))
    done = {k: res[k] for k in ("duration_s", "featurize_s", "model_s")} | {"audio": Path(audio), "written": written}
    if "latency_s" in res:
        done["latency_s"] = res["latency_s"]
    return done


class _Stopped(Exception):
    """The run was stopped (Ctrl-C) between a file's stages."""


def _features_then_model(
    audio: Path, ready: Future, hint: FeatureConfig | None, pieces: Workers, fps: float, stop: threading.Event
) -> tuple[_Setup, np.ndarray, dict]:
    """A whole file: decoded and featurized (with the config read ahead, where there is one),
    then through the model once it is loaded; _Stopped between stages once stop is set (an
    aborted openSMILE pass returns early, and its rows must not go on to the model)."""
    t0 = time.perf_counter()
    cfg = hint if hint is not None else ready.result().pred.feature_config
    dec = decode_audio(audio, cfg.sample_rate, cfg.resampler)
    workers = pieces if dec.duration_s >= LONG_FILE_S else ONE_PASS
    ff = featurize_file(dec, None, cfg, workers=workers)
    setup: _Setup = ready.result()
    if stop.is_set():
        raise _Stopped
    pred = setup.pred
    if pred.feature_config != cfg:  # the read-ahead was not the checkpoint's: again, with its own
        log.warning("%s: features computed again with the checkpoint's feature config", audio)
        dec = decode_audio(audio, pred.feature_config.sample_rate, pred.feature_config.resampler)
        ff = featurize_file(dec, None, pred.feature_config, workers=workers)
    featurize_s = time.perf_counter() - t0
    if stop.is_set():
        raise _Stopped
    t1 = time.perf_counter()
    from blendsync.train.inference.predict import output_curves

    out = output_curves(pred, pred.curves(ff, workers), ff.info["audio_duration_s"], fps=fps, gain=setup.gain)
    res = {
        "audio": dec,
        "duration_s": ff.info["audio_duration_s"],
        "featurize_s": featurize_s,
        "model_s": time.perf_counter() - t1,
    }
    return setup, out, res
