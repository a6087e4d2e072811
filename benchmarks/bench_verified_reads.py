#!/usr/bin/env python3
"""The cost of checking every item read for training: checksums (sha256 of each array) and
finiteness, against the same reads unchecked, in the same run; and the checked loader's rate
against the training step's own rate (target: >= 10x, so checking never starves training).

1. Item reads: MB/s of FeatureStore.read_item with verify (the default) vs verify=False.
2. Loader: target frames/s of WindowStream (checked reads: train.data.read_checked) vs
   the same stream over unchecked reads, at the default frames per window and stride 1, on a
   store of 16 one-minute items.
3. Training: target frames/s of the small preset's train step (bench_frame_blocks.train_rate)
   at the same frames per window; ratio = checked loader / training.

Each rate is the median of --repeats runs; the spread is printed.

    python benchmarks/bench_verified_reads.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_frame_blocks import train_rate  # noqa: E402
from bench_train import loader_store  # noqa: E402

import blendsync.train.core.data as data  # noqa: E402
import blendsync.train.loop.streaming as streaming  # noqa: E402
from blendsync.shared.store import FeatureStore  # noqa: E402
from blendsync.train.core.config import PRESET_BATCH_STREAMS, TrainConfig  # noqa: E402
from blendsync.train.core.normalization import compute_normalizer  # noqa: E402

L, LA = 256, 6


class UncheckedStore(FeatureStore):
    """The baseline: the same reads without the checksum comparison."""

    def read_item(self, key, *, verify=True):
        return super().read_item(key, verify=False)


def read_rate(store: FeatureStore, keys: list[str], verify: bool) -> float:
    t0, nbytes = time.perf_counter(), 0
    for k in keys:
        it = store.read_item(k, verify=verify)
        nbytes += it.mel.nbytes + it.emotion.nbytes + it.targets.nbytes
    return nbytes / 1e6 / (time.perf_counter() - t0)


def loader_rate(store: FeatureStore, files, norm, K: int, streams: int) -> float:
    ws = streaming.WindowStream(store, files, norm, window=L, lookahead=LA, stride=1, streams=streams, block=K, seed=0)
    t0, n = time.perf_counter(), 0
    for b in ws.epoch(0):
        n += int(b["valid"].sum())
    return n / (time.perf_counter() - t0)


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):10.1f} ({min(xs):.1f}-{max(xs):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=4)
    args = ap.parse_args()
    K = TrainConfig().stream.frames_per_window
    B = PRESET_BATCH_STREAMS["small"]
    print(
        f"CPU, {torch.get_num_threads()} torch threads; 16 items x 1800 frames (80 mel, 88 emotion, 52 targets); "
        f"K = {K}, B = {B}, L = {L}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        fs, files = loader_store(Path(tmp) / "s.zarr")
        norm = compute_normalizer(fs, files)
        keys = [f.key for f in files]
        unchecked = UncheckedStore(fs.root)
        read_on = [read_rate(fs, keys, True) for _ in range(args.repeats)]
        read_off = [read_rate(fs, keys, False) for _ in range(args.repeats)]
        print(
            f"item reads MB/s:      checked {fmt(read_on)}   unchecked {fmt(read_off)}   "
            f"-> checked at {statistics.median(read_on) / statistics.median(read_off):.2f}x the unchecked rate"
        )
        load_on = [loader_rate(fs, files, norm, K, B) for _ in range(args.repeats)]
        finite = data.check_finite
        data.check_finite = lambda item: item
        try:
            load_off = [loader_rate(unchecked, files, norm, K, B) for _ in range(args.repeats)]
        finally:
            data.check_finite = finite
        print(
            f"loader target frames/s: checked {fmt(load_on)}   unchecked {fmt(load_off)}   "
            f"-> {statistics.median(load_on) / statistics.median(load_off):.2f}x"
        )
    train = train_rate("small", K, torch.device("cpu"), args.train_steps, args.repeats)["wall"]
    print(f"small-preset training target frames/s: {fmt(train)}")
    print(f"checked loader / training: {statistics.median(load_on) / statistics.median(train):.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
