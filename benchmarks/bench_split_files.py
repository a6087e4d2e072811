#!/usr/bin/env python3
"""Epoch time with fewer takes than streams: files cut into B equal runs (stream.split_files,
the default) against whole files only (each take on one stream, the other rows idle), in
the same run on the same store.

The store holds `--takes` long takes of random learnable features (the model's cost does not
depend on the values). Both runs train one epoch of the small preset (B = 8) at `--stride`
and see the same windows; the ratio is the whole-files epoch time over the split one.

    python benchmarks/bench_split_files.py [--takes 2] [--frames 2400] [--stride 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blendsync.train.core.config import ConfigOverrides, TrainConfig  # noqa: E402
from blendsync.train.loop.trainer import fit  # noqa: E402
from tests.helpers import make_random_store  # noqa: E402


def one_epoch(store, out: Path, split: bool, stride: int, device: str) -> tuple[float, int]:
    cfg = TrainConfig.from_dict(
        {
            "preset": "small",
            # Every block of the takes, the same blocks in both runs: no phase shift, no held-out tail.
            "stream": {"stride": stride, "split_files": split, "phase_jitter": False},
            "optim": {"epochs": 1, "warmup_steps": 5},
            "diagnostics": {"every_steps": 0},
            "validation": {"holdout_tail": 0.0},
        }
    )
    t0 = time.perf_counter()
    r = fit(store, cfg=cfg, out=out, manifest="bench", overrides=ConfigOverrides(preset="small"), device=device)
    return time.perf_counter() - t0, r.step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--takes", type=int, default=2)
    ap.add_argument("--frames", type=int, default=2400, help="frames per take (2400 = 80 s at 30 fps)")
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_split_"))
    fs, keys = make_random_store(tmp / "s.zarr", [a.frames] * a.takes + [30], channels=52, seed=1, learnable=True)
    # The long takes train; one second-long take validates (validation is not what is timed).
    fs.write_index(
        "bench",
        {
            "entries": [
                {"row": i + 1, "key": k, "split": "val" if i == a.takes else "train", "id": f"take{i}"}
                for i, k in enumerate(keys)
            ]
        },
    )
    rows = {}
    for split in (False, True):
        dt, steps = one_epoch(fs.location, tmp / f"run_{split}", split, a.stride, a.device)
        rows[split] = (dt, steps)
        name = "split into B runs" if split else "whole files"
        print(f"{name:>18}: {steps:5d} steps, {dt:6.1f} s for one epoch")
    print(
        f"speed-up (whole files / split): {rows[False][0] / rows[True][0]:.2f}x "
        f"({a.takes} takes x {a.frames} frames, stride {a.stride}, B = 8, {a.device})"
    )


if __name__ == "__main__":
    main()
