#!/usr/bin/env python3
"""Feature augmentation at equal compute: held-out skill on real sparse targets with and
without it.

The custom-rig pair (FACEGOOD, 116 channels): train on take 1114_3_15, score take 1114_3_16
against the training-mean predictor (skill = 1 - MSE / MSE of the mean). Every variant gets
the same budget of process CPU seconds (time.process_time(), counted only while the training
loop runs); at each mark the run stops, the held-out take is scored and training resumes
exactly where it stopped. Trainer defaults (small preset, B = 8, K = 128, stride 1, default
loss, still channels masked) with a constant learning rate after warmup (min_lr_ratio 1) and
epochs enough for the budget; only the augment section differs:

  off        no augmentation
  spec       gain ±6 dB, 2 time masks of up to 8 frames, 2 frequency masks of up to 8 bins
  emotion    emotion-stream dropout 0.2
  all        spec + emotion
  emotion50  emotion-stream dropout 0.5

    python benchmarks/bench_augment.py [--variants off,spec,emotion,all,emotion50] [--seeds 0,1,2]
                                       [--marks 30,60,120,240]

Reads ../shared/data/custom_rig (or BLENDSYNC_SHARED_DATA/custom_rig).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch
from bench_block_learning import make_store
from cpu_budget import CpuBudget

from blendsync.train.core.config import TrainConfig
from blendsync.train.loop.evaluation import evaluate_checkpoint
from blendsync.train.loop.trainer import fit

REPO = Path(__file__).resolve().parents[1]
SPEC = {"gain_db": 6.0, "time_masks": 2, "time_mask_frames": 8, "freq_masks": 2, "freq_mask_bins": 8}
VARIANTS = {
    "off": {},
    "spec": SPEC,
    "emotion": {"emotion_dropout": 0.2},
    "all": {**SPEC, "emotion_dropout": 0.2},
    "emotion50": {"emotion_dropout": 0.5},
}


def run(store: Path, out: Path, augment: dict, seed: int, marks: list[float]) -> list[float]:
    cfg = (
        TrainConfig()
        .with_preset("small")
        .replace(
            optim={"epochs": 400, "min_lr_ratio": 1.0}, validation={"holdout_tail": 0.0}, augment=augment, seed=seed
        )
    )
    budget, skills = CpuBudget(), []
    for mark in marks:
        r = fit(
            store,
            cfg=cfg,
            out=out,
            manifest="rig_train",
            resume=(out / "checkpoints" / "last.pt").exists(),
            on_step=budget.until(mark),
        )
        ev = evaluate_checkpoint(out / "checkpoints" / "last.pt", store, manifest="rig_eval", split="val")
        skills.append(ev["metrics"]["skill"])
        print(f"  {out.name}: {budget.used:6.1f} CPU-s, step {r.step:5d}, skill {skills[-1]:+.4f}", flush=True)
    return skills


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--marks", default="30,60,120,240", help="CPU seconds at which to score")
    args = ap.parse_args()
    d = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data")) / "custom_rig"
    marks = [float(x) for x in args.marks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.variants.split(",")
    print(f"torch threads {torch.get_num_threads()}; marks {marks} CPU-s; seeds {seeds}")
    skills: dict[str, list[list[float]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = make_store(tmp, d)
        for seed in seeds:  # seeds outermost: a drift in machine load hits every variant alike
            for n in names:
                skills[n].append(run(store, tmp / f"{n}-{seed}", VARIANTS[n], seed, marks))
    print(
        f"\nheld-out skill (take 16) at each CPU-seconds mark: median (min..max) over {len(seeds)} seeds; "
        "best: the best mark of each seed"
    )
    for n in names:
        v = skills[n]
        cells = [
            f"{m:.0f} s: {statistics.median(c[i] for c in v):+.3f} ({min(c[i] for c in v):+.3f}.."
            f"{max(c[i] for c in v):+.3f})"
            for i, m in enumerate(marks)
        ]
        best = [max(c) for c in v]
        print(
            f"  {n:8s} " + "; ".join(cells) + f"; best {statistics.median(best):+.3f} "
            f"({min(best):+.3f}..{max(best):+.3f})"
        )


if __name__ == "__main__":
    main()
