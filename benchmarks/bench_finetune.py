#!/usr/bin/env python3
"""Fine-tuning against training from scratch on a new actor's few seconds of data.

The custom-rig pair (FACEGOOD, 116 channels): the new actor's data is the first half of take
1114_3_16 (24 s); its skill is scored on the second half (never trained on) against the
training-mean predictor (skill = 1 - MSE / MSE of the mean). Three starts, same trainer
settings, same budget of process CPU seconds (time.process_time(), counted only while the
training loop runs): scratch (random weights), fine-tuned from a model trained on the other
take (1114_3_15, all 116 channels matched by name), and fine-tuned from a model trained on
the shipped example data (ARKit 52: no channel in common, only the encoders carry over).
Pre-training is done once and not charged (it is the earlier run a user starts from): 150
steps with validation every 10, and its best.pt.

At each mark the run stops (last.pt), the held-out half is scored and training resumes
exactly where it stopped. Settings: small preset, B = 8, stride 1, trainer defaults, with a
constant learning rate after the 20 warm-up steps (min_lr_ratio 1: no schedule ends before
another's) and epochs enough for the budget. Prints per start the skill at each mark
(median and range over seeds) and the CPU seconds to reach the target skill (default: 90%
of the best median skill scratch reaches), with the ratio scratch / fine-tuned.

    python benchmarks/bench_finetune.py [--seeds 0,1,2] [--marks 10,20,40,80,160] [--pretrain-steps 150]

Reads ../shared/data/custom_rig (or BLENDSYNC_SHARED_DATA/custom_rig).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from cpu_budget import CpuBudget

from blendsync.featurize.extract import extract
from blendsync.shared.config import FeatureConfig
from blendsync.train.core.config import TrainConfig
from blendsync.train.loop.evaluation import evaluate_checkpoint
from blendsync.train.loop.finetune import InitFrom
from blendsync.train.loop.trainer import fit

REPO = Path(__file__).resolve().parents[1]


def make_stores(tmp: Path, d: Path) -> tuple[Path, Path]:
    """The rig store with manifests 'source' (take 15), 'actor' (take 16's first half) and
    'actor_eval' (its second half, as val), and the example store ('data_manifest'). The
    actor's training manifest has no validation split and its runs hold out nothing, so no
    validation pass is charged to the budget."""
    import soundfile as sf

    cfg = FeatureConfig.from_dict({"targets": {"channels_file": str(d / "channel_names.txt")}})
    y, sr = sf.read(d / "1114_3_16.wav", dtype="float32")
    curves = np.load(d / "bs_value_1114_3_16.npy")
    half_s = round(len(y) / sr / 2)
    for part, (a, b) in (("first", (0, half_s)), ("second", (half_s, None))):
        sf.write(tmp / f"16_{part}.wav", y[a * sr : None if b is None else b * sr], sr, subtype="PCM_16")
        np.save(tmp / f"16_{part}.npy", curves[a * 30 : None if b is None else b * 30])
    store = tmp / "rig.zarr"
    (tmp / "source.csv").write_text(
        f"audio,targets,targets_fps,split,id\n{d / '1114_3_15.wav'},{d / 'bs_value_1114_3_15.npy'},30,train,take15\n"
    )
    (tmp / "actor.csv").write_text(
        f"audio,targets,targets_fps,split,id\n{tmp / '16_first.wav'},{tmp / '16_first.npy'},30,train,take16a\n"
    )
    (tmp / "actor_eval.csv").write_text(
        f"audio,targets,targets_fps,split,id\n{tmp / '16_second.wav'},{tmp / '16_second.npy'},30,val,take16b\n"
    )
    for name in ("source", "actor", "actor_eval"):
        assert extract(tmp / f"{name}.csv", store, cfg, executor="serial").ok
    example = tmp / "example.zarr"
    assert extract(REPO / "data_manifest.csv", example, FeatureConfig(), executor="serial").ok
    return store, example


def pretrain(store: Path, out: Path, manifest: str, steps: int) -> Path:
    """The base a user would start from: trainer defaults with validation every 10 steps (the
    example's val split; take 15's held-out last 10%) and its best.pt by validation skill.
    Not charged to any budget."""
    cfg = (
        TrainConfig()
        .with_preset("small")
        .replace(
            optim={"epochs": 10_000, "max_steps": steps, "min_lr_ratio": 1.0}, validation={"every_steps": 10}, seed=0
        )
    )
    r = fit(store, cfg=cfg, out=out, manifest=manifest)
    print(
        f"pre-trained on {manifest}: {r.step} steps, best validation skill {r.best['value']:+.4f} at step "
        f"{r.best['step']}"
    )
    return out / "checkpoints" / "best.pt"


def settings(seed: int, epochs: int) -> TrainConfig:
    return (
        TrainConfig()
        .with_preset("small")
        .replace(optim={"epochs": epochs, "min_lr_ratio": 1.0}, validation={"holdout_tail": 0.0}, seed=seed)
    )


def budget_fit(
    store: Path, out: Path, cfg: TrainConfig, manifest: str, mark: float, budget: CpuBudget, init: InitFrom | None
):
    resume = (out / "checkpoints" / "last.pt").exists()
    return fit(
        store,
        cfg=cfg,
        out=out,
        manifest=manifest,
        resume=resume,
        on_step=budget.until(mark),
        init_from=None if resume else init,
    )


def curve(store: Path, out: Path, seed: int, marks: list[float], init: InitFrom | None) -> list[float]:
    cfg = settings(seed, epochs=400)
    budget, skills = CpuBudget(), []
    for mark in marks:
        r = budget_fit(store, out, cfg, "actor", mark, budget, init)
        ev = evaluate_checkpoint(out / "checkpoints" / "last.pt", store, manifest="actor_eval", split="val")
        skills.append(ev["metrics"]["skill"])
        print(f"  {out.name}: {budget.used:6.1f} CPU-s, step {r.step:4d}, held-out skill {skills[-1]:+.4f}", flush=True)
    return skills


def first_reach(marks: list[float], skills: list[float], target: float) -> float | None:
    for m, s in zip(marks, skills):
        if s >= target:
            return m
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--marks", default="10,20,40,80,160", help="CPU seconds at which to score")
    ap.add_argument("--pretrain-steps", type=int, default=150, help="Optimiser steps of each pre-training")
    ap.add_argument("--target", type=float, default=None, help="Skill to reach [default: 90%% of scratch's best]")
    args = ap.parse_args()
    d = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data")) / "custom_rig"
    marks = [float(x) for x in args.marks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"torch threads {torch.get_num_threads()}; marks {marks} CPU-s; seeds {seeds}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store, example = make_stores(tmp, d)
        starts: dict[str, InitFrom | None] = {"scratch": None}
        for name, st, manifest in (("take 15", store, "source"), ("example data", example, "data_manifest")):
            base = pretrain(st, tmp / f"pre-{manifest}", manifest, args.pretrain_steps)
            starts[f"from {name}"] = InitFrom.load(base)
            if st == store:  # same rig: score it on the held-out half before any fine-tuning
                ev = evaluate_checkpoint(base, store, manifest="actor_eval", split="val")
                print(f"  its skill on the actor's held-out half before fine-tuning: {ev['metrics']['skill']:+.4f}")
        skills: dict[str, list[list[float]]] = {k: [] for k in starts}
        for seed in seeds:  # seeds outermost: a drift in machine load hits every start alike
            for name, init in starts.items():
                skills[name].append(curve(store, tmp / f"{name.replace(' ', '_')}-{seed}", seed, marks, init))
    med = {k: [statistics.median(c[i] for c in v) for i in range(len(marks))] for k, v in skills.items()}
    target = args.target if args.target is not None else 0.9 * max(med["scratch"])
    print(
        f"\nheld-out skill (second half of take 16) at each CPU-seconds mark: median (min..max) over {len(seeds)} "
        f"seeds; CPU-s to reach skill {target:.3f} (median curve)"
    )
    reach = {}
    for name, v in skills.items():
        cells = [
            f"{m:.0f} s: {med[name][i]:+.3f} ({min(c[i] for c in v):+.3f}..{max(c[i] for c in v):+.3f})"
            for i, m in enumerate(marks)
        ]
        reach[name] = first_reach(marks, med[name], target)
        print(
            f"  {name:18s} "
            + "; ".join(cells)
            + f"; reaches {target:.3f} at "
            + (f"{reach[name]:.0f} CPU-s" if reach[name] is not None else f"> {marks[-1]:.0f} CPU-s")
        )
    for name in starts:
        if name != "scratch" and reach[name] and reach["scratch"]:
            print(f"  scratch / {name}: {reach['scratch'] / reach[name]:.1f}x fewer CPU seconds to skill {target:.3f}")


if __name__ == "__main__":
    main()
