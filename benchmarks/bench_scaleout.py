#!/usr/bin/env python3
"""Scale-out on this machine, each against its own baseline in the same run:

1. Featurize throughput with 1, 2 and 4 Dask workers (LocalCluster) on --minutes of audio,
   and the throughput projected per extra worker (the 1-worker rate; this machine has
   os.cpu_count() cores, so more workers than cores cannot add throughput here).
2. Training windows/s with 1 and 2 processes (torchrun, gloo, CPU), small preset.
3. Peak worker memory featurizing one 10-minute and one 60-minute file: it should grow with
   the file, not with the dataset.

    python benchmarks/bench_scaleout.py [--minutes 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from blendsync.featurize.extract import extract
from blendsync.shared.config import FeatureConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scaling import build_dataset  # noqa: E402


def featurize_scaling(tmp: Path, minutes: float) -> None:
    man = build_dataset(tmp, minutes)
    rates = {}
    for w in (1, 2, 4):
        r = extract(man, tmp / f"w{w}.zarr", FeatureConfig(), executor="dask", workers=w)
        assert r.ok
        rates[w] = r.audio_s / r.seconds
        print(
            f"featurize, {w} worker(s): {rates[w]:.1f} audio-s/s ({rates[w] / w:.1f} per worker, "
            f"{r.seconds:.1f} s for {r.audio_s / 60:.1f} min)"
        )
    print(
        f"  2 vs 1 worker: {rates[2] / rates[1]:.2f}x; 4 vs 1: {rates[4] / rates[1]:.2f}x on "
        f"{os.cpu_count()} cores (4 workers oversubscribe them)"
    )
    print(f"  projected: +{rates[1]:.0f} audio-s/s per extra worker on its own core")


def training_scaling(tmp: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from blendsync.train.core.config import TrainConfig
    from tests.helpers import make_random_store

    fs, _ = make_random_store(tmp / "train.zarr", [600] * 8, channels=52, seed=0, learnable=True)
    cfg = TrainConfig.from_dict(
        {"preset": "small", "stream": {"stride": 8}, "optim": {"epochs": 1}, "diagnostics": {"every_steps": 0}}
    )
    (tmp / "c.yaml").write_text(cfg.to_yaml())
    rates = {}
    for n in (1, 2):
        out = tmp / f"run{n}"
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "blendsync.train.cli",
                "-q",
                "fit",
                "--store",
                str(fs.root),
                "--config",
                str(tmp / "c.yaml"),
                "--out",
                str(out),
                "--nproc",
                str(n),
                "--no-progress",
                "--stop-after-steps",
                "40",
            ],
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - t0
        recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        rate = recs[-1]["windows_per_s"] * n  # rank 0's rate; every rank runs the same steps
        rates[n] = rate
        print(f"training, {n} process(es): {rate:.1f} windows/s in all ({wall:.0f} s wall for 40 steps)")
    print(
        f"  2 vs 1 process: {rates[2] / rates[1]:.2f}x on {os.cpu_count()} cores (one process uses "
        f"{os.cpu_count()} torch threads; torchrun gives each process 1)"
    )


def long_file_memory(tmp: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.helpers import speechlike

    for minutes in (10, 60):
        p = tmp / f"long{minutes}.wav"
        y = np.tile(speechlike(60.0, 16000, seed=1), minutes)
        sf.write(p, y, 16000, subtype="PCM_16")
        (tmp / f"long{minutes}.csv").write_text(f"audio\n{p}\n")
        code = (
            "import resource, time; from blendsync.featurize.extract import extract; "
            "from blendsync.shared.config import FeatureConfig; t=time.perf_counter(); "
            f"r = extract('{tmp / f'long{minutes}.csv'}', '{tmp / f'long{minutes}.zarr'}', FeatureConfig(), "
            "executor='serial'); assert r.ok, r.failed; "
            "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
        secs, rss_kb = out.split()[-2:]
        print(f"one {minutes}-minute file: {float(secs):.0f} s, peak memory {int(rss_kb) / 1024:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=16.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        featurize_scaling(tmp, args.minutes)
        training_scaling(tmp)
        long_file_memory(tmp)
    print(f"max RSS of this driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
