"""openSMILE through its native library (shared.features.smile) gives the opensmile
package's own rows and times, bit for bit, without importing pandas."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blendsync.shared.config import FeatureConfig
from blendsync.shared.features.smile import Functionals, ns_to_seconds, pandas_ns
from tests.helpers import REPO, speechlike


def _package(feature_set: str, frame_mode_conf: str | None):
    import opensmile

    options = {} if frame_mode_conf is None else {"frameModeFunctionalsConf": frame_mode_conf}
    return opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, feature_set),
        feature_level=opensmile.FeatureLevel.Functionals,
        options=options,
    )


def _assert_same(ours: Functionals, y: np.ndarray, sr: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = _package(ours.feature_set, None if ours.context_s is None else ours.frame_mode_conf).process_signal(y, sr)
        got = ours.run(y, sr)
    assert np.array_equal(got.values, df.to_numpy(dtype=np.float64), equal_nan=True)
    assert np.array_equal(got.starts_ns, df.index.get_level_values("start").asi8)
    assert list(df.columns) == ours.feature_names


@pytest.fixture(scope="module")
def one_pass() -> Functionals:
    cfg = FeatureConfig().emotion
    return Functionals(cfg.feature_set, cfg.context_s, cfg.hop_s)


def test_rows_and_times_are_the_packages_on_real_speech(shared_data, one_pass):
    from blendsync.shared.audio import decode_audio

    for name in ("ljspeech_LJ050-0131_22k.wav", "sr_french.aiff"):
        y = decode_audio(shared_data / "speech" / name, 16000).samples
        _assert_same(one_pass, y, 16000)
        _assert_same(Functionals("eGeMAPSv02"), y, 16000)  # one row over the whole signal


@pytest.mark.parametrize("hop_s", [0.01, 0.02])
def test_listed_rows_are_those_of_every_row_bit_for_bit(shared_data, hop_s):
    """openSMILE's list frame mode reads the windows fixed mode reads: every other row, the
    two neighbours of each 30 fps frame, and rows listed past the last window (not computed:
    the listed run stops at the last row there is)."""
    from blendsync.shared.audio import decode_audio

    y = decode_audio(shared_data / "speech" / "neurosync_input_88k.wav", 16000).samples
    f = Functionals("eGeMAPSv02", 1.0, hop_s)
    every = f.run(y, 16000)
    R = len(every.index)
    assert np.array_equal(every.index, np.arange(R))
    frames = np.arange(R) * 10 // 3
    for rows in (np.arange(0, R, 2), np.unique(np.r_[frames, frames + 1]), np.arange(R - 5, R + 25)):
        got = f.run(y, 16000, rows)
        want = rows[rows < R]
        assert np.array_equal(got.index, want)
        assert np.array_equal(got.values, every.values[want], equal_nan=True)
        assert np.array_equal(got.starts_ns, every.starts_ns[want])


@pytest.mark.parametrize("hop_s", [0.02, 0.03, 0.05])
def test_other_hops_keep_the_packages_row_times(hop_s):
    """Row times are computed, not read: (r * frames per row) * 10 ms is openSMILE's stamp."""
    _assert_same(Functionals("eGeMAPSv02", 1.0, hop_s), speechlike(7.3, 16000, seed=1).astype(np.float32), 16000)


@pytest.mark.parametrize("seconds", [0.3, 1.0, 3.7])
def test_short_and_odd_lengths_too(one_pass, seconds):
    y = speechlike(seconds, 16000, seed=3).astype(np.float32)
    _assert_same(one_pass, y, 16000)
    _assert_same(one_pass, y.astype(np.float64), 16000)


def test_a_signal_shorter_than_a_window_gives_one_nan_row(one_pass):
    with pytest.warns(UserWarning, match="Segment too short"):
        got = one_pass.run(np.zeros(800, np.float32), 16000)
    assert got.values.shape == (1, 88) and np.isnan(got.values).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 3.6e5, allow_nan=False), min_size=1, max_size=50), st.floats(1e-4, 0.05))
def test_times_convert_as_pandas_converts_them(starts, step):
    seconds = np.concatenate([np.asarray(starts), np.cumsum(np.full(200, step))])  # sums, as a stream accumulates
    ns = pandas_ns(seconds)
    assert np.array_equal(ns, pd.to_timedelta(seconds, "s").asi8)
    assert np.array_equal(ns_to_seconds(ns), pd.TimedeltaIndex(ns).total_seconds().to_numpy())


def test_featurizing_imports_neither_pandas_nor_the_opensmile_package():
    code = (
        "import sys, numpy as np\n"
        "from blendsync.shared.config import FeatureConfig\n"
        "from blendsync.shared.features import compute_features\n"
        "f = compute_features(np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1, 16000, 90,"
        " FeatureConfig())\n"
        "assert f['emotion'].values.shape == (90, 88)\n"
        "print(sorted(m for m in ('pandas', 'opensmile', 'audinterface') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_threads_that_start_at_once_load_the_library_once():
    """The pieces of a file start together: the first use of the library from several
    threads at once (a half-loaded module once failed one of them)."""
    code = (
        "import threading\n"
        "import numpy as np\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from blendsync.shared.features.smile import Functionals\n"
        "f = Functionals('eGeMAPSv02')\n"
        "y = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1\n"
        "gate = threading.Barrier(8)\n"
        "def run(_):\n"
        "    gate.wait()\n"
        "    return f.run(y, 16000).values\n"
        "with ThreadPoolExecutor(8) as pool:\n"
        "    got = list(pool.map(run, range(8)))\n"
        "assert all(np.array_equal(g, got[0]) for g in got)\n"
    )
    for _ in range(3):
        subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
