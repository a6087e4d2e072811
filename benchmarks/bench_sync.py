#!/usr/bin/env python3
"""Sync estimate error over known shifts: real speech (curves derived from it) and the real
custom-rig takes (their own curves), shifted by -10 … +10 frames at 30 fps.

    python benchmarks/bench_sync.py [--shifts 30] [--search-s 0.5]

--shifts N: shifts of -N … +N frames (default 10); --search-s: the search half-width
(SyncConfig.max_lag_s; default the estimator's, 1.5 s).

The baseline is no sync check (every take assumed in step: error = the shift). Prints, per
source, the estimate's mean and largest absolute error in frames, the share within ±1 frame,
how many wrong estimates (> 1 frame off) were trusted (confidence >= 0.25: listed and
shifted by --auto-sync), and the ratio of the baseline's mean error to ours. The custom-rig curves are real: the truth
is the unshifted take's own estimate plus the shift (their mouth-opening channel,
mouth_suck_dl, is named with --sync-channels as a user of that rig would).

Reads ../shared/data (or BLENDSYNC_SHARED_DATA).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from blendsync.shared.audio import decode_audio
from blendsync.shared.channels import ARKIT_52
from blendsync.shared.config import FeatureConfig
from blendsync.shared.features import compute_features
from blendsync.shared.frame_grid import n_frames
from blendsync.shared.sync import SyncConfig, estimate_lag

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "tests"))
from helpers import lead, mouth_from_speech  # noqa: E402  (the tests' derived curves)

CFG = FeatureConfig()
LAGS = range(-10, 11)


def mel_of(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    dec = decode_audio(path, CFG.sample_rate)
    T = n_frames(dec.duration_s, CFG.fps)
    return compute_features(dec.samples, dec.sample_rate, T, CFG)["mel"].values, dec.samples, T


def errors(mel, targets, names, sync: SyncConfig, offset: int = 0) -> list[tuple[int, bool]]:
    """(error in frames, trusted) per shift."""
    out = []
    for lag in LAGS:
        est = estimate_lag(mel, lead(targets, lag), names, CFG.fps, sync)
        out.append((99 if est.lag_frames is None else est.lag_frames - lag - offset, est.trusted(sync)))
    return out


def row(name: str, errs: list[tuple[int, bool]], seconds: float) -> None:
    e = np.abs(np.array([x for x, _ in errs]))
    trusted = np.array([t for _, t in errs])
    base = np.mean([abs(lag) for lag in LAGS])
    ratio = f"{base / e.mean():8.1f}x" if e.mean() else "    exact"
    print(
        f"{name:34s} {len(errs):5d} {e.mean():9.2f} {e.max():5d} {np.mean(e <= 1):8.0%} "
        f"{int(np.sum((e > 1) & trusted)):8d} {base:9.2f} {ratio} {1000 * seconds / len(errs):7.1f}"
    )


def main() -> None:
    import argparse

    global LAGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shifts", type=int, default=10)
    ap.add_argument("--search-s", type=float, default=SyncConfig().max_lag_s)
    args = ap.parse_args()
    LAGS = range(-args.shifts, args.shifts + 1)
    search = args.search_s
    print(f"shifts {LAGS[0]} … +{LAGS[-1]} frames; search ±{search} s")
    print(
        f"{'source':34s} {'takes':>5s} {'mean|err|':>9s} {'max':>5s} {'<=1 fr':>8s} {'wrong+tr':>8s} {'baseline':>9s} "
        f"{'ratio':>9s} {'ms/est':>7s}"
    )
    allerr = []
    for wav in sorted((DATA / "speech").iterdir()):
        mel, y, T = mel_of(wav)
        if T < 4 * 15:
            print(f"{wav.name:34s} skipped: {T} frames, shorter than 4 x the narrowest (±0.5 s) search")
            continue
        targets = np.zeros((T, 52), np.float32)
        targets[:, ARKIT_52.index("jawOpen")] = mouth_from_speech(y, CFG.sample_rate, T, CFG.fps)
        t0 = time.process_time()
        errs = errors(mel, targets, ARKIT_52, SyncConfig(max_lag_s=search))
        row(wav.name, errs, time.process_time() - t0)
        allerr += errs
    names = (DATA / "custom_rig" / "channel_names.txt").read_text().split()[1:]
    rig = SyncConfig(channels=("mouth_suck_dl",), max_lag_s=search)
    for take in ("1114_3_15", "1114_3_16"):
        mel, _, T = mel_of(DATA / "custom_rig" / f"{take}.wav")
        curves = np.load(DATA / "custom_rig" / f"bs_value_{take}.npy")
        T = min(T, len(curves))
        mel, curves = mel[:T], curves[:T].astype(np.float32)
        own = estimate_lag(mel, curves, names, CFG.fps, rig)
        print(f"{take + ' as recorded':34s} {own.describe()}")
        t0 = time.process_time()
        errs = errors(mel, curves, names, rig, offset=own.lag_frames)
        row(f"{take} (real curves)", errs, time.process_time() - t0)
        allerr += errs
    row("all", allerr, 0.0)


if __name__ == "__main__":
    main()
