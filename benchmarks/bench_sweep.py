#!/usr/bin/env python3
"""A sweep that cannot fool itself: search on one take, score on the other.

The custom-rig pair (FACEGOOD, 116 channels), as a user with one actor would have it:
`bstrain sweep` trains on take 1114_3_15 and validates on its held-out last 10% (the
trainer's validation.holdout_tail, no other split); take 1114_3_16 is never seen by the
search. Then the best config and the defaults are trained with fresh seeds (not the
sweep's) at equal process CPU seconds and both scored on take 16 against the
training-mean predictor (skill = 1 - MSE / MSE of the mean), by best.pt (the best
held-out-tail validation), as bstrain evaluate would.

1. The default run: TrainConfig() as bstrain fit runs it (small preset on a CPU, 10
   epochs), once per scoring seed; its median CPU-s is the budget unit.
2. The sweep: `trials` trials, each ended at the default run's CPU-s (sweep.yaml
   trial_cpu_s), the defaults enqueued as trial 0, TPE (seed 0), median pruning; its total
   CPU-s against `trials` default runs.
3. Scoring: the best config with the scoring seeds at the same CPU cap, against the
   default runs of step 1.

    python benchmarks/bench_sweep.py [--trials 20] [--seeds 1,2,3] [--jobs 1]

Reads ../shared/data/custom_rig (or BLENDSYNC_SHARED_DATA/custom_rig).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml
from bench_block_learning import make_store
from cpu_budget import CpuBudget

from blendsync.train.core.config import TrainConfig
from blendsync.train.loop.evaluation import evaluate_checkpoint
from blendsync.train.loop.trainer import fit
from blendsync.train.sweep.space import load_spec
from blendsync.train.sweep.study import sweep

REPO = Path(__file__).resolve().parents[1]
SPACE = {
    "metric": "skill",
    "space": {
        "optim.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
        "optim.warmup_steps": [0, 20, 100],
        "loss.preset": ["default", "mse", "notes"],
        "augment.emotion_dropout": {"low": 0.0, "high": 0.8},
        "stream.frames_per_window": [32, 64, 128],
        "model.dropout": {"low": 0.0, "high": 0.3},
    },
    "pruner": {"type": "median", "startup_trials": 5},
    "sampler": "tpe",
    "seed": 0,
    # trial 0: the defaults, so that the search starts from them
    "enqueue": [
        {
            "optim.lr": 1.0e-3,
            "optim.warmup_steps": 20,
            "loss.preset": "default",
            "augment.emotion_dropout": 0.5,
            "stream.frames_per_window": 128,
            "model.dropout": 0.1,
        }
    ],
}


def train_and_score(store: Path, out: Path, cfg: TrainConfig, seed: int, cap_s: float | None) -> tuple[float, float]:
    """(skill on take 16 by best.pt, CPU-s of the fit)."""
    cfg = TrainConfig.from_dict({**cfg.to_dict(), "seed": seed})
    budget = CpuBudget()
    c0 = time.process_time()
    r = fit(store, cfg=cfg, out=out, manifest="rig_train", on_step=budget.until(cap_s) if cap_s else None)
    cpu = time.process_time() - c0
    ev = evaluate_checkpoint(r.run_dir / "checkpoints" / "best.pt", store, split="val", manifest="rig_eval")
    return ev["metrics"]["skill"], cpu


def spread(xs: list[float], fmt: str = "+.4f") -> str:
    return f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}..{max(xs):{fmt}})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    d = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data")) / "custom_rig"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = make_store(tmp, d)
        default = TrainConfig().with_preset("small")  # what bstrain fit runs on a CPU
        base = [train_and_score(store, tmp / f"default-{s}", default, s, None) for s in seeds]
        unit = statistics.median(c for _, c in base)
        print(f"default run ({default.optim.epochs} epochs): {unit:.1f} CPU-s median of {len(seeds)} seeds")

        space = tmp / "sweep.yaml"
        space.write_text(yaml.safe_dump({**SPACE, "trial_cpu_s": round(unit, 1)}, sort_keys=False))
        t0 = time.perf_counter()
        res = sweep(load_spec(space), store, tmp / "sweep", trials=args.trials, manifest="rig_train", jobs=args.jobs)
        wall = time.perf_counter() - t0
        print(
            f"sweep: {res.ended} trials ({res.complete} complete, {res.pruned} pruned, {res.failed} failed), "
            f"{res.cpu_s:.0f} CPU-s = {res.cpu_s / unit:.1f} default runs (budget {args.trials}), {wall:.0f} s wall"
        )
        b = res.best
        print(f"best: trial {b['number']}, held-out-tail skill {b['value']:+.4f}: {b['params']}")
        default_trial = next(o for o in res.outcomes if o.number == 0)
        print(f"trial 0 (the defaults): {default_trial.state} {default_trial.value}")
        best_cfg = TrainConfig.load(tmp / "sweep" / "best_config.yaml")
        found = [train_and_score(store, tmp / f"best-{s}", best_cfg, s, unit) for s in seeds]
    print(f"torch threads {torch.get_num_threads()}; take 16 skill, seeds {seeds}, median (min..max):")
    print(f"  default      {spread([s for s, _ in base])}  at {spread([c for _, c in base], '.1f')} CPU-s")
    print(f"  sweep's best {spread([s for s, _ in found])}  at {spread([c for _, c in found], '.1f')} CPU-s")
    lo_found, hi_base = min(s for s, _ in found), max(s for s, _ in base)
    gap = statistics.median(s for s, _ in found) - statistics.median(s for s, _ in base)
    print(
        f"gain {gap:+.4f}; the found config's worst seed {'above' if lo_found > hi_base else 'NOT above'} "
        f"the default's best ({lo_found:+.4f} vs {hi_base:+.4f})"
    )


if __name__ == "__main__":
    main()
