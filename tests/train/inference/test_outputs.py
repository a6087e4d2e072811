"""predict's curve files: the Live Link Face CSV's values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.train.inference.outputs import six_decimals


def test_six_decimals_writes_what_the_format_writes():
    """The CSV's values written as digits by numpy equal f"{x:.6f}" for every float32 in
    [0, 1], ties (0.0078125 = 2^-7 -> 0.007812) and the ends included; -0.0 is written 0.000000."""

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.floats(0.0, 1.0, width=32, allow_subnormal=True), min_size=1, max_size=60))
    def check(xs):
        v = np.asarray(xs, np.float32).reshape(1, -1)
        assert six_decimals(v) == [",".join(f"{x:.6f}" for x in v[0])]

    check()
    edge = np.array([[0.0, 1.0, 2.0**-7, 0.5, 1e-7, 5e-7, 0.9999995, np.nextafter(np.float32(1), 0)]], np.float32)
    assert six_decimals(edge) == [",".join(f"{x:.6f}" for x in edge[0])]
    assert six_decimals(np.array([[-0.0]], np.float32)) == ["0.000000"]
    assert six_decimals(np.zeros((0, 52), np.float32)) == []
    assert six_decimals(np.array([[0.25, 1.0]])) == ["0.250000,1.000000"]  # float64: the format itself


@pytest.mark.parametrize("fmt", ["livelink", "json", "npy"])
def test_no_curve_file_holds_a_non_finite_value(fmt):
    """NaN printed with six decimals read 9.224192; JSON with NaN is not JSON."""
    from blendsync.shared.channels import ARKIT_52
    from blendsync.train.inference.outputs import CURVE_FORMATS

    curves = np.full((3, 52), 0.5, np.float32)
    curves[1, 7] = np.nan
    curves[2, 3] = np.inf
    with pytest.raises(ValueError, match=r"2 non-finite value\(s\)"):
        CURVE_FORMATS[fmt].encode(curves, 60.0, list(ARKIT_52), "take.wav")
    assert CURVE_FORMATS[fmt].encode(np.nan_to_num(curves, posinf=1.0), 60.0, list(ARKIT_52), "take.wav")
