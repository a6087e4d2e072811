#!/usr/bin/env python3
"""Featurize throughput per worker, end to end (decode, features, targets, write), against a
baseline that calls openSMILE once per output frame's window. Same audio, same run.

Prints audio seconds per second per worker for both, the ratio (target >= 25x) and the
real-time factor of ours (target >= 20x). Single process, single thread (as one worker).

    python benchmarks/bench_featurize.py [--manifest data_manifest.csv] [--extra-audio PATH ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(k, "1")

import numpy as np  # noqa: E402

from blendsync.featurize.writer import write_item  # noqa: E402
from blendsync.shared.audio import decode_audio  # noqa: E402
from blendsync.shared.config import FeatureConfig  # noqa: E402
from blendsync.shared.features import _smile, mel_on_grid  # noqa: E402
from blendsync.shared.featurize_file import FeaturizedFile, featurize_file  # noqa: E402
from blendsync.shared.frame_grid import frame_times, n_frames  # noqa: E402
from blendsync.shared.manifest import read_manifest  # noqa: E402
from blendsync.shared.store import FeatureStore, ItemProvenance  # noqa: E402
from blendsync.shared.targets import read_targets, targets_on_grid  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def baseline_featurize_file(audio, targets, cfg: FeatureConfig) -> FeaturizedFile:
    """The naive pipeline: same decode, mel and targets; eGeMAPS by one openSMILE call per
    frame on the context ending at that frame."""
    dec = decode_audio(audio, cfg.sample_rate, cfg.resampler)
    y, sr = dec.samples, dec.sample_rate
    dur = dec.duration_s
    curves = None
    if targets is not None:
        curves = read_targets(targets, cfg.channels)
        dur = min(dur, curves.duration_s)
    T = n_frames(dur, cfg.fps)
    mel = mel_on_grid(y, sr, frame_times(T, cfg.fps), cfg.mel).values
    smile = _smile(cfg.emotion.feature_set, None, None)
    emo = np.empty((T, 88), np.float32)
    ctx = int(round(cfg.emotion.context_s * sr))
    for k, t in enumerate(frame_times(T, cfg.fps)):
        end = max(int(round(t * sr)), ctx)
        emo[k] = smile.process_signal(y[max(0, end - ctx) : end], sr).to_numpy()[0]
    emo = np.nan_to_num(emo, nan=cfg.emotion.nonfinite_fill)
    tgt = targets_on_grid(curves, cfg.fps, T).values if curves is not None else None
    return FeaturizedFile(mel, emo, tgt, {"audio_duration_s": dec.duration_s, "frames": T})


def run(fn, rows, cfg, store) -> tuple[float, float]:
    provenance = ItemProvenance.of_config(cfg)  # as extract: once per run, not per file
    audio_s, t0 = 0.0, time.perf_counter()
    for i, r in enumerate(rows):
        ff = fn(r.audio, r.targets, cfg)
        write_item(store, f"{fn.__name__}-{i}", ff, provenance)
        audio_s += ff.info["audio_duration_s"]
    return audio_s, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=REPO / "data_manifest.csv")
    ap.add_argument("--takes", type=int, default=4, help="manifest rows to use")
    args = ap.parse_args()
    rows = list(read_manifest(args.manifest).rows)[: args.takes]
    cfg = FeatureConfig()
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(Path(tmp) / "bench.zarr")
        store.init()
        # Warm-up: imports, librosa filterbank, openSMILE config parsing.
        featurize_file(rows[0].audio, rows[0].targets, cfg)
        ours_s, ours_t = run(featurize_file, rows, cfg, store)
        base_s, base_t = run(baseline_featurize_file, rows, cfg, store)
    ours, base = ours_s / ours_t, base_s / base_t
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {sys.version.split()[0]}"
    )
    print(f"audio: {len(rows)} takes, {ours_s:.1f} s")
    print(
        f"ours (one openSMILE pass per file):   {ours:8.1f} audio-s/s per worker "
        f"({ours_t:.2f} s wall)  -> {ours:.1f}x real time"
    )
    print(f"baseline (openSMILE call per frame):  {base:8.1f} audio-s/s per worker ({base_t:.2f} s wall)")
    print(f"ratio ours/baseline: {ours / base:.1f}x (target >= 25x); real time: {ours:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
