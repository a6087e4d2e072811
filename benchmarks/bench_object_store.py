#!/usr/bin/env python3
"""A store in an S3 bucket against the same store on local disk, in the same run.

The bucket is served by moto's S3 server on 127.0.0.1 (a Python process: slower than a real
S3 endpoint, so the overheads here are upper bounds for the request handling, with no
network latency). Measured on the example manifest (9 takes, 80 s of audio):

1. bsfeat extract, serial, into the bucket vs into a local directory;
2. a re-run that finds everything stored (stat cache and manifest index in the bucket);
3. the training loader (WindowStream, B = 8, stride 1) over every item, windows/s.

    python benchmarks/bench_object_store.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def start_s3() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto S3 server did not start")


def main() -> None:
    proc, endpoint = start_s3()
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "FSSPEC_S3_ENDPOINT_URL": endpoint,
        }
    )
    try:
        import fsspec
        import fsspec.config

        fsspec.config.conf["s3"] = {"endpoint_url": endpoint}
        fsspec.filesystem("s3").mkdir("bench")
        from blendsync.featurize.extract import extract
        from blendsync.shared.config import FeatureConfig
        from blendsync.shared.store import FeatureStore
        from blendsync.train.core.data import load_training_data
        from blendsync.train.core.normalization import compute_normalizer
        from blendsync.train.loop.streaming import WindowStream

        tmp = Path(tempfile.mkdtemp(prefix="bench_os_"))
        # Warm-up: library start-up costs land outside both timings.
        extract(REPO / "data_manifest.csv", tmp / "warmup.zarr", FeatureConfig(), executor="serial")
        where = {"local": str(tmp / "features.zarr"), "s3": "s3://bench/features.zarr"}
        rows = {}
        for name, loc in where.items():
            t0 = time.perf_counter()
            r = extract(REPO / "data_manifest.csv", loc, FeatureConfig(), executor="serial")
            first = time.perf_counter() - t0
            assert r.ok and r.computed == 9
            t0 = time.perf_counter()
            again = extract(REPO / "data_manifest.csv", loc, FeatureConfig(), executor="serial")
            rerun = time.perf_counter() - t0
            assert again.computed == 0
            store = FeatureStore(loc)
            ds = load_training_data(store, None)
            files = [f for split in ds.splits.values() for f in split]
            norm = compute_normalizer(store, files)
            ws = WindowStream(store, files, norm, window=256, lookahead=6, stride=1, streams=8, seed=0)
            t0, n = time.perf_counter(), 0
            for b in ws.epoch(0):
                n += int(b["valid"].sum())
            rows[name] = (first, rerun, n / (time.perf_counter() - t0), r.audio_s)
        for name, (first, rerun, wps, audio_s) in rows.items():
            print(
                f"{name:>6}: extract {first:5.2f} s ({audio_s / first:5.1f} audio-s/s), re-run {rerun:5.2f} s, "
                f"loader {wps:9,.0f} windows/s"
            )
        lo, s3 = rows["local"], rows["s3"]
        print(
            f"s3 / local time: extract {s3[0] / lo[0]:.2f}x, re-run {s3[1] / lo[1]:.2f}x; "
            f"loader s3 / local windows/s {s3[2] / lo[2]:.2f}x"
        )
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
