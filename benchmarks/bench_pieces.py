#!/usr/bin/env python3
"""One long file on every core: the openSMILE pass in pieces and the model's blocks in groups
(shared.features.pieces) against one pass, in the same run, in process (no start-up).

120 s of real speech at 16 kHz, the small offline preset (K = 128) from a few training steps
on the example data (timing does not depend on the weights), torch at one thread per piece.
Prints wall seconds and process CPU seconds per file (median and range of the repeats), the
real-time factor and the ratio; the curves of both are checked equal.

    python benchmarks/bench_pieces.py [--seconds 120] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_live_latency import RATE, checkpoints, speech  # noqa: E402

from blendsync.shared.features.pieces import ONE_PASS, Workers  # noqa: E402
from blendsync.train.inference.predict import Predictor, animate_file  # noqa: E402


def timed(pred: Predictor, wav: Path, workers: Workers, repeats: int) -> tuple[list[float], list[float], np.ndarray]:
    walls, cpus = [], []
    curves = None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        curves, _ = animate_file(pred, wav, fps=60, workers=workers)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return walls, cpus, curves


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(cores) as pool:
        tmp = Path(tmp)
        pred = Predictor.load(checkpoints(tmp)["offline"])
        wav = tmp / "speech.wav"
        sf.write(wav, speech(args.seconds), RATE, subtype="PCM_16")
        animate_file(pred, wav, fps=60)  # first-call costs out of the figures
        rows = {}
        for name, workers in (("one pass", ONE_PASS), (f"{cores} pieces", Workers(cores, pool.map))):
            rows[name] = timed(pred, wav, workers, args.repeats)
        (w1, c1, a), (wn, cn, b) = rows.values()
        assert np.array_equal(a, b), "pieces changed the curves"
        print(f"{args.seconds:.0f} s of real speech, small preset K = 128, {cores} cores, {args.repeats} repeats")
        for name, (w, c, _) in rows.items():
            print(f"  {name:9s}: wall {np.median(w):.2f} s ({min(w):.2f}-{max(w):.2f}) = "
                  f"{args.seconds / np.median(w):.1f}x real time; CPU {np.median(c):.2f} s")  # fmt: skip
        print(f"pieces / one pass: {np.median(w1) / np.median(wn):.2f}x faster (wall), "
              f"CPU {np.median(cn) / np.median(c1):.2f}x; curves identical")  # fmt: skip


if __name__ == "__main__":
    main()
