#!/usr/bin/env python3
"""Frame blocks: training target frames/s for K frames per window against K = 1 (one output
per window, the method notes' model) in the same run, small and full presets.

Each step is the trainer's own step (train.step: host batch -> device, forward, the six loss
terms, backward, gradient clipping, AdamW) on a batch of B windows of L = 256 frames, every
row busy, with the preset's B. Rates are target frames per second of wall time and per
second of process CPU time (time.process_time(): all threads), each the median of --repeats
timed runs (the spread is printed).

    python benchmarks/bench_frame_blocks.py [--ks 1,8,32,64] [--presets small,full] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from blendsync.shared.config import FeatureConfig
from blendsync.train.core.build import build_model
from blendsync.train.core.config import PRESET_BATCH_STREAMS, TrainConfig
from blendsync.train.loop.step import carry, to_device, train_step

L, LA, C = 256, 6, 52


def batch(B: int, K: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "mel": rng.normal(size=(B, L, 80)).astype(np.float32),
        "emotion": rng.normal(size=(B, L, 88)).astype(np.float32),
        "frame_mask": np.ones((B, L), bool),
        "target": rng.uniform(size=(B, K, C)).astype(np.float32),
        "valid": np.ones((B, K), bool),
        "active": np.ones(B, bool),
        "prev_target": rng.uniform(size=(B, C)).astype(np.float32),
        "has_prev": np.ones(B, bool),
        "file": np.zeros(B, np.int64),
        "frame": np.zeros(B, np.int64),
    }


def train_rate(preset: str, K: int, device: torch.device, steps: int, repeats: int) -> dict:
    cfg = TrainConfig().with_preset(preset).replace(stream={"frames_per_window": K})
    B = PRESET_BATCH_STREAMS[preset]
    torch.manual_seed(0)
    model = build_model(cfg, FeatureConfig(), C).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    masks = (torch.zeros(C, dtype=torch.bool, device=device), torch.zeros(C, dtype=torch.bool, device=device))
    rng = np.random.default_rng(0)
    batches = [batch(B, K, rng) for _ in range(2)]
    prev = torch.zeros(B, C, device=device)
    amp = device.type == "cuda"

    def step(i: int):
        nonlocal prev
        db = to_device(batches[i % 2], device)
        opt.zero_grad(set_to_none=True)
        loss, _, pred = train_step(model, db, prev, cfg, masks, amp)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        prev = carry(prev, pred, db.t)
        return loss

    step(0)  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(steps):
            loss = step(i)
        float(loss.detach())
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(B * K * steps / (time.perf_counter() - t0))
        cpu.append(B * K * steps / (time.process_time() - c0))
    return {"wall": wall, "cpu": cpu}


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):9.2f} ({min(xs):.2f}-{max(xs):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="1,8,32,64")
    ap.add_argument("--presets", default="small,full")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--small-steps", type=int, default=6)
    ap.add_argument("--full-steps", type=int, default=2)
    args = ap.parse_args()
    device = torch.device(args.device)
    ks = [int(k) for k in args.ks.split(",")]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} torch threads"
    print(
        f"device: {device} ({name}), torch {torch.__version__}, L = {L}, C = {C}, "
        f"bf16 autocast {'on' if device.type == 'cuda' else 'off'}"
    )
    print("training target frames/s: median (min-max) of repeats; ratio = median vs K = 1 in this run")
    for preset in args.presets.split(","):
        steps = args.small_steps if preset == "small" else args.full_steps
        base = None
        for K in ks:
            r = train_rate(preset, K, device, steps, args.repeats)
            wall = statistics.median(r["wall"])
            base = base if base is not None else (wall, statistics.median(r["cpu"]))
            print(
                f"  {preset:5s} K = {K:3d}: wall {fmt(r['wall'])} frames/s, per CPU-s {fmt(r['cpu'])} "
                f"-> {wall / base[0]:6.1f}x wall, {statistics.median(r['cpu']) / base[1]:6.1f}x CPU vs K = {ks[0]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
