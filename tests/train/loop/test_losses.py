"""Loss presets, per-channel scaling and the amplitude term."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.train.core.config import LOSS_PRESETS, LOSS_TERMS, LossConfig, TrainConfig
from blendsync.train.loop.losses import channel_scale, loss_terms, total_loss


def _batch(B=3, K=5, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(B, K, C, generator=g) * 0.3
    target = torch.rand(B, K, C, generator=g) * 0.3
    prev_pred, prev_target = torch.rand(B, C, generator=g), torch.rand(B, C, generator=g)
    valid = torch.ones(B, K, dtype=torch.bool)
    valid[1, 3:] = False
    has_prev = torch.tensor([True, False, True])[:B]
    mouth = torch.tensor([True, True, False, False])[:C]
    expr = torch.tensor([False, False, True, False])[:C]
    return pred, target, prev_pred, prev_target, valid, has_prev, mouth, expr


def test_the_notes_preset_is_the_method_notes_loss_exactly():
    n = LOSS_PRESETS["notes"]
    assert (n.mse, n.l1, n.mouth, n.expression, n.consistency, n.temporal, n.amplitude, n.scale) == (
        1.0,
        0.1,
        0.5,
        0.5,
        0.2,
        0.1,
        0.0,
        "none",
    )
    terms = loss_terms(*_batch())
    want = (
        terms["mse"]
        + 0.1 * terms["l1"]
        + 0.5 * terms["mouth"]
        + 0.5 * terms["expression"]
        + 0.2 * terms["consistency"]
        + 0.1 * terms["temporal"]
    )
    assert torch.allclose(total_loss(terms, n), want)


def test_preset_by_name_with_overrides_and_old_checkpoints_read_as_notes():
    cfg = TrainConfig.from_dict({"loss": {"preset": "notes", "temporal": 0.0}})
    assert cfg.loss.preset == "notes" and cfg.loss.temporal == 0.0 and cfg.loss.l1 == 0.1
    assert TrainConfig.from_json(cfg.to_json()) == cfg  # the canonical form keeps every weight
    assert TrainConfig.from_dict({"loss": {"preset": "mse"}}).loss == LOSS_PRESETS["mse"]
    assert TrainConfig().loss == LOSS_PRESETS["default"]
    old = TrainConfig().to_dict()
    # What checkpoints before presets stored: the six weights, which were the notes' values.
    old["loss"] = {"mse": 1.0, "l1": 0.1, "mouth": 0.5, "expression": 0.5, "consistency": 0.2, "temporal": 0.1}
    del old["validation"], old["stream"]["phase_jitter"]
    back = TrainConfig.from_checkpoint_json(json.dumps(old))
    assert back.loss == LOSS_PRESETS["notes"] and not back.stream.phase_jitter
    assert back.validation.holdout_tail == 0 and back.validation.metric == "loss"


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"loss": {"preset": "fancy"}}, "loss.preset"),
        ({"loss": {"scale": "minmax"}}, "loss.scale"),
        ({"loss": {"l1": -0.1}}, "loss.l1 must be >= 0, got -0.1"),
        ({"loss": {"scale_floor": 0}}, "scale_floor"),
        ({"validation": {"metric": "accuracy"}}, "validation.metric"),
        ({"validation": {"holdout_tail": 1.0}}, "holdout_tail"),
    ],
)
def test_bad_loss_and_validation_settings_are_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict(bad)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), floor=st.floats(0.001, 0.2))
def test_scaled_terms_are_the_terms_of_the_scaled_curves(seed, floor):
    b = _batch(seed=seed)
    std = np.array([0.3, 0.02, 0.0, 0.1], np.float32)
    s = channel_scale(LossConfig(scale="target_std", scale_floor=floor), std)
    assert np.allclose(s, np.maximum(std, floor))
    st_ = torch.from_numpy(s)
    pred, target, pp, pt, valid, has_prev, mouth, expr = b
    got = loss_terms(*b, scale=st_)
    want = loss_terms(pred / st_, target / st_, pp / st_, pt / st_, valid, has_prev, mouth, expr)
    for k in LOSS_TERMS:
        assert torch.allclose(got[k], want[k], atol=1e-6), k
    assert channel_scale(LossConfig(scale="none"), std) is None


def test_amplitude_term_is_the_gap_between_spreads_over_real_frames():
    pred, target, pp, pt, valid, has_prev, mouth, expr = _batch()
    got = loss_terms(pred, target, pp, pt, valid, has_prev, mouth, expr)["amplitude"]
    m = valid.reshape(-1).numpy()
    p = pred.reshape(-1, 4).numpy()[m].astype(np.float64)
    t = target.reshape(-1, 4).numpy()[m].astype(np.float64)
    assert np.isclose(float(got), ((p.std(0) - t.std(0)) ** 2).mean(), atol=1e-6)
    # A prediction with the target's movement scores 0; a flat one the target's variance.
    same = loss_terms(target.clone(), target, pp, pt, valid, has_prev, mouth, expr)["amplitude"]
    flat = loss_terms(torch.full_like(target, 0.1), target, pp, pt, valid, has_prev, mouth, expr)["amplitude"]
    assert float(same) < 1e-6 and np.isclose(float(flat), (t.std(0) ** 2).mean(), rtol=1e-2)
    # It pushes a too-flat prediction to move more.
    shrunk = (0.2 * (target - target.mean()) + target.mean()).requires_grad_(True)
    loss_terms(shrunk, target, pp, pt, valid, has_prev, mouth, expr)["amplitude"].backward()
    step = -shrunk.grad
    spread_after = (shrunk + 10 * step).detach()[valid].std(0)
    assert (spread_after > shrunk.detach()[valid].std(0)).all()
    no_frames = torch.zeros_like(valid)
    assert float(loss_terms(pred, target, pp, pt, no_frames, has_prev, mouth, expr)["amplitude"]) == 0


def test_zero_weights_leave_their_terms_out():
    terms = loss_terms(*_batch())
    terms["l1"] = torch.tensor(float("nan"))  # a term with weight 0 must not even be multiplied
    assert torch.isfinite(total_loss(terms, LOSS_PRESETS["mse"]))
    assert torch.allclose(total_loss(terms, LOSS_PRESETS["mse"]), terms["mse"])
