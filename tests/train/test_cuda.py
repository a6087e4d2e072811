"""CUDA: the training step runs without host-device synchronisation, bf16 autocast trains,
torch.compile matches eager, and predict on the GPU gives the CPU's curves.

These run only where CUDA is available (benchmarks/gpu_check.sh runs them on a GPU machine);
elsewhere they skip with that reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blendsync.shared.config import FeatureConfig
from blendsync.train.core.config import TrainConfig
from blendsync.train.loop.trainer import fit
from tests.helpers import make_random_store

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TINY = {
    "preset": "custom",
    "model": {"d_model": 32, "heads": 2, "dropout": 0.0},
    "stream": {"window": 48, "lookahead": 4, "batch_streams": 4, "frames_per_window": 16},
    "optim": {"epochs": 2, "warmup_steps": 2, "lr": 2e-3},
    "diagnostics": {"every_steps": 0},
}


def test_step_never_synchronises_with_the_host():
    """Forward, loss terms, backward, clipping, AdamW and the carried state, with pinned
    non_blocking copies, feature augmentation and a still channel masked out:
    torch.cuda.set_sync_debug_mode('error') raises on any sync."""
    from blendsync.train.core.build import build_model
    from blendsync.train.core.config import AugmentConfig
    from blendsync.train.loop.augment import FeatureAugmenter
    from blendsync.train.loop.step import LossMeter, carry, to_device, train_step

    dev = torch.device("cuda")
    cfg = TrainConfig.from_dict(TINY)
    model = build_model(cfg, FeatureConfig(), 6).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    B, L, K = 4, 48, 16

    def batch(pad: bool, idle: bool):
        b = {
            "mel": rng.normal(size=(B, L, 80)).astype(np.float32),
            "emotion": rng.normal(size=(B, L, 88)).astype(np.float32),
            "frame_mask": np.ones((B, L), bool),
            "target": rng.uniform(size=(B, K, 6)).astype(np.float32),
            "valid": np.ones((B, K), bool),
            "active": np.ones(B, bool),
            "prev_target": rng.uniform(size=(B, 6)).astype(np.float32),
            "has_prev": np.ones(B, bool),
            "file": np.zeros(B, np.int64),
            "frame": np.zeros(B, np.int64),
        }
        if pad:
            b["frame_mask"][0, :10] = False
        if idle:
            b["active"][3] = False
            b["valid"][3] = False
        return b

    still = torch.tensor([False, False, False, False, True, False], device=dev)
    model.set_still(still)
    masks = (torch.zeros(6, dtype=torch.bool, device=dev), torch.ones(6, dtype=torch.bool, device=dev), None, ~still)
    augment = FeatureAugmenter(
        AugmentConfig(gain_db=6.0, time_masks=2, freq_masks=2, emotion_dropout=0.2), np.ones(80, np.float32), dev
    )
    prev = torch.zeros(B, 6, device=dev)
    meter = LossMeter()

    def step(b):
        nonlocal prev
        db = to_device(b, dev)
        opt.zero_grad(set_to_none=True)
        loss, terms, pred = train_step(model, db, prev, cfg, masks, amp=True, augment=augment)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        prev = carry(prev, pred, db.t)
        meter.add(loss, terms)

    kinds = [(False, False), (True, False), (True, True)]
    for pad, idle in kinds:  # warm-up: allocator, kernels, optimizer state
        step(batch(pad, idle))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for pad, idle in kinds * 2:
            step(batch(pad, idle))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert np.isfinite(meter.pop()["loss"])


def test_bf16_training_and_compile_on_the_gpu(tmp_path):
    fs, _ = make_random_store(tmp_path / "s.zarr", [40] * 8, channels=6, seed=1, learnable=True)
    losses = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        cfg = TrainConfig.from_dict({**TINY, "compile": compiled})
        r = fit(fs.root, cfg=cfg, out=tmp_path / f"run-{compiled}", device="cuda")
        losses[compiled] = [h["loss"] for h in r.history if h["kind"] == "train"]
    torch._dynamo.reset()
    assert losses[False][-1] < losses[False][0]
    # bf16 autocast: compiled and eager agree to bf16 rounding, not bit for bit.
    np.testing.assert_allclose(losses[True], losses[False], rtol=5e-2)


def test_predict_on_the_gpu_matches_the_cpu(example_store, tmp_path, shared_data):
    from blendsync.train.inference.predict import Predictor

    cfg = TrainConfig.from_dict({**TINY, "stream": {**TINY["stream"], "window": 64}})
    fit(example_store, cfg=cfg, out=tmp_path / "run", device="cuda", stop_after_steps=5)
    ck = tmp_path / "run" / "checkpoints" / "last.pt"
    audio = shared_data / "speech" / "ljspeech_LJ050-0131_22k.wav"
    cpu = Predictor.load(ck, "cpu").animate(audio)["curves"]
    gpu = Predictor.load(ck, "cuda").animate(audio)["curves"]
    np.testing.assert_allclose(gpu, cpu, atol=2e-3)  # TF32 matmuls on the GPU
