#!/usr/bin/env python3
"""Skill on real sparse targets: train on one custom-rig take (116 channels, FACEGOOD), score
the other against a mean predictor (skill = 1 - MSE / MSE of the training mean).

    python benchmarks/bench_custom_rig.py [--epochs 5] [--stride 2] [--preset small] [--whole-files]
                                          [--frames-per-window 1]

The recorded rows (BENCHMARKS.md) are one frame per window, this script's default; larger K
against K = 1 at equal compute: bench_block_learning.py.

--whole-files turns stream.split_files off: the one training take runs on one stream (the
other rows idle) instead of being cut into B runs.

Reads ../shared/data/custom_rig (or BLENDSYNC_SHARED_DATA/custom_rig).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from blendsync.featurize.extract import extract
from blendsync.shared.config import FeatureConfig
from blendsync.train.core.config import ConfigOverrides, TrainConfig
from blendsync.train.loop.evaluation import evaluate_checkpoint
from blendsync.train.loop.trainer import fit

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--whole-files", action="store_true")
    ap.add_argument("--frames-per-window", type=int, default=1)
    args = ap.parse_args()
    d = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data")) / "custom_rig"
    cfg = FeatureConfig.from_dict({"targets": {"channels_file": str(d / "channel_names.txt")}})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        man = tmp / "rig.csv"
        man.write_text(
            "audio,targets,targets_fps,split,id\n"
            f"{d / '1114_3_15.wav'},{d / 'bs_value_1114_3_15.npy'},30,train,take15\n"
            f"{d / '1114_3_16.wav'},{d / 'bs_value_1114_3_16.npy'},30,val,take16\n"
        )
        assert extract(man, tmp / "rig.zarr", cfg, executor="serial").ok
        # The settings of the recorded rows: the notes' loss, 100 warm-up steps, no phase shift.
        tc = TrainConfig().replace(
            optim={"epochs": args.epochs, "warmup_steps": 100},
            stream={
                "stride": args.stride,
                "split_files": not args.whole_files,
                "frames_per_window": args.frames_per_window,
                "phase_jitter": False,
            },
        )
        tc = TrainConfig.from_dict({**tc.to_dict(), "loss": {"preset": "notes"}, "validation": {"metric": "loss"}})
        t0 = time.perf_counter()
        r = fit(tmp / "rig.zarr", cfg=tc, out=tmp / "run", overrides=ConfigOverrides(preset=args.preset))
        train_s = time.perf_counter() - t0
        ev = evaluate_checkpoint(r.run_dir / "checkpoints" / "best.pt", tmp / "rig.zarr", split="val")
    m = ev["metrics"]
    print(
        f"torch threads {torch.get_num_threads()}; preset {args.preset}, {args.epochs} epochs at stride "
        f"{args.stride}, K = {args.frames_per_window}, split_files {not args.whole_files}: {r.step} steps "
        f"in {train_s:.0f} s"
    )
    print(
        f"held-out take16: MSE {m['mse']:.6f} vs mean predictor {m['mse_mean_predictor']:.6f} "
        f"-> skill {m['skill']:.4f} (target > 0); MAE {m['mae']:.5f}"
    )


if __name__ == "__main__":
    main()
