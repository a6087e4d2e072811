"""Frame blocks: one window predicts K frames.

K = 1 reproduces the per-window model of the method notes (golden values written before
blocks existed); a block frame equals the one-frame model at its window position; the
smoothing through a block and the loss terms equal frame-by-frame references; the step has
no Python branch on tensor values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.train.core.config import LossConfig, ModelConfig, TrainConfig
from blendsync.train.loop.losses import loss_terms, total_loss
from blendsync.train.core.model import BlendshapeModel, smooth_block
from tests.helpers import REPO, assert_close_nested

GOLDEN = Path(__file__).parent / "golden"
CFG = ModelConfig(d_model=16, heads=2, mel_layers=1, emotion_layers=1, dropout=0.0)


def test_one_frame_per_window_reproduces_the_per_window_model():
    """Outputs on fixed inputs, then a short training run (streaming, losses, smoothing,
    optimiser, validation): the same numbers as the model before frame blocks."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_k1_reference", GOLDEN / "make_k1_reference.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    want = json.loads((GOLDEN / "k1_reference.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the golden values were written: reductions split over threads round differently
    try:
        assert_close_nested(ref.model_outputs(), want["model"], "model")
        assert_close_nested(ref.training_run(), want["fit"], "fit")
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("capability", ["avx2", "default"])
def test_the_golden_references_hold_on_other_cpu_kernel_sets(capability):
    """The golden values above and the CLI's hold under the kernels another x86-64 machine
    would run (AVX2 without AVX-512; no SIMD): torch picks them by ATEN_CPU_CAPABILITY at
    start-up, so each runs in a fresh process."""
    import os
    import subprocess
    import sys

    tests = [
        "tests/train/test_frame_blocks.py::test_one_frame_per_window_reproduces_the_per_window_model",
        "tests/train/test_golden_cli.py::test_a_tiny_cli_run_logs_the_golden_losses",
    ]
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def _inputs(B=3, L=24, C=5, seed=0, pad=True):
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(B, L, 80, generator=g)
    emo = torch.randn(B, L, 88, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    if pad:
        mask[0, :5] = False
        mask[B - 1, -3:] = False
    prev = torch.rand(B, C, generator=g)
    has_prev = torch.tensor([False] + [True] * (B - 1))
    return mel, emo, mask, prev, has_prev


def _model(K, L=24, la=3, C=5):
    torch.manual_seed(1)
    return BlendshapeModel(n_mels=80, n_emotion=88, channels=C, window=L, cfg=CFG, lookahead=la,
                           frames_per_window=K)


def test_block_frame_is_the_one_frame_model_at_its_window_position():
    """Frame j of a block = the block's shared cross-attention context + each stream's
    encoding at window position L - K - lookahead + j, decoded: exactly what the one-frame
    model with the same weights computes with its target at that position."""
    L, la, K = 24, 3, 6
    block = _model(K, L, la).train()
    one = _model(1, L, la).train()
    one.load_state_dict(block.state_dict())
    mel, emo, mask, _, _ = _inputs(L=L)
    with torch.no_grad():
        got = block(mel, emo, mask)["current"]
        assert got.shape == (3, K, 5)
        for j in range(K):
            p = L - K - la + j
            one.positions = (p, p + 1)
            torch.testing.assert_close(got[:, j], one(mel, emo, mask)["current"][:, 0], rtol=1e-5, atol=1e-6)


def _reference_smoothing(current, prev, has_prev, alpha):
    """The recursion frame by frame, as the method notes write it for one output per window."""
    out = []
    last = prev
    for j in range(current.shape[1]):
        c = current[:, j]
        if j == 0:
            s = torch.where(has_prev[:, None], alpha * c + (1 - alpha) * last.detach(), c)
        else:
            s = alpha * c + (1 - alpha) * last.detach()
        out.append(s)
        last = s
    return torch.stack(out, dim=1)


@settings(max_examples=60, deadline=None)
@given(K=st.integers(1, 40), B=st.integers(1, 4), logit=st.floats(-4, 4), seed=st.integers(0, 1000))
def test_block_smoothing_equals_the_frame_by_frame_recursion(K, B, logit, seed):
    g = torch.Generator().manual_seed(seed)
    current = torch.rand(B, K, 3, generator=g)
    prev = torch.rand(B, 3, generator=g)
    has_prev = torch.rand(B, generator=g) > 0.5
    upstream = torch.randn(B, K, 3, generator=g)
    grads = []
    outs = []
    for fn in (smooth_block, _reference_smoothing):
        c = current.clone().requires_grad_(True)
        p = prev.clone().requires_grad_(True)
        a_logit = torch.tensor(logit, requires_grad=True)
        out = fn(c, p, has_prev, torch.sigmoid(a_logit))
        (out * upstream).sum().backward()
        outs.append(out.detach())
        grads.append((c.grad, a_logit.grad, p.grad))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)  # current: the local term only
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-5)  # alpha
    assert grads[0][2] is None and grads[1][2] is None  # no gradient into the past


def test_model_smooths_through_the_block_from_the_carried_frame():
    m = _model(4).train()
    mel, emo, mask, prev, has_prev = _inputs()
    out = m(mel, emo, mask, prev, has_prev)
    want = _reference_smoothing(out["current"].detach(), prev, has_prev, torch.sigmoid(m.smoothing_alpha.detach()))
    torch.testing.assert_close(out["smoothed"].detach(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["smoothed"][0, 0], out["current"][0, 0])  # file start: not smoothed


def _reference_terms(pred, target, prev_pred, prev_target, valid, has_prev, mouth, expression):
    """Every term from explicit (row, frame) loops: the block as K one-frame windows in a row."""
    B, K, C = pred.shape
    se, ab, mo, ex, co, te = [], [], [], [], [], []
    for b in range(B):
        for j in range(K):
            if not valid[b, j]:
                continue
            e = pred[b, j] - target[b, j]
            se += (e**2).tolist()
            ab += e.abs().tolist()
            mo += (e[mouth] ** 2).tolist()
            ex += (e[expression] ** 2).tolist()
            if j == 0 and not has_prev[b]:
                continue
            pp, pt = (prev_pred[b], prev_target[b]) if j == 0 else (pred[b, j - 1], target[b, j - 1])
            dp, dt = pred[b, j] - pp, target[b, j] - pt
            co += ((dp - dt) ** 2).tolist()
            te += (dp**2).tolist()
    mean = (lambda xs: float(np.mean(xs)) if xs else 0.0)
    return {"mse": mean(se), "l1": mean(ab), "mouth": mean(mo), "expression": mean(ex), "consistency": mean(co),
            "temporal": mean(te)}


@settings(max_examples=40, deadline=None)
@given(K=st.integers(1, 6), B=st.integers(1, 3), seed=st.integers(0, 1000))
def test_block_loss_terms_equal_frame_by_frame_terms(K, B, seed):
    rng = np.random.default_rng(seed)
    C = 5
    pred = torch.from_numpy(rng.uniform(size=(B, K, C)).astype(np.float32))
    target = torch.from_numpy(rng.uniform(size=(B, K, C)).astype(np.float32))
    prev_pred = torch.from_numpy(rng.uniform(size=(B, C)).astype(np.float32))
    prev_target = torch.from_numpy(rng.uniform(size=(B, C)).astype(np.float32))
    n_real = rng.integers(0, K + 1, size=B)  # valid frames are a prefix of the block
    valid = torch.from_numpy(np.arange(K)[None, :] < n_real[:, None])
    has_prev = torch.from_numpy(rng.uniform(size=B) > 0.4)
    mouth = torch.tensor([True, True, False, False, False])
    expression = torch.tensor([False, False, True, False, False])
    got = loss_terms(pred, target, prev_pred, prev_target, valid, has_prev, mouth, expression)
    want = _reference_terms(pred, target, prev_pred, prev_target, valid, has_prev, mouth, expression)
    for k, v in want.items():
        assert got[k].item() == pytest.approx(v, rel=1e-5, abs=1e-7), k
    assert torch.isfinite(total_loss(got, LossConfig()))


def test_every_parameter_gets_a_gradient_with_blocks_and_none_flows_into_the_past():
    m = _model(5).train()
    mel, emo, mask, prev, has_prev = _inputs()
    prev.requires_grad_(True)
    out = m(mel, emo, mask, prev, has_prev)
    target = torch.rand_like(out["smoothed"])
    valid = torch.ones(3, 5, dtype=torch.bool)
    terms = loss_terms(out["smoothed"], target, prev, torch.rand_like(prev), valid, has_prev,
                       torch.tensor([1, 1, 0, 0, 0], dtype=torch.bool), torch.tensor([0, 0, 1, 1, 0], dtype=torch.bool))
    total_loss(terms, LossConfig()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
    assert prev.grad is None


def test_no_padding_mask_gives_the_same_outputs():
    """The host passes frame_mask=None for batches without padding (the attention's faster
    path); the outputs are those of an all-True mask."""
    m = _model(4).eval()
    mel, emo, mask, prev, has_prev = _inputs(pad=False)
    with torch.no_grad():
        a = m(mel, emo, mask, prev, has_prev)["smoothed"]
        b = m(mel, emo, None, prev, has_prev)["smoothed"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_step_has_no_python_branch_on_tensor_values():
    """TorchDynamo traces forward + the six loss terms + the carried state into one graph:
    a `.item()`, `bool(tensor)` or data-dependent branch would break it (on a GPU, a host
    synchronisation every step)."""
    import torch._dynamo

    from blendsync.train.loop.step import last_frames

    m = _model(4).train()
    mel, emo, mask, prev, has_prev = _inputs()
    target = torch.rand(3, 4, 5)
    valid = torch.ones(3, 4, dtype=torch.bool)
    valid[2, 2:] = False
    groups = (torch.tensor([1, 1, 0, 0, 0], dtype=torch.bool), torch.tensor([0, 0, 1, 1, 0], dtype=torch.bool))

    def step(mel, emo, mask, prev, has_prev, target, valid):
        pred = m(mel, emo, mask, prev, has_prev)["smoothed"]
        terms = loss_terms(pred, target, prev, prev, valid, has_prev, *groups)
        return total_loss(terms, LossConfig()), last_frames(pred, valid)

    torch._dynamo.reset()
    report = torch._dynamo.explain(step)(mel, emo, mask, prev, has_prev, target, valid)
    assert report.graph_break_count == 0, report.break_reasons
    torch._dynamo.reset()


@pytest.mark.parametrize("bad, match", [
    ({"stream": {"window": 32, "lookahead": 6, "frames_per_window": 27}}, r"\[1, 26\], got 27"),
    ({"stream": {"frames_per_window": 0}}, "frames_per_window"),
    ({"stream": {"frames_per_window": 4}, "model": {"target_frame_residual": False}}, "target_frame_residual"),
    ({"compile": "yes"}, "compile must be true or false"),
])
def test_bad_block_settings_are_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict(bad)


def test_checkpoints_from_before_blocks_load_as_one_frame_per_window():
    old = TrainConfig().to_dict()
    del old["stream"]["frames_per_window"]
    assert TrainConfig.from_checkpoint_json(json.dumps(old)).stream.frames_per_window == 1
    assert TrainConfig.from_json(json.dumps(old)).stream.frames_per_window == TrainConfig().stream.frames_per_window
