#!/usr/bin/env python3
"""bstrain predict as a user runs it: through the command line, start-up included, on 120 s
of real speech (44.1 kHz) and on a folder of 100 five-second lines, against the same work in
one warm process (the in-process figure) and openSMILE's own passes over the same audio
(its LLD-only pass: the pipeline's physical anchor). Then bsfeat extract with one worker on
8 minutes of the same speech (8 rows of 60 s, start-up included) against openSMILE's LLD-only
pass over those 8 minutes on one core, and bstrain --help.

The checkpoint is the small default model after a few training steps on the example store
(speed does not depend on the weights). The speech is the shared test recordings laid end to
end and resampled to 44.1 kHz.

    python benchmarks/bench_predict_cli.py [--repeats 3] [--lines 100] [--only predict|extract]

Reads ../shared/data/speech (or BLENDSYNC_SHARED_DATA/speech).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REPO = Path(__file__).resolve().parents[1]
SR = 44100


def speech(seconds: float) -> np.ndarray:
    data = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data")) / "speech"
    parts = []
    for f in sorted(data.iterdir()):
        if f.suffix.lower() in (".wav", ".flac", ".aiff"):
            y, sr = sf.read(str(f), dtype="float32", always_2d=True)
            parts.append(soxr.resample(y.mean(axis=1), sr, SR))
    y = np.concatenate(parts)
    return np.tile(y, int(np.ceil(seconds * SR / len(y))))[: int(seconds * SR)]


def checkpoint(tmp: Path) -> Path:
    from blendsync.featurize.extract import extract
    from blendsync.shared.config import FeatureConfig
    from blendsync.train.core.config import ConfigOverrides, TrainConfig
    from blendsync.train.loop.trainer import fit

    store = tmp / "features.zarr"
    assert extract(REPO / "data_manifest.csv", store, FeatureConfig(), executor="serial").ok
    fit(store, cfg=TrainConfig(), out=tmp / "run", overrides=ConfigOverrides(preset="small"), stop_after_steps=3)
    return tmp / "run" / "checkpoints" / "last.pt"


def cli(args: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "blendsync.train.cli", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr[-2000:]
    return wall, p.stdout


def startup() -> float:
    """The import a predict run pays before any work: the CLI with torch and the predictor."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import blendsync.train.cli, blendsync.train.inference.predict"], check=True)
    return time.perf_counter() - t0


def in_process(ck: Path, audios: list[Path]) -> dict:
    """The same files in one warm process: features, model, outputs written (CSV and PNG)."""
    from blendsync.train.inference.batch import predict

    predict(audios[:1], ck, Path(tempfile.mkdtemp()))  # first-call costs out of the figure
    out = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    rep = predict(audios, ck, out)
    return {"wall": time.perf_counter() - t0, "featurize": rep.featurize_s, "model": rep.model_s}


def lld_pass(ys: list[np.ndarray]) -> float:
    """openSMILE's eGeMAPS LLD-only pass over 16 kHz signals, one core, seconds."""
    import opensmile

    lld = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )
    lld.process_signal(ys[0][:16000], 16000)
    t0 = time.perf_counter()
    for y in ys:
        lld.process_signal(y, 16000)
    return time.perf_counter() - t0


def extract_vs_lld(tmp: Path, long: np.ndarray, repeats: int) -> None:
    """bsfeat extract --workers 1 on 8 rows of 60 s, a fresh store each time, against the
    LLD-only pass over the same 8 minutes, alternated in the same run."""
    folder = tmp / "extract"
    folder.mkdir()
    y = np.tile(long, 4)
    rows = ["audio,split,id"]
    ys = []
    for i in range(8):
        # Each row its own bytes (a slightly different level): the store would find the
        # tiled minutes already stored under their content key and compute them once.
        part = y[i * 60 * SR : (i + 1) * 60 * SR] * np.float32(1.0 - 0.02 * i)
        sf.write(folder / f"s{i}.wav", part, SR)
        ys.append(soxr.resample(part, SR, 16000).astype(np.float32))
        rows.append(f"{folder / f's{i}.wav'},train,s{i}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    exe = [sys.executable, "-m", "blendsync.featurize.cli", "extract", str(folder / "manifest.csv"), "--workers", "1"]
    ratios, walls, llds = [], [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        p = subprocess.run(
            [*exe, "--store", str(folder / f"f{r}.zarr"), "--no-progress"], capture_output=True, text=True
        )
        assert p.returncode == 0 and "(8 computed, 0 cached" in p.stdout, p.stdout + p.stderr[-2000:]
        walls.append(time.perf_counter() - t0)
        llds.append(lld_pass(ys))
        ratios.append(llds[-1] / walls[-1])
    w, lld, ratio = statistics.median(walls), statistics.median(llds), statistics.median(ratios)
    print(
        f"bsfeat extract --workers 1, 480 s: {w:.2f} s wall ({min(walls):.2f}..{max(walls):.2f}) = {480 / w:.0f}x; "
        f"LLD-only pass {lld:.2f} s ({480 / lld:.0f}x); ratio {ratio:.2f} ({min(ratios):.2f}..{max(ratios):.2f})"
    )


def smile_passes(y: np.ndarray) -> dict:
    """openSMILE's own passes over 16 kHz audio, one core: eGeMAPS LLDs only (the package),
    and the functionals every 10 ms over 1 s as bsfeat and predict run them."""
    from blendsync.shared.config import FeatureConfig
    from blendsync.shared.features import _smile

    cfg = FeatureConfig().emotion
    y16 = soxr.resample(y, SR, 16000).astype(np.float32)
    func = _smile(cfg.feature_set, cfg.context_s, cfg.hop_s)
    func.run(y16[:16000], 16000)
    funcs, llds = [], []
    for _ in range(3):  # alternated, the median of each
        t0 = time.perf_counter()
        func.run(y16, 16000)
        funcs.append(time.perf_counter() - t0)
        llds.append(lld_pass([y16]))
    return {"lld": statistics.median(llds), "functionals": statistics.median(funcs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lines", type=int, default=100)
    ap.add_argument("--only", choices=["predict", "extract"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        long = speech(120.0)
        helps = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "blendsync.train.cli", "--help"], check=True, capture_output=True)
            helps.append(time.perf_counter() - t0)
        print(f"bstrain --help: {statistics.median(helps):.2f} s ({min(helps):.2f}..{max(helps):.2f})")
        if args.only != "predict":
            extract_vs_lld(tmp, long, args.repeats)
        if args.only == "extract":
            return
        ck = checkpoint(tmp)
        sf.write(tmp / "dialogue.wav", long, SR)
        lines = tmp / "lines"
        lines.mkdir()
        for i in range(args.lines):
            sf.write(lines / f"line_{i:03d}.wav", long[i * 5 * SR % (len(long) - 5 * SR) :][: 5 * SR], SR)
        line_files = sorted(lines.iterdir())
        rows = {"120 s file": (["dialogue.wav"], 120.0), f"{args.lines} x 5 s lines": (["lines"], 5.0 * args.lines)}
        print(f"cores {os.cpu_count()}; start-up (imports) {statistics.median(startup() for _ in range(3)):.2f} s")
        for label, (inputs, audio_s) in rows.items():
            for extra in ([], ["--no-plot"]):
                walls = []
                for r in range(args.repeats):
                    w, _ = cli(["-q", "predict", *[str(tmp / x) for x in inputs], "--checkpoint", str(ck),
                                "--out", str(tmp / f"out-{r}"), *extra])  # fmt: skip
                    walls.append(w)
                w = statistics.median(walls)
                print(
                    f"CLI {label} {' '.join(extra) or '(plots)'}: {w:.2f} s wall ({min(walls):.2f}..{max(walls):.2f}) "
                    f"= {audio_s / w:.1f}x real time"
                )
            files = [tmp / "dialogue.wav"] if label.startswith("120") else line_files
            ip = in_process(ck, files)
            print(
                f"  in process, warm: {ip['wall']:.2f} s = {audio_s / ip['wall']:.1f}x "
                f"(featurize {ip['featurize']:.2f} s, model {ip['model']:.2f} s, summed over files)"
            )
        sp = smile_passes(long)
        print(
            f"openSMILE over the 120 s, one core: LLD-only {sp['lld']:.2f} s ({120 / sp['lld']:.0f}x), functionals "
            f"every 10 ms {sp['functionals']:.2f} s ({120 / sp['functionals']:.0f}x)"
        )


if __name__ == "__main__":
    main()
