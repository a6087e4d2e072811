"""bstrain fit on 2 processes (torchrun, gloo on CPU): file sharding, loss, resume."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.train.core.checkpoint import load_checkpoint
from blendsync.train.core.config import TrainConfig
from blendsync.train.core.windows import target_frames
from blendsync.train.loop.streaming import StreamSchedule, WindowStream, plan_epoch
from tests.helpers import make_random_store


@settings(max_examples=80, deadline=None)
@given(
    frames=st.lists(st.integers(1, 50), min_size=1, max_size=10),
    streams=st.integers(1, 4),
    world=st.integers(1, 4),
    stride=st.integers(1, 3),
    block=st.sampled_from([1, 2, 5, 32]),
    epoch=st.integers(0, 3),
)
def test_every_target_frame_once_across_ranks_and_equal_step_counts(frames, streams, world, stride, block, epoch):
    per = plan_epoch(frames, streams * world, stride, 0, epoch, block=block)
    full = StreamSchedule.build(per, frames, block, stride)
    seen = {}
    for rank in range(world):
        rows = slice(rank * streams, (rank + 1) * streams)
        f, k = full.file[rows], full.frame[rows]
        assert f.shape[1] == full.steps  # same number of steps on every rank
        for fi, ki in zip(f[f >= 0], k[f >= 0]):
            for frame in range(int(ki), min(int(ki) + block, frames[fi])):
                seen[(int(fi), frame)] = seen.get((int(fi), frame), 0) + 1
    assert seen == {(i, int(kk)): 1 for i, T in enumerate(frames) for kk in target_frames(T, block, stride)}


def test_window_stream_rank_rows(tmp_path):
    from blendsync.train.core.data import FileRef
    from blendsync.train.core.normalization import Normalizer

    lengths = [30, 12, 45, 7, 22]
    fs, keys = make_random_store(tmp_path / "s.zarr", lengths)
    files = [FileRef(k, T, k) for k, T in zip(keys, lengths)]
    z, o = np.zeros, np.ones
    norm = Normalizer(
        mel_mean=z(80, np.float32),
        mel_std=o(80, np.float32),
        emotion_mean=z(88, np.float32),
        emotion_std=o(88, np.float32),
        target_mean=z(5, np.float32),
    )
    seen = []
    steps = set()
    for rank in range(2):
        ws = WindowStream(fs, files, norm, window=8, lookahead=2, stride=1, streams=2, block=3, rank=rank, world=2)
        batches = list(ws.epoch(0))
        steps.add(len(batches))
        for b in batches:
            seen += [
                (int(f), int(k) + j) for f, k, v in zip(b["file"], b["frame"], b["valid"]) for j in np.flatnonzero(v)
            ]
    assert len(steps) == 1 and sorted(seen) == sorted((i, k) for i, T in enumerate(lengths) for k in range(T))


def _torchrun(args, tmp_path):
    cmd = [sys.executable, "-m", "blendsync.train.cli", "-q", "fit", "--nproc", "2", "--no-progress", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


@pytest.mark.slow  # torchrun with two training processes
def test_two_processes_train_and_resume(tmp_path):
    fs, _ = make_random_store(tmp_path / "s.zarr", [12] * 8, channels=5, seed=3, learnable=True)
    cfg = TrainConfig.from_dict(
        {
            "preset": "custom",
            "model": {"d_model": 16, "heads": 2, "dropout": 0.0},
            # No phase shift: a fixed number of blocks per epoch (counted below).
            "stream": {"window": 32, "lookahead": 4, "batch_streams": 2, "frames_per_window": 3, "phase_jitter": False},
            "optim": {"epochs": 12, "warmup_steps": 5, "lr": 3e-3},
            "diagnostics": {"every_steps": 0},
        }
    )
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    common = ["--store", str(fs.root), "--config", str(tmp_path / "c.yaml")]
    _torchrun([*common, "--out", str(tmp_path / "whole")], tmp_path)
    recs = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    assert train[-1]["loss"] < 0.5 * max(r["loss"] for r in train[:2])  # loss decreases
    ck = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    assert ck["world_size"] == 2 and ck["prev_all"].shape[:2] == (2, 2) and ck["rng_cpu_all"].shape[0] == 2
    # 7 training files (the stable split sends one of the 8 to validation) x 12 frames in
    # blocks of 3 over 2 ranks x 2 streams: 28 blocks, 7 steps per epoch with every row busy.
    assert ck["step"] == 12 * 7
    # Stop part-way, resume on 2 processes: the same parameters as the uninterrupted run.
    _torchrun([*common, "--out", str(tmp_path / "part"), "--stop-after-steps", "45"], tmp_path)
    assert load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["step"] == 45
    _torchrun(["--store", str(fs.root), "--out", str(tmp_path / "part"), "--resume"], tmp_path)
    a = ck["model"]
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
