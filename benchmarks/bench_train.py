#!/usr/bin/env python3
"""bstrain throughput on this machine, each against a baseline in the same run.

1. Loader: windows/s at stride 1 from WindowStream (files read whole, windows cut as views,
   background reads) vs reading each window from Zarr with its own indexing call, on a store
   of 16 one-minute items (random values: the loader does not look at them).
   Targets: >= 30x the baseline and >= 10x the model's own windows/s.
2. Train step (forward + backward + AdamW) windows/s for the small and full presets at one
   frame per window, and the achieved FLOP/s as a fraction of a large matmul's FLOP/s on the
   same device (frames per window K > 1: benchmarks/bench_frame_blocks.py).

    python benchmarks/bench_train.py [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from blendsync.shared.config import FeatureConfig
from blendsync.shared.store import FeatureStore, ItemProvenance
from blendsync.train.core.config import PRESET_BATCH_STREAMS, PRESETS, LossConfig
from blendsync.train.core.model import BlendshapeModel
from blendsync.train.core.normalization import compute_normalizer
from blendsync.train.core.windows import window_span
from blendsync.train.loop.losses import loss_terms, total_loss
from blendsync.train.loop.streaming import WindowStream

L, LA = 256, 6


def loader_store(root: Path, n_files: int = 16, frames: int = 1800) -> tuple[FeatureStore, list]:
    from blendsync.featurize.writer import write_item
    from blendsync.shared.featurize_file import FeaturizedFile
    from blendsync.train.core.data import FileRef

    rng = np.random.default_rng(0)
    fs = FeatureStore(root)
    fs.init()
    files = []
    for i in range(n_files):
        ff = FeaturizedFile(
            rng.normal(size=(frames, 80)).astype(np.float32),
            rng.normal(size=(frames, 88)).astype(np.float32),
            rng.uniform(size=(frames, 52)).astype(np.float32),
            {"frames": frames},
        )
        write_item(fs, f"item{i:02d}", ff, ItemProvenance.of_config(FeatureConfig()))
        files.append(FileRef(f"item{i:02d}", frames, f"item{i:02d}"))
    return fs, files


def bench_loader(store: FeatureStore, files, norm, streams: int = 8) -> tuple[float, float]:
    ws = WindowStream(store, files, norm, window=L, lookahead=LA, stride=1, streams=streams, seed=0)
    t0, n = time.perf_counter(), 0
    for b in ws.epoch(0):
        n += int(b["valid"].sum())
    ours = n / (time.perf_counter() - t0)
    # Baseline: one Zarr indexing call per window and stream (mel, emotion, targets).
    t0, m = time.perf_counter(), 0
    budget = 8.0
    for f in files:
        g = zarr.open_group(str(store.item_path(f.key)), mode="r")
        mel, emo, tgt = g["mel"], g["emotion"], g["targets"]
        for k in range(f.frames):
            a, e = window_span(k, L, LA)
            a, e = max(a, 0), min(e, f.frames)
            _ = mel[a:e], emo[a:e], tgt[k]
            m += 1
            if time.perf_counter() - t0 > budget:
                break
        if time.perf_counter() - t0 > budget:
            break
    base = m / (time.perf_counter() - t0)
    return ours, base


def model_flops(model_fn, *args) -> float:
    """FLOPs of one forward+backward from torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        out = model_fn(*args)
        out["smoothed"].sum().backward()
    return float(fc.get_total_flops())


def matmul_flops_per_s(device, n: int = 2048, reps: int = 5) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def bench_step(preset: str, C: int, device, steps: int) -> tuple[float, float]:
    cfg = PRESETS[preset]
    B = PRESET_BATCH_STREAMS[preset]
    torch.manual_seed(0)
    model = BlendshapeModel(n_mels=80, n_emotion=88, channels=C, window=L, cfg=cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    mel = torch.randn(B, L, 80, device=device)
    emo = torch.randn(B, L, 88, device=device)
    mask = torch.ones(B, L, dtype=torch.bool, device=device)
    prev = torch.rand(B, C, device=device)
    has = torch.ones(B, dtype=torch.bool, device=device)
    tgt = torch.rand(B, 1, C, device=device)
    valid = torch.ones(B, 1, dtype=torch.bool, device=device)
    grp = torch.zeros(C, dtype=torch.bool, device=device)
    flops = model_flops(model, mel, emo, mask, prev, has)
    amp = device.type == "cuda"

    def step():
        opt.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(mel, emo, mask, prev, has)
        t = loss_terms(out["smoothed"].float(), tgt, prev, prev, valid, has, grp, grp)
        total_loss(t, LossConfig()).backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    return B / dt, flops / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--full-steps", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store, files = loader_store(Path(tmp) / "loader.zarr")
        norm = compute_normalizer(store, files)
        ours, base = bench_loader(store, files, norm)
    print(
        f"device: {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"loader: {ours:,.0f} windows/s (whole-file reads, views) vs {base:,.0f} windows/s "
        f"(one Zarr indexing call per window) = {ours / base:.0f}x (target >= 30x)"
    )
    mm = matmul_flops_per_s(device)
    print(f"large matmul: {mm / 1e9:.1f} GFLOP/s")
    for preset, steps in (("small", 10), ("full", args.full_steps)):
        wps, fps_ = bench_step(preset, 52, device, steps)
        print(
            f"train step {preset:5s}: {wps:8.2f} windows/s, {fps_ / 1e9:7.2f} GFLOP/s = "
            f"{100 * fps_ / mm:.1f}% of the matmul; loader/model = {ours / wps:,.0f}x (target >= 10x)"
        )


if __name__ == "__main__":
    main()
