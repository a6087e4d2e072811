"""bstrain pretrain: masked-frame pretraining of both encoders on takes with and without
curves, resumed bit-identically after SIGKILL, and fit --init-from its checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import tiny

from blendsync.train.core.checkpoint import Checkpoint
from blendsync.train.loop.pretrain import STATE_FILE, PretrainConfig, hidden_spans, pretrain
from blendsync.train.loop.trainer import fit


def test_hidden_spans_cover_about_their_share_of_real_frames_only():
    rng = np.random.default_rng(0)
    real = np.ones((64, 200), bool)
    real[:8, 150:] = False
    hidden = hidden_spans(rng, real, 0.15, 10)
    assert not (hidden & ~real).any() and hidden.any(axis=1).all()
    assert 0.08 < hidden[8:].mean() < 0.16  # spans overlap now and then
    edge = np.zeros((1, 50), bool)
    edge[0, 0] = True
    assert hidden_spans(np.random.default_rng(1), edge, 0.15, 10)[0, 0]


def test_pretraining_trains_the_encoders_on_every_item_and_fit_starts_from_them(mixed_store, tmp_path):
    cfg = tiny()
    res = pretrain(mixed_store, cfg=cfg, out=tmp_path / "pre", settings=PretrainConfig(steps=12, checkpoint_every=4))
    assert (res.step, res.items) == (12, 3)  # a1 with curves, a2 and b1 without
    run = json.loads((tmp_path / "pre" / "config.json").read_text())
    assert run["items"] == 3 and run["pretrain"]["steps"] == 12
    history = [json.loads(x) for x in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [4, 8, 12] and all(r["val_loss"] is not None for r in history)
    ck = Checkpoint.load(tmp_path / "pre" / "checkpoints" / "best.pt")
    torch.manual_seed(cfg.seed)
    from blendsync.train.core.build import build_model

    fresh = build_model(cfg, ck.feature_config, len(ck.channels)).state_dict()
    moved = {k for k in fresh if not torch.equal(fresh[k], ck.model_state[k])}
    assert any(k.startswith("mel_stream.") for k in moved) and any(k.startswith("emotion_stream.") for k in moved)
    assert not any(k.startswith(("dual_stream_attention.", "blendshape_queries")) for k in moved)

    from blendsync.train.loop.finetune import InitFrom

    r = fit(mixed_store, cfg=tiny(optim={"epochs": 1}), out=tmp_path / "fit",
            init_from=InitFrom.load(tmp_path / "pre" / "checkpoints" / "best.pt"))  # fmt: skip
    assert r.step > 0
    started = json.loads((tmp_path / "fit" / "config.json").read_text())["init_from"]
    assert started["checkpoint"].endswith("best.pt") and started["channels"]["new"] == []


@pytest.mark.slow
def test_pretraining_resumes_bit_identically_after_sigkill(mixed_store, tmp_path):
    from tests.helpers import sigint_default

    steps, every = 60, 3
    whole = pretrain(mixed_store, cfg=tiny(), out=tmp_path / "whole",
                     settings=PretrainConfig(steps=steps, checkpoint_every=every))  # fmt: skip
    assert whole.step == steps
    cfg_path = tmp_path / "tiny.json"
    cfg_path.write_text(tiny().to_json())
    argv = [sys.executable, "-m", "blendsync.train.cli", "pretrain", "--store", str(mixed_store), "--out",
            str(tmp_path / "killed"), "--config", str(cfg_path), "--steps", str(steps), "--checkpoint-every",
            str(every)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=sigint_default)
    state = tmp_path / "killed" / STATE_FILE
    deadline = time.monotonic() + 300
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(state, weights_only=True)["step"]
    assert 0 < killed_at < steps, killed_at
    res = pretrain(mixed_store, cfg=tiny(), out=tmp_path / "killed", resume=True)
    assert res.step == steps
    a = torch.load(tmp_path / "whole" / STATE_FILE, weights_only=True)
    b = torch.load(state, weights_only=True)
    for part in ("model", "heads"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]


def test_a_run_folder_is_not_overwritten_and_resume_needs_one(mixed_store, tmp_path):
    from blendsync.train.core.data import DataError

    pretrain(mixed_store, cfg=tiny(), out=tmp_path / "p", settings=PretrainConfig(steps=2, checkpoint_every=2))
    with pytest.raises(DataError, match="holds a pretraining run: --resume it"):
        pretrain(mixed_store, cfg=tiny(), out=tmp_path / "p", settings=PretrainConfig(steps=2))
    with pytest.raises(DataError, match="holds no pretraining run to resume"):
        pretrain(mixed_store, cfg=tiny(), out=tmp_path / "none", resume=True)
    (tmp_path / "p" / STATE_FILE).write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="pretrain_state.pt: unreadable"):
        pretrain(mixed_store, cfg=tiny(), out=tmp_path / "p", resume=True)
    shutil.rmtree(tmp_path / "p")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--mask-fraction", "0"], "--mask-fraction"),
        (["--steps", "0"], "--steps"),
        (["--resume", "--preset", "live"], "drop --config"),
    ],
)
def test_bad_pretrain_options_are_one_line(mixed_store, tmp_path, args, says):
    p = subprocess.run([sys.executable, "-m", "blendsync.train.cli", "pretrain", "--store", str(mixed_store), "--out",
                        str(tmp_path / "p"), *args], capture_output=True, text=True)  # fmt: skip
    assert p.returncode == 1 and says in p.stderr, p.stderr
