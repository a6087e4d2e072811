"""The output gain: movement scaled around the training mean, and the trade it makes."""

from __future__ import annotations

import numpy as np
import pytest

from blendsync.train.core.output_gain import apply_gain, gain_table


def test_gain_scales_movement_around_the_mean_and_stays_in_range():
    rng = np.random.default_rng(0)
    mean = np.array([0.2, 0.5, 0.0], np.float32)
    curves = np.clip(mean + rng.normal(scale=0.1, size=(50, 3)), 0, 1).astype(np.float32)
    assert apply_gain(curves, mean, 1.0) is curves
    out = apply_gain(curves, mean, 2.0)
    inside = (out > 0) & (out < 1)
    assert np.allclose((out - mean)[inside], 2 * (curves - mean)[inside], atol=1e-6)
    assert out.min() >= 0 and out.max() <= 1 and out.dtype == np.float32


def test_the_table_finds_the_gain_that_restores_the_targets_movement():
    t = np.arange(900) / 30
    target = np.stack([0.3 + 0.2 * np.sin(2 * np.pi * 0.7 * t), 0.4 + 0.1 * np.sin(2 * np.pi * 1.9 * t)], 1)
    mean = target.mean(0)
    pred = mean + 0.25 * (target - mean)  # right shape, a quarter of the movement
    rows = {r["gain"]: r for r in gain_table(pred, target, mean, ["a", "b"])}
    assert np.isclose(rows[1.0]["amplitude_ratio"], 0.25)
    assert 4.0 in rows and np.isclose(rows[4.0]["amplitude_ratio"], 1.0) and rows[4.0]["skill"] > 0.999
    assert rows[1.0]["skill"] < rows[2.0]["skill"] < rows[4.0]["skill"]


def test_calibrated_gain_is_the_least_squares_gain():
    from blendsync.train.core.output_gain import calibrate_gain

    rng = np.random.default_rng(1)
    target = rng.uniform(0.2, 0.8, size=(400, 3))
    mean = target.mean(0)
    pred = mean + 0.3 * (target - mean)
    assert np.isclose(calibrate_gain(pred, target, mean), 1 / 0.3)
    noisy = pred + rng.normal(scale=0.05, size=pred.shape)
    g = calibrate_gain(noisy, target, mean)
    errs = {x: ((apply_gain(noisy, mean, x) - target) ** 2).mean() for x in (g * 0.8, g, g * 1.2)}
    assert errs[g] < errs[g * 0.8] and errs[g] < errs[g * 1.2]
    assert calibrate_gain(np.repeat(mean[None], 400, 0), target, mean) is None


def test_gain_argument_is_a_number_or_the_calibrated_one():
    from blendsync.train.core.output_gain import resolve_gain

    assert resolve_gain("2.5", None, "ck") == 2.5 and resolve_gain(1.0, 0.7, "ck") == 1.0
    assert resolve_gain("calibrated", 1.8, "ck") == 1.8
    with pytest.raises(ValueError, match="ck has no calibrated gain"):
        resolve_gain("calibrated", None, "ck")
    assert resolve_gain("0", None, "ck") == 0.0  # the training mean: a still face
    for bad in ("-1", "loud"):
        with pytest.raises(ValueError, match="--gain"):
            resolve_gain(bad, None, "ck")


@pytest.mark.parametrize("bad", ["1e39", "inf", "nan", "-0.5", "10.5", "", "0x1e", "1_0", "loud", None, True])
def test_a_gain_is_a_finite_number_from_0_to_10_named_when_not(bad):
    """gain=1e39 gave NaN curves: invalid JSON and a Live Link CSV reading 9.224192."""
    from blendsync.train.core.output_gain import check_gain, resolve_gain

    with pytest.raises(ValueError, match=r"^gain must be a number from 0 to 10, got"):
        check_gain(bad)
    with pytest.raises(ValueError, match=r"^--gain must be a number from 0 to 10"):
        resolve_gain(bad, None, "ck.pt")
    with pytest.raises(ValueError, match=r"ck.pt: its calibrated gain must be a number"):
        resolve_gain("calibrated", float("nan"), "ck.pt")


def test_gains_in_the_range_pass_as_numbers():
    from blendsync.train.core.output_gain import check_gain, resolve_gain

    assert [check_gain(v) for v in ("0", 1, "2.5", 10.0)] == [0.0, 1.0, 2.5, 10.0]
    assert resolve_gain("calibrated", 1.7, "ck.pt") == 1.7
