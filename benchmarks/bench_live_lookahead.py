#!/usr/bin/env python3
"""Quality against lookahead: the live model at lookahead 0, 2, 4, 6 and 8 frames beside the
offline default, at equal process CPU seconds, on real sparse targets.

The custom-rig pair (FACEGOOD, 116 channels) in both directions: train on one take, score the
other against the training-mean predictor (skill = 1 - MSE / MSE of the mean), with mean r and
the amplitude ratio over the active channels. Every variant gets the same budget of process
CPU seconds (cpu_budget.CpuBudget); at each mark the run stops, the held-out take is scored
and training resumes where it stopped. The live models train on the live feature config
(bsfeat extract --features live: the emotion row 0.15 s behind its frame), the offline default
(small preset, K = 128) on the default features; otherwise trainer defaults, constant
learning rate after warmup.

    python benchmarks/bench_live_lookahead.py [--lookaheads 0,2,4,6,8] [--seeds 0,1,2]
                                               [--directions 15-16,16-15] [--marks 15,30,60]

Reads ../shared/data/custom_rig (or BLENDSYNC_SHARED_DATA/custom_rig).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch
from cpu_budget import CpuBudget

from blendsync.featurize.extract import extract
from blendsync.shared.config import FEATURE_PRESETS, FeatureConfig
from blendsync.train.core.config import ConfigOverrides, TrainConfig
from blendsync.train.loop.evaluation import evaluate_checkpoint
from blendsync.train.loop.trainer import fit

REPO = Path(__file__).resolve().parents[1]


def make_store(tmp: Path, d: Path) -> Path:
    """One store; manifests '<features>_<train take>' (train split) and '<features>_eval_<take>'
    (val split) for both feature configs and both takes."""
    rig = {"targets": {"channels_file": str(d / "channel_names.txt")}}
    configs = {
        "default": FeatureConfig.from_dict(rig),
        "live": FeatureConfig.from_dict({**rig, "emotion": FEATURE_PRESETS["live"].to_dict()["emotion"]}),
    }
    store = tmp / "rig.zarr"
    for feats, cfg in configs.items():
        for take in ("15", "16"):
            for name, split in ((f"{feats}_{take}", "train"), (f"{feats}_eval_{take}", "val")):
                man = tmp / f"{name}.csv"
                man.write_text(
                    "audio,targets,targets_fps,split,id\n"
                    f"{d / f'1114_3_{take}.wav'},{d / f'bs_value_1114_3_{take}.npy'},30,{split},take{take}\n"
                )
                assert extract(man, store, cfg, executor="serial", index_name=name).ok
    return store


def run(store: Path, out: Path, variant: str, train: str, test: str, seed: int, marks: list[float]) -> list[dict]:
    live = variant != "offline"
    base = TrainConfig().replace(
        optim={"epochs": 2000, "min_lr_ratio": 1.0}, validation={"holdout_tail": 0.0}, seed=seed
    )
    over = ConfigOverrides(preset="small") if not live else ConfigOverrides(
        preset="live", values={"stream.lookahead": int(variant.removeprefix("la"))}
    )  # fmt: skip
    feats = "live" if live else "default"
    budget, curve = CpuBudget(), []
    for mark in marks:
        resume = (out / "checkpoints" / "last.pt").exists()
        r = fit(store, cfg=base, out=out, manifest=f"{feats}_{train}", resume=resume, on_step=budget.until(mark),
                overrides=None if resume else over)  # fmt: skip
        ev = evaluate_checkpoint(out / "checkpoints" / "last.pt", store, manifest=f"{feats}_eval_{test}", split="val")
        m = ev["metrics"]
        curve.append({"skill": m["skill"], "mean_r": m["mean_r"], "amplitude_ratio": m["amplitude_ratio"]})
        print(f"  {out.name}: {budget.used:6.1f} CPU-s, step {r.step:5d}, skill {m['skill']:+.4f}, mean r "
              f"{m['mean_r']:.3f}, amplitude {m['amplitude_ratio']:.3f}", flush=True)  # fmt: skip
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lookaheads", default="0,2,4,6,8")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--directions", default="15-16,16-15", help="TRAIN-TEST take pairs")
    ap.add_argument("--marks", default="15,30,60", help="CPU seconds at which to score")
    args = ap.parse_args()
    d = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data")) / "custom_rig"
    marks = [float(x) for x in args.marks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = ["offline"] + [f"la{int(x)}" for x in args.lookaheads.split(",")]
    directions = [tuple(p.split("-")) for p in args.directions.split(",")]
    print(f"torch threads {torch.get_num_threads()}; marks {marks} CPU-s; seeds {seeds}; directions {directions}")
    results: dict[str, list[list[dict]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = make_store(tmp, d)
        for seed in seeds:  # seeds outermost: a drift in machine load hits every variant alike
            for train, test in directions:
                for v in variants:
                    results[v].append(run(store, tmp / f"{v}-{train}-{seed}", v, train, test, seed, marks))
    print(f"\nheld-out take, median (min..max) over {len(seeds)} seeds x {len(directions)} directions; "
          "best: each run's best mark by skill, with that mark's mean r and amplitude ratio")  # fmt: skip
    offline_best = statistics.median(max(c["skill"] for c in curve) for curve in results["offline"])
    for v in variants:
        runs = results[v]
        cells = [f"{m:.0f} s: {statistics.median(c[i]['skill'] for c in runs):+.3f}" for i, m in enumerate(marks)]
        best = [max(curve, key=lambda c: c["skill"]) for curve in runs]
        skill = [b["skill"] for b in best]
        print(
            f"  {v:8s} " + "; ".join(cells)
            + f"; best skill {statistics.median(skill):+.3f} ({min(skill):+.3f}..{max(skill):+.3f})"
            f" = {statistics.median(skill) / offline_best:.2f}x offline; mean r "
            f"{statistics.median(b['mean_r'] for b in best):.3f}; amplitude "
            f"{statistics.median(b['amplitude_ratio'] for b in best):.3f}"
        )  # fmt: skip


if __name__ == "__main__":
    main()
