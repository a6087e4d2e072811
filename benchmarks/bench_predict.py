#!/usr/bin/env python3
"""predict real-time factor on this CPU (audio seconds per second, featurize included), split
into featurize and model time, for the small and full presets at K = 1 (one output per
window) and at other frames-per-window K in the same run; the chunked (streaming) latency at
each K; and onnxruntime vs PyTorch on the same windows.

Models are untrained (timing does not depend on the weights). Checkpoints come from one
training step on the example store (built in a temporary folder).

    python benchmarks/bench_predict.py [--audio FILE] [--ks 1,32] [--presets small,full] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from blendsync.featurize.extract import extract
from blendsync.shared.config import FeatureConfig
from blendsync.shared.featurize_file import featurize_file
from blendsync.train.core.config import ConfigOverrides, TrainConfig
from blendsync.train.inference.chunked import animate_chunked
from blendsync.train.inference.predict import Predictor
from blendsync.train.loop.trainer import fit

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data"))
    ap.add_argument("--audio", type=Path, default=data / "speech" / "ljspeech_LJ050-0131_22k.wav")
    ap.add_argument("--ks", default=f"1,{TrainConfig().stream.frames_per_window}")
    ap.add_argument("--presets", default="small,full")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-seconds", type=float, default=0.5)
    ap.add_argument("--no-ort", action="store_true")
    ap.add_argument("--device", default="cpu", help="Where the model runs (featurize is on the CPU).")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = tmp / "f.zarr"
        extract(REPO / "data_manifest.csv", store, FeatureConfig(), executor="serial")
        dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
        print(
            f"audio: {args.audio.name}; model on {args.device} ({dev}), torch threads {torch.get_num_threads()}; "
            f"median (min-max) of {args.repeats} runs"
        )
        for preset in args.presets.split(","):
            base = None
            for K in [int(k) for k in args.ks.split(",")]:
                run = tmp / f"{preset}-{K}"
                cfg = TrainConfig().replace(optim={"epochs": 1}, stream={"stride": 64, "frames_per_window": K})
                fit(store, cfg=cfg, out=run, overrides=ConfigOverrides(preset=preset), stop_after_steps=1, device="cpu")
                p = Predictor.load(run / "checkpoints" / "last.pt", args.device)
                p.animate(args.audio)  # warm-up
                runs = [p.animate(args.audio) for _ in range(1 if preset == "full" and K == 1 else args.repeats)]
                rtf = sorted(r["duration_s"] / (r["featurize_s"] + r["model_s"]) for r in runs)
                res = runs[int(np.argsort([r["featurize_s"] + r["model_s"] for r in runs])[len(runs) // 2])]
                med = rtf[len(rtf) // 2]
                base = base or med
                chunked = animate_chunked(p, args.audio, args.chunk_seconds)
                print(
                    f"{preset:5s} K = {K:3d}: {med:7.2f}x real time ({rtf[0]:.2f}-{rtf[-1]:.2f}; "
                    f"{med / base:5.1f}x K = {args.ks.split(',')[0]}) "
                    f"(featurize {res['featurize_s']:.2f} s = {res['duration_s'] / res['featurize_s']:.1f}x, "
                    f"model {res['model_s']:.2f} s = {res['duration_s'] / res['model_s']:.2f}x) for "
                    f"{res['duration_s']:.2f} s; chunked at {args.chunk_seconds} s: latency "
                    f"{1000 * chunked['latency_s']:.0f} ms + compute "
                    f"{1000 * chunked['model_s'] / chunked['duration_s']:.0f} ms per audio second",
                    flush=True,
                )
                if preset == "small" and not args.no_ort:
                    bench_ort(p, run, args.audio)


def bench_ort(p: Predictor, run: Path, audio: Path) -> None:
    import onnxruntime as ort

    from blendsync.train.core.windows import cut, frame_mask, pad_frames
    from blendsync.train.inference.export import INPUTS, export, exported_model

    export(run / "checkpoints" / "last.pt", run / "m.onnx", "onnx")
    ff = featurize_file(audio, None, p.feature_config)
    L, la, K = p.window, p.lookahead, p.frames_per_window
    pm, pe = pad_frames(ff.mel, L, la, block=K), pad_frames(ff.emotion, L, la, block=K)
    pk = frame_mask(ff.frames, L, la, block=K)
    B = 64
    ks = range(0, min(B * K, ff.frames), K)
    feeds = {
        "mel": np.stack([cut(pm, k, L) for k in ks]),
        "emotion": np.stack([cut(pe, k, L) for k in ks]),
        "frame_mask": np.stack([cut(pk, k, L) for k in ks]),
        "prev": np.zeros((len(ks), len(p.channels)), np.float32),
        "has_prev": np.zeros(len(ks), bool),
    }
    sess = ort.InferenceSession(str(run / "m.onnx"), providers=["CPUExecutionProvider"])
    wrapped = exported_model(p.model, p.norm)
    targs = [torch.from_numpy(feeds[k]) for k in INPUTS]

    def t_ort():
        sess.run(None, feeds)

    def t_torch():
        with torch.no_grad():
            wrapped(*targs)

    res = {}
    for name, fn in (("onnxruntime", t_ort), ("pytorch", t_torch)):
        fn()
        t0 = time.perf_counter()
        for _ in range(3):
            fn()
        res[name] = 3 * len(ks) * K / (time.perf_counter() - t0)
    print(
        f"  small K = {K}, {len(ks)} windows a batch: onnxruntime {res['onnxruntime']:.1f} frames/s vs PyTorch "
        f"{res['pytorch']:.1f} frames/s = {res['onnxruntime'] / res['pytorch']:.2f}x"
    )


if __name__ == "__main__":
    main()
