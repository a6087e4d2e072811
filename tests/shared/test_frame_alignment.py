"""Onsets at known times in a 10-minute file land where they belong in every stream: within
5 ms at the extractors' 10 ms rate, and on frame round(t * fps) on the grid, at the start
and at the end of the file (a constant 10 ms offset or a drift fails)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from blendsync.shared.channels import ARKIT_52
from blendsync.shared.config import FeatureConfig
from blendsync.shared.features import emotion_feature_names, emotion_rows, mel_rows
from blendsync.shared.featurize_file import featurize_file
from blendsync.shared.targets import TargetSpec
from tests.helpers import write_livelink

pytestmark = pytest.mark.slow  # a 10-minute file

SR = 16000
DURATION = 600.0
BURST = 0.2
# Multiples of 0.1 s (on both the 10 ms rows and the 30 fps grid), >= 2 s apart so the 1 s
# emotion context holds one burst at a time, near both ends of the file.
ONSETS = [1.2, 3.4, 299.4, 596.6, 598.8]
JAW = ARKIT_52.index("jawOpen")


@pytest.fixture(scope="module")
def ten_minutes(tmp_path_factory):
    d = tmp_path_factory.mktemp("grid")
    rng = np.random.default_rng(7)
    y = np.zeros(int(DURATION * SR), np.float32)
    for t in ONSETS:
        i = int(round(t * SR))
        y[i : i + int(BURST * SR)] = rng.normal(0, 0.1, int(BURST * SR))
    wav = d / "ten_minutes.wav"
    sf.write(wav, y, SR, subtype="FLOAT")

    def curve(t):
        v = np.zeros(52)
        v[JAW] = float(any(o <= t + 1e-9 < o + BURST for o in ONSETS))
        return v

    csv = write_livelink(d / "ten_minutes.csv", DURATION, fps=60.0, start="17:42:03:12.500", curve=curve, extra=True)
    cfg = FeatureConfig()
    ff = featurize_file(wav, TargetSpec(csv), cfg)
    return y, cfg, ff


def _first(mask: np.ndarray) -> int:
    idx = np.flatnonzero(mask)
    assert idx.size, "onset not found"
    return int(idx[0])


def _loudness(cfg):
    return emotion_feature_names(cfg.emotion).index("loudness_sma3_amean")


def test_mel_rows_onsets_within_5ms(ten_minutes):
    y, cfg, _ = ten_minutes
    rows, times = mel_rows(y, SR, cfg.mel)
    energy = np.exp(rows).sum(axis=1)
    for t in ONSETS:
        plateau = np.median(energy[(times > t + 0.05) & (times < t + 0.15)])
        win = (times > t - 0.5) & (times < t + 0.1)
        found = times[_first(win & (energy > 0.25 * plateau))]
        assert abs(found - t) <= 0.005, f"mel onset at {t}: found at {found}"


def test_emotion_rows_onsets_within_5ms(ten_minutes):
    y, cfg, _ = ten_minutes
    got = emotion_rows(y, SR, cfg.emotion)
    rows, ends = got.values, got.ends
    loud = rows[:, _loudness(cfg)]
    for t in ONSETS:
        # Plateau: the whole burst inside the context; the onset is where the context first
        # holds half of one 10 ms LLD frame's share of it.
        plateau = loud[(ends > t + BURST + 0.05) & (ends < t + BURST + 0.1)].max()
        win = (ends > t - 0.5) & (ends < t + 0.3)
        found = ends[_first(win & (loud > plateau / (BURST / 0.01) / 2))]
        assert abs(found - t) <= 0.005, f"emotion onset at {t}: found at context end {found}"


def test_every_stream_on_the_grid_puts_onsets_on_frame_round_t_fps(ten_minutes):
    y, cfg, ff = ten_minutes
    fps = cfg.fps
    assert ff.frames == round(DURATION * fps)
    energy = np.exp(ff.mel).sum(axis=1)
    loud = ff.emotion[:, _loudness(cfg)]
    jaw = ff.targets[:, JAW]
    frames = np.arange(ff.frames)
    for t in ONSETS:
        want = round(t * fps)
        win = (frames > want - 12) & (frames < want + 3)
        plateau_mel = np.median(energy[want + 2 : want + 5])
        plateau_emo = loud[want + 7 : want + 9].max()
        got = {
            "mel": _first(win & (energy > 0.25 * plateau_mel)),
            "emotion": _first(win & (loud > plateau_emo / (BURST / 0.01) / 2)),
            "targets": _first(win & (jaw > 0.5)),
        }
        assert got == {"mel": want, "emotion": want, "targets": want}, f"onset {t}s"


def test_grid_counts_partial_context_frames(ten_minutes):
    _, cfg, ff = ten_minutes
    # Frames 0..29 end before the first full 1 s context.
    assert ff.info["counts"]["emotion_partial_context_frames"] == 30
    assert ff.info["counts"]["emotion_whole_file_frames"] == 0
