"""Skill, per-channel r and amplitude ratio, overall and per group."""

from __future__ import annotations

import numpy as np

from blendsync.train.core.metrics import ACTIVE_STD, motion_metrics, regression_metrics


def _curves(T=600, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 30
    moving = np.stack([0.3 + 0.2 * np.sin(2 * np.pi * f * t) for f in (0.5, 1.3, 2.1)], axis=1)
    flat = np.full((T, 2), 0.05) + rng.normal(scale=ACTIVE_STD / 10, size=(T, 2))
    return np.concatenate([moving, flat], axis=1), ["a", "b", "c", "d", "e"]


def test_a_shrunk_prediction_has_full_r_and_its_amplitude_ratio():
    target, ch = _curves()
    mean = target.mean(axis=0)
    pred = mean + 0.25 * (target - mean)
    mm = motion_metrics(pred, target)
    assert mm["active"].tolist() == [True, True, True, False, False]
    assert np.allclose(mm["r"], 1.0) and np.allclose(mm["amplitude"], 0.25)
    m = regression_metrics(pred, target, mean, ch, {"moving": ["a", "b"], "still": ["d", "e"]})
    assert m["active_channels"] == 3 and np.isclose(m["mean_r"], 1.0) and np.isclose(m["amplitude_ratio"], 0.25)
    assert 0 < m["skill"] < 1
    g = m["groups"]
    assert g["moving"]["active_channels"] == 2 and np.isclose(g["moving"]["amplitude_ratio"], 0.25)
    assert g["still"]["active_channels"] == 0 and g["still"]["mean_r"] is None and g["still"]["skill"] is not None
    assert m["per_channel"]["a"]["active"] and not m["per_channel"]["d"]["active"]


def test_a_flat_prediction_scores_zero_motion_not_missing():
    target, ch = _curves()
    mean = target.mean(axis=0)
    pred = np.repeat(mean[None], target.shape[0], axis=0)
    m = regression_metrics(pred, target, mean, ch, {})
    assert m["skill"] == 0.0 and m["amplitude_ratio"] == 0.0 and m["mean_r"] == 0.0
    assert m["per_channel"]["a"]["pearson_r"] is None  # undefined for a constant prediction
    inverted = mean - (target - mean)
    assert np.isclose(regression_metrics(inverted, target, mean, ch, {})["mean_r"], -1.0)
