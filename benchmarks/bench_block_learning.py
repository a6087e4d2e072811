#!/usr/bin/env python3
"""Learning at equal compute: frames per window K against K = 1 on real sparse targets.

The custom-rig pair (FACEGOOD, 116 channels): train on take 1114_3_15, score take 1114_3_16
against the training-mean predictor (skill = 1 - MSE / MSE of the mean). Every run gets the
same budget of process CPU seconds (time.process_time(): all threads of this process,
counted only while bstrain's loop runs, so evaluations and featurize are not charged; the
machines are shared, so wall time would be noisy). At each mark of the budget the run stops
(last.pt, as a time-boxed job would), the held-out take is scored, and training resumes
exactly where it stopped.

The trainer's settings when the recorded rows were measured (small preset, B = 8, stride 1,
split streams, the notes' loss, 100 warm-up steps, no phase shift, no held-out tail), with
a constant learning rate after warmup (min_lr_ratio 1: no run's schedule ends before
another's) and as many epochs as the budget can hold. Today's defaults: bench_loss_learning.py.

    python benchmarks/bench_block_learning.py [--ks 1,32] [--seeds 0,1,2] [--marks 60,120,240,480]

Reads ../shared/data/custom_rig (or BLENDSYNC_SHARED_DATA/custom_rig).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch
from cpu_budget import CpuBudget

from blendsync.featurize.extract import extract
from blendsync.shared.config import FeatureConfig
from blendsync.train.core.config import TrainConfig
from blendsync.train.loop.evaluation import evaluate_checkpoint
from blendsync.train.loop.trainer import fit

REPO = Path(__file__).resolve().parents[1]
TAKE_S = 49.07  # 1114_3_15


def make_store(tmp: Path, d: Path) -> Path:
    """One store, two manifests: 'rig_train' (take 15 only: no validation inside fit) and
    'rig_eval' (take 16 as val)."""
    cfg = FeatureConfig.from_dict({"targets": {"channels_file": str(d / "channel_names.txt")}})
    store = tmp / "rig.zarr"
    for name, take, split in (("rig_train", "15", "train"), ("rig_eval", "16", "val")):
        man = tmp / f"{name}.csv"
        man.write_text(
            "audio,targets,targets_fps,split,id\n"
            f"{d / f'1114_3_{take}.wav'},{d / f'bs_value_1114_3_{take}.npy'},30,{split},take{take}\n"
        )
        assert extract(man, store, cfg, executor="serial").ok
    return store


def run(store: Path, out: Path, K: int, seed: int, marks: list[float]) -> list[dict]:
    """Skill of the held-out take at each CPU-seconds mark."""
    frames_per_cpu_s = 1000.0 * K  # generous: only sizes the epoch count
    epochs = max(2, int(marks[-1] * frames_per_cpu_s / (TAKE_S * 30)) + 1)
    cfg = (
        TrainConfig()
        .with_preset("small")
        .replace(
            stream={"frames_per_window": K, "phase_jitter": False},
            optim={"epochs": epochs, "min_lr_ratio": 1.0, "warmup_steps": 100},
            validation={"holdout_tail": 0.0},
            seed=seed,
        )
    )
    cfg = TrainConfig.from_dict({**cfg.to_dict(), "loss": {"preset": "notes"}})
    budget = CpuBudget()
    curve = []
    for mark in marks:
        r = fit(
            store,
            cfg=cfg,
            out=out,
            manifest="rig_train",
            resume=(out / "checkpoints" / "last.pt").exists(),
            on_step=budget.until(mark),
        )
        used = budget.used
        ev = evaluate_checkpoint(out / "checkpoints" / "last.pt", store, manifest="rig_eval", split="val")
        m = ev["metrics"]
        curve.append(
            {"cpu_s": round(used, 1), "step": r.step, "frames": r.step * 8 * K, "skill": m["skill"], "mse": m["mse"]}
        )
        print(f"  K = {K:3d} seed {seed}: {used:6.0f} CPU-s, step {r.step:5d}, skill {m['skill']:+.4f}", flush=True)
        if not r.interrupted:
            break
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default=f"1,{TrainConfig().stream.frames_per_window}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--marks", default="60,120,240,480", help="CPU seconds at which to score")
    ap.add_argument("--json", type=Path, default=None, help="Write the curves here.")
    args = ap.parse_args()
    d = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data")) / "custom_rig"
    marks = [float(x) for x in args.marks.split(",")]
    ks = [int(k) for k in args.ks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"torch threads {torch.get_num_threads()}; budget marks {marks} process CPU-s; seeds {seeds}")
    curves: dict[int, list[list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = make_store(tmp, d)
        for seed in seeds:  # seeds outermost: a drift in machine load hits every K alike
            for K in ks:
                curves.setdefault(K, []).append(run(store, tmp / f"run-{K}-{seed}", K, seed, marks))
    print("\nheld-out skill at each CPU-seconds mark: median (min-max) over seeds")
    for K in ks:
        cells = []
        for i, mark in enumerate(marks):
            vals = [c[i]["skill"] for c in curves[K] if i < len(c)]
            cells.append(f"{mark:.0f} s: {statistics.median(vals):+.3f} ({min(vals):+.3f}..{max(vals):+.3f})")
        print(f"  K = {K:3d}: " + "; ".join(cells))
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in curves.items()}, indent=1))


if __name__ == "__main__":
    main()
