#!/usr/bin/env python3
"""bsfeat extract at scale: 1 vs 2 Dask workers (target >= 1.7x), a re-run on the unchanged
manifest (target < 2% of the first run), and store bytes per audio hour.

Builds a manifest of --minutes of audio (default 32) by tiling the example takes into 60 s
files with their curves (.npy at 60 fps), in a temporary directory.

    python benchmarks/bench_scaling.py [--minutes 32] [--max-workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from blendsync.featurize.extract import extract
from blendsync.shared.config import FeatureConfig
from blendsync.shared.manifest import read_manifest
from blendsync.shared.store import FeatureStore
from blendsync.shared.targets import read_targets

REPO = Path(__file__).resolve().parents[1]


def build_dataset(out: Path, minutes: float, file_s: float = 60.0) -> Path:
    takes = []
    for r in read_manifest(REPO / "data_manifest.csv").rows:
        y, sr = sf.read(r.audio, dtype="float32")
        c = read_targets(r.targets, FeatureConfig().channels)
        n = int(round(len(y) / sr * 60))
        idx = np.minimum(np.arange(n), len(c.values) - 1)
        takes.append((y, sr, c.values[idx]))
    rng = np.random.default_rng(0)
    lines = ["audio,targets,targets_fps,speaker"]
    for i in range(int(np.ceil(minutes * 60 / file_s))):
        ys, cs = [], []
        total = 0.0
        while total < file_s:
            y, sr, v = takes[rng.integers(len(takes))]
            ys.append(y)
            cs.append(v)
            total += len(y) / sr
        a = np.concatenate(ys)[: int(file_s * sr)]
        v = np.concatenate(cs)[: int(file_s * 60)]
        sf.write(out / f"long{i:03d}.wav", a, sr, subtype="PCM_16")
        np.save(out / f"long{i:03d}.npy", v.astype(np.float32))
        lines.append(f"long{i:03d}.wav,long{i:03d}.npy,60,s{i % 4}")
    (out / "long.csv").write_text("\n".join(lines) + "\n")
    return out / "long.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=32.0)
    ap.add_argument("--max-workers", type=int, default=2)
    args = ap.parse_args()
    cfg = FeatureConfig()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        man = build_dataset(tmp, args.minutes)
        results = {}
        for w in range(1, args.max_workers + 1):
            r = extract(man, tmp / f"w{w}.zarr", cfg, executor="dask", workers=w)
            assert r.ok, r.failed
            results[w] = r
            print(
                f"{w} worker(s): {r.audio_s / 60:.1f} min audio in {r.seconds:.1f} s "
                f"= {r.audio_s / r.seconds:.1f} audio-s/s ({r.audio_s / r.seconds / w:.1f} per worker)"
            )
        w = args.max_workers
        if w > 1:
            print(f"scaling 1 -> {w} workers: {results[1].seconds / results[w].seconds:.2f}x (target >= 1.7x)")
        t0 = time.perf_counter()
        again = extract(man, tmp / f"w{w}.zarr", cfg, executor="dask", workers=w)
        rerun = time.perf_counter() - t0
        assert again.computed == 0 and not again.started_cluster
        print(
            f"re-run, unchanged manifest: {rerun:.3f} s = {100 * rerun / results[w].seconds:.2f}% "
            f"of the first run (target < 2%)"
        )
        fs = FeatureStore(tmp / f"w{w}.zarr")
        b = fs.bytes_on_disk()
        print(
            f"store: {b / 1e6:.1f} MB for {results[w].audio_s / 3600:.3f} h "
            f"= {b / 1e6 / (results[w].audio_s / 3600):.1f} MB per audio hour "
            f"(mel 80 + emotion 88 + targets 52 float32 at 30 fps, Blosc-zstd)"
        )
        print(f"cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
