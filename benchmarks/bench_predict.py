#!/usr/bin/env python3
"""predict real-time factor on this CPU (audio seconds per second), split into featurize and
model time, for the small and full presets; and onnxruntime vs PyTorch on the same windows.

Models are untrained (timing does not depend on the weights). Checkpoints come from one
training step on the example store (built in a temporary folder).

    python benchmarks/bench_predict.py [--audio ../shared/data/speech/cmu_arctic_a0007_16k.wav]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from blendsync.featurize.extract import extract
from blendsync.shared.config import FeatureConfig
from blendsync.shared.featurize_file import featurize_file
from blendsync.train.config import TrainConfig
from blendsync.train.loop import fit
from blendsync.train.predict import Predictor

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", type=Path, default=REPO.parent / "shared" / "data" / "speech" / "cmu_arctic_a0007_16k.wav")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = tmp / "f.zarr"
        extract(REPO / "data_manifest.csv", store, FeatureConfig(), executor="serial")
        print(f"audio: {args.audio.name}; torch threads {torch.get_num_threads()}")
        for preset in ("small", "full"):
            run = tmp / preset
            fit(store, cfg=TrainConfig().replace(optim={"epochs": 1}, stream={"stride": 64}), out=run,
                preset=preset, stop_at_step=1)
            p = Predictor.load(run / "checkpoints" / "last.pt")
            p.animate(args.audio)  # warm-up
            res = p.animate(args.audio)
            total = res["featurize_s"] + res["model_s"]
            print(f"{preset:5s}: {res['duration_s'] / total:7.2f}x real time "
                  f"(featurize {res['featurize_s']:.2f} s = {res['duration_s'] / res['featurize_s']:.1f}x, "
                  f"model {res['model_s']:.2f} s = {res['duration_s'] / res['model_s']:.2f}x) for "
                  f"{res['duration_s']:.2f} s; latency = lookahead {p.lookahead / p.fps * 1000:.0f} ms + "
                  f"model {1000 * res['model_s'] / res['curves'].shape[0]:.1f} ms per frame")
            if preset == "small":
                bench_ort(p, run, args.audio)


def bench_ort(p: Predictor, run: Path, audio: Path) -> None:
    import onnxruntime as ort

    from blendsync.train.export import INPUTS, ExportedModel, export
    from blendsync.train.windows import cut, frame_mask, pad_frames

    export(run / "checkpoints" / "last.pt", run / "m.onnx", "onnx")
    ff = featurize_file(audio, None, p.feature_config)
    L, la = p.window, p.lookahead
    pm, pe, pk = pad_frames(ff.mel, L, la), pad_frames(ff.emotion, L, la), frame_mask(ff.frames, L, la)
    B = 64
    ks = range(min(B, ff.frames))
    feeds = {
        "mel": np.stack([cut(pm, k, L) for k in ks]), "emotion": np.stack([cut(pe, k, L) for k in ks]),
        "frame_mask": np.stack([cut(pk, k, L) for k in ks]),
        "prev": np.zeros((len(ks), len(p.channels)), np.float32), "has_prev": np.zeros(len(ks), bool),
    }
    sess = ort.InferenceSession(str(run / "m.onnx"), providers=["CPUExecutionProvider"])
    wrapped = ExportedModel(p.model, p.norm).eval()
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
        res[name] = 3 * len(ks) / (time.perf_counter() - t0)
    print(f"small, {len(ks)} windows a batch: onnxruntime {res['onnxruntime']:.1f} windows/s vs PyTorch "
          f"{res['pytorch']:.1f} windows/s = {res['onnxruntime'] / res['pytorch']:.2f}x")


if __name__ == "__main__":
    main()
