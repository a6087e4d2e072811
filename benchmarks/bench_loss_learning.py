#!/usr/bin/env python3
"""Learning on real sparse targets: loss variants and a random-window reference, scored on
skill, motion (mean r over active channels) and movement size (amplitude ratio).

The custom-rig pair (FACEGOOD, 116 channels, one speaker): train on one take, score the
other, in both directions, with several seeds, small preset, the default frames per window.
Every variant runs the same number of optimiser steps of the same batch shape (B = 8 blocks
of K frames), so the same model costs the same per step; the process CPU seconds
(time.process_time(), all threads, the fit calls only: scoring is not charged) are measured
and printed beside every point, since the machines are shared and wall time is noisy.

Variants are `bstrain fit` with a loss section (LOSS_PRESETS plus overrides) and the
trainer's defaults otherwise: the manifest has no validation split, so fit holds out the
tail of the training take (validation.holdout_tail), validates on it and keeps best.pt by
the validation metric. "final" scores best.pt on the other take.

The reference ("random-mse") is the same model, optimiser and schedule trained on
independent random windows (any file, any first frame, no carried state) with plain MSE on
the same training frames (the tail excluded); its "final" is the mark with the best skill on
the held-out tail (scored for free), i.e. early stopping at mark granularity.

    python benchmarks/bench_loss_learning.py [--variants default,notes,mse,random-mse]
        [--seeds 0,1,2] [--directions 15-16,16-15] [--steps 200] [--marks 50,100,200] [--json out.json]

Amplitude ratio: per-channel std of the prediction over that of the target on the scored
take, median over its active channels (target std >= 0.01); mean r: mean Pearson r over the
same channels. Reads ../shared/data/custom_rig (or BLENDSYNC_SHARED_DATA/custom_rig).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from blendsync.featurize.extract import extract
from blendsync.shared.config import FeatureConfig
from blendsync.shared.store import FeatureStore
from blendsync.train.core.build import build_model
from blendsync.train.core.config import LOSS_PRESETS, TrainConfig
from blendsync.train.core.data import hold_out_tails, load_training_data
from blendsync.train.core.normalization import compute_normalizer
from blendsync.train.core.output_gain import apply_gain, calibrate_gain
from blendsync.train.core.windows import cut
from blendsync.train.loop.evaluation import evaluate_checkpoint, loss_channels, split_metrics
from blendsync.train.loop.evaluation import validation_pass as evaluate
from blendsync.train.loop.step import to_device, train_step
from blendsync.train.loop.streaming import WindowStream
from blendsync.train.loop.trainer import fit, lr_lambda

REPO = Path(__file__).resolve().parents[1]

# name -> the config's loss section. "default" is whatever LossConfig() is today.
VARIANTS: dict[str, dict] = {
    "default": {},
    "notes": {"preset": "notes"},
    "mse": {"preset": "mse"},
    "notes-scaled": {"preset": "notes", "scale": "target_std"},
    "mse-scaled": {"preset": "mse", "scale": "target_std"},
    "mse-scaled+consistency": {"preset": "mse", "scale": "target_std", "consistency": 0.2},
    "mse-scaled+amplitude": {"preset": "mse", "scale": "target_std", "amplitude": 0.5},
    "mse+consistency": {"preset": "mse", "consistency": 0.2},
    "notes-l1": {"preset": "notes", "l1": 0.0},
    "notes-temporal": {"preset": "notes", "temporal": 0.0},
    "notes-l1-temporal": {"preset": "notes", "l1": 0.0, "temporal": 0.0},
    "mse+amplitude2": {"preset": "mse", "amplitude": 2.0},
    "mse+amplitude0.5": {"preset": "mse", "amplitude": 0.5},
    "mse+l1=0.03": {"preset": "mse", "l1": 0.03},
    "notes+l1=0.3": {"preset": "notes", "l1": 0.3},
    "mse+amplitude20": {"preset": "mse", "amplitude": 20.0},
    "notes+amplitude2": {"preset": "notes", "amplitude": 2.0},
}
# name -> optim overrides, for the schedule check (--schedules).
SCHEDULES: dict[str, dict] = {
    "default": {},
    "lr3e-3": {"lr": 3e-3},
    "lr3e-4": {"lr": 3e-4},
    "warmup20": {"warmup_steps": 20},
    "constant": {"min_lr_ratio": 1.0},
}


def make_store(tmp: Path, d: Path) -> Path:
    """One store; per take a training manifest (no validation split) and a scoring one."""
    cfg = FeatureConfig.from_dict({"targets": {"channels_file": str(d / "channel_names.txt")}})
    store = tmp / "rig.zarr"
    for take in ("15", "16"):
        for name, split in ((f"train{take}", "train"), (f"score{take}", "val")):
            man = tmp / f"{name}.csv"
            man.write_text(
                "audio,targets,targets_fps,split,id\n"
                f"{d / f'1114_3_{take}.wav'},{d / f'bs_value_1114_3_{take}.npy'},30,{split},take{take}\n"
            )
            assert extract(man, store, cfg, executor="serial").ok
    return store


def summary(m: dict) -> dict:
    return {"skill": m["skill"], "mean_r": m["mean_r"], "amplitude": m["amplitude_ratio"]}


def run_fit(store: Path, out: Path, cfg: TrainConfig, train: str, score: str, marks: list[int]) -> dict:
    cpu = 0.0
    curve = []
    for mark in marks:
        t0 = time.process_time()
        r = fit(
            store,
            cfg=cfg,
            out=out,
            manifest=train,
            resume=(out / "checkpoints" / "last.pt").exists(),
            stop_after_steps=mark if mark < marks[-1] else None,
        )
        cpu += time.process_time() - t0
        ev = evaluate_checkpoint(out / "checkpoints" / "last.pt", store, manifest=score, split="val")
        curve.append({"step": r.step, "cpu_s": round(cpu, 1), **summary(ev["metrics"])})
    ev = evaluate_checkpoint(out / "checkpoints" / "best.pt", store, manifest=score, split="val")
    best = torch.load(out / "checkpoints" / "best.pt", map_location="cpu", weights_only=False).get("best_val")
    g = (best or {}).get("calibrated_gain") or 1.0
    evg = evaluate_checkpoint(out / "checkpoints" / "best.pt", store, manifest=score, split="val", gain=g)
    return {
        "curve": curve,
        "final": {**summary(ev["metrics"]), "step": (best or {}).get("step")},
        "final_gain": {**summary(evg["metrics"]), "gain": g},
    }


def run_random_windows(store_path: Path, cfg: TrainConfig, train: str, score: str, marks: list[int]) -> dict:
    """The reference: i.i.d. random windows, plain MSE, no carried state."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    store = FeatureStore(store_path)
    ds = load_training_data(store, train)
    files, tails = hold_out_tails(ds.files("train"), cfg.validation.holdout_tail)
    norm = compute_normalizer(store, files)
    s, o = cfg.stream, cfg.optim
    B, L, K = s.batch_streams, s.window, s.frames_per_window
    common = dict(
        window=L, lookahead=s.lookahead, streams=B, block=K, pad_value=s.pad_value, shuffle=False, split=False
    )
    reader = WindowStream(store, files, norm, stride=1, **common)
    loaded = [reader.load(f) for f in files]
    model = build_model(cfg, ds.feature_config, len(ds.channels))
    model.decoder.init_bias(torch.from_numpy(norm.target_mean))
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o.warmup_steps, marks[-1], o.min_lr_ratio))
    mse_cfg = dataclasses.replace(cfg, loss=LOSS_PRESETS["mse"])
    masks = loss_channels(ds, norm, mse_cfg, torch.device("cpu"))
    C = len(ds.channels)
    prev = torch.zeros(B, C)
    score_ds = load_training_data(store, score)
    score_files = score_ds.files("val")
    cpu, step, curve = 0.0, 0, []
    model.train()
    for mark in marks:
        t0 = time.process_time()
        while step < mark:
            batch = {
                "mel": np.empty((B, L, reader.dims["mel"]), np.float32),
                "emotion": np.empty((B, L, reader.dims["emotion"]), np.float32),
                "frame_mask": np.ones((B, L), bool),
                "target": np.zeros((B, K, C), np.float32),
                "valid": np.zeros((B, K), bool),
                "active": np.ones(B, bool),
                "prev_target": np.zeros((B, C), np.float32),
                "has_prev": np.zeros(B, bool),
                "file": np.zeros(B, np.int64),
                "frame": np.zeros(B, np.int64),
            }
            for i in range(B):
                f = int(rng.integers(len(files)))
                k = int(rng.integers(files[f].frames))
                lf = loaded[f]
                batch["mel"][i] = cut(lf.mel, k, L)
                batch["emotion"][i] = cut(lf.emotion, k, L)
                batch["frame_mask"][i] = cut(lf.mask, k, L)
                batch["target"][i] = lf.targets[k : k + K]
                batch["valid"][i] = k + np.arange(K) < files[f].frames
                batch["file"][i], batch["frame"][i] = f, k
            db = to_device(batch, torch.device("cpu"))
            opt.zero_grad(set_to_none=True)
            train_step(model, db, prev, mse_cfg, masks, False)
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            opt.step()
            sched.step()
            step += 1
        cpu += time.process_time() - t0
        point = {
            "step": step,
            "cpu_s": round(cpu, 1),
            **summary(_score(model, store, score_files, score_ds, norm, mse_cfg)[0]),
        }
        if tails:
            tail_m, g = _score(model, store, tails, ds, norm, mse_cfg)
            point["tail_skill"], point["gain"] = tail_m["skill"], g or 1.0
            point["with_gain"] = summary(_score(model, store, score_files, score_ds, norm, mse_cfg, point["gain"])[0])
        curve.append(point)
    pick = max(curve, key=lambda p: p.get("tail_skill") if p.get("tail_skill") is not None else -math.inf)
    return {
        "curve": curve,
        "final": {k: pick[k] for k in ("skill", "mean_r", "amplitude", "step")},
        "final_gain": {**pick.get("with_gain", {}), "gain": pick.get("gain")},
    }


def _score(model, store, files, ds, norm, cfg, gain: float = 1.0) -> tuple[dict, float | None]:
    """(metrics of the files at this output gain, the calibrated gain on them)."""
    s = cfg.stream
    stream = WindowStream(
        store,
        files,
        norm,
        window=s.window,
        lookahead=s.lookahead,
        stride=1,
        streams=s.batch_streams,
        block=s.frames_per_window,
        pad_value=s.pad_value,
        shuffle=False,
        split=False,
    )
    masks = loss_channels(ds, norm, cfg, torch.device("cpu"))
    _, preds, targs = evaluate(model, stream, files, cfg, masks, torch.device("cpu"), False, ds.channels)
    g = calibrate_gain(
        np.concatenate([preds[i] for i in sorted(preds)]),
        np.concatenate([targs[i] for i in sorted(targs)]),
        norm.target_mean,
    )
    preds = {i: apply_gain(p, norm.target_mean, gain) for i, p in preds.items()}
    return split_metrics(preds, targs, norm, ds), g


def fmt(vals: list[float | None]) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    return f"{statistics.mean(vals):+.3f} ({min(vals):+.3f}..{max(vals):+.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--variants",
        default="default,notes,mse,random-mse",
        help=f"from {sorted(VARIANTS)} and random-mse; name:schedule picks a schedule from {sorted(SCHEDULES)}",
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--directions", default="15-16,16-15", help="train-score take pairs")
    ap.add_argument("--steps", type=int, default=200, help="optimiser steps per run (the cosine's length)")
    ap.add_argument("--marks", default=None, help="steps at which to score [default: steps/4, steps/2, steps]")
    ap.add_argument("--json", type=Path, default=None, help="Write every run's curve here.")
    args = ap.parse_args()
    d = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data")) / "custom_rig"
    marks = (
        [int(x) for x in args.marks.split(",")]
        if args.marks
        else sorted({args.steps // 4, args.steps // 2, args.steps})
    )
    seeds = [int(x) for x in args.seeds.split(",")]
    dirs = [tuple(x.split("-")) for x in args.directions.split(",")]
    names = args.variants.split(",")
    print(
        f"torch threads {torch.get_num_threads()}; {args.steps} steps, marks {marks}; seeds {seeds}; "
        f"directions {dirs}; default loss {TrainConfig().loss}"
    )
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = make_store(tmp, d)
        for seed in seeds:  # outermost: a drift in machine load hits every variant alike
            for a, b in dirs:
                for name in names:
                    variant, _, schedule = name.partition(":")
                    cfg = (
                        TrainConfig()
                        .with_preset("small")
                        .replace(
                            optim={"max_steps": args.steps, "epochs": 10_000, **SCHEDULES[schedule or "default"]},
                            seed=seed,
                        )
                    )
                    if variant == "random-mse":
                        res = run_random_windows(store, cfg, f"train{a}", f"score{b}", marks)
                    else:
                        cfg = TrainConfig.from_dict({**cfg.to_dict(), "loss": VARIANTS[variant]})
                        res = run_fit(store, tmp / f"run-{name}-{seed}-{a}", cfg, f"train{a}", f"score{b}", marks)
                    res.update(seed=seed, direction=f"{a}->{b}")
                    results[name].append(res)
                    last, fin, fg = res["curve"][-1], res["final"], res["final_gain"]
                    print(
                        f"  {name:28s} seed {seed} {a}->{b}: {last['cpu_s']:6.0f} CPU-s; last skill "
                        f"{last['skill']:+.3f} r {last['mean_r']:.3f} amp {last['amplitude']:.3f}; final (step "
                        f"{fin['step']}) skill {fin['skill']:+.3f} r {fin['mean_r']:.3f} amp {fin['amplitude']:.3f}; "
                        f"calibrated gain {fg['gain']:.2f}: skill {fg['skill']:+.3f} amp {fg['amplitude']:.3f}",
                        flush=True,
                    )
    print("\nmean (min..max) over seeds and directions")
    for name in names:
        rs = results[name]
        for i, mark in enumerate(marks):
            pts = [r["curve"][i] for r in rs]
            print(
                f"  {name:28s} step {mark:4d} ({statistics.mean(p['cpu_s'] for p in pts):5.0f} CPU-s): skill "
                f"{fmt([p['skill'] for p in pts])}  r {fmt([p['mean_r'] for p in pts])}  amp "
                f"{fmt([p['amplitude'] for p in pts])}"
            )
        fins = [r["final"] for r in rs]
        print(
            f"  {name:28s} final (early-stopped): skill {fmt([f['skill'] for f in fins])}  r "
            f"{fmt([f['mean_r'] for f in fins])}  amp {fmt([f['amplitude'] for f in fins])}"
        )
        fgs = [r["final_gain"] for r in rs]
        print(
            f"  {name:28s} final, calibrated gain {fmt([f['gain'] for f in fgs])}: skill "
            f"{fmt([f['skill'] for f in fgs])}  r {fmt([f['mean_r'] for f in fgs])}  amp "
            f"{fmt([f['amplitude'] for f in fgs])}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
