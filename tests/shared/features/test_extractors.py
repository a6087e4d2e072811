"""The extractors against their references: one-pass eGeMAPS vs a direct openSMILE call per
window on the same span; log-mel vs librosa."""

from __future__ import annotations

import dataclasses

import numpy as np
import opensmile
import pytest

from blendsync.shared import features as sf
from blendsync.shared.audio import decode_audio
from blendsync.shared.config import EmotionConfig, FeatureConfig
from blendsync.shared.features import emotion_on_grid, emotion_rows, fill_nonfinite, mel_on_grid, mel_rows
from blendsync.shared.features.smile import Functionals
from blendsync.shared.frame_grid import frame_times, n_frames, rows_to_grid

SPEECH = ["neurosync_input_88k.wav", "ljspeech_LJ050-0131_22k.wav", "cmu_arctic_a0007_16k.wav"]


@pytest.mark.parametrize("name", SPEECH)
def test_one_pass_egemaps_matches_per_window_calls(shared_data, name):
    y = decode_audio(shared_data / "speech" / name, 16000).samples
    cfg = EmotionConfig()
    got = emotion_rows(y, 16000, cfg)
    rows, ends = got.values, got.ends
    direct = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    )
    # Away from the file edges: spans that start >= 0.5 s in and end >= 0.5 s before the end.
    idx = np.flatnonzero((ends - cfg.context_s >= 0.5) & (ends <= len(y) / 16000 - 0.5))
    idx = idx[:: max(1, len(idx) // 12)]
    assert len(idx) >= 5
    rel = []
    for i in idx:
        start = ends[i] - cfg.context_s
        seg = y[int(round(start * 16000)) : int(round(ends[i] * 16000))]
        ref = direct.process_signal(seg, 16000).to_numpy()[0]
        rel.append(np.abs(rows[i] - ref) / (np.abs(ref) + 1e-6))
    assert float(np.median(rel)) < 0.05


def test_log_mel_matches_librosa(shared_data):
    import librosa

    y = decode_audio(shared_data / "speech" / "cmu_arctic_a0007_16k.wav", 16000).samples
    cfg = FeatureConfig().mel
    rows, times = mel_rows(y, 16000, cfg)
    ref = librosa.power_to_db(
        librosa.feature.melspectrogram(
            y=y,
            sr=16000,
            n_fft=512,
            hop_length=160,
            win_length=400,
            n_mels=80,
            fmin=0,
            fmax=8000,
            center=True,
            pad_mode="constant",
        ),
        ref=1.0,
        amin=1e-10,
        top_db=None,
    )
    # Same spectrogram; ours is natural log with a 1e-6 floor.
    ours_db = 10 * np.log10(np.exp(rows.T.astype(np.float64)) - cfg.log_floor + 1e-10)
    loud = ref > ref.max() - 60
    np.testing.assert_allclose(ours_db[loud], ref[loud], atol=0.05)
    assert rows.shape[1] == 80 and np.allclose(np.diff(times), 0.01)


def test_stream_shapes_and_finite_on_the_grid(make_audio):
    y = decode_audio(make_audio("a.wav", 3.0), 16000).samples
    cfg = FeatureConfig()
    mel = mel_on_grid(y, 16000, frame_times(90, 30.0), cfg.mel)
    emo = emotion_on_grid(y, 16000, frame_times(90, 30.0), cfg.emotion)
    assert mel.values.shape == (90, 80) and emo.values.shape == (90, 88)
    assert mel.values.dtype == np.float32 and emo.values.dtype == np.float32
    assert np.isfinite(mel.values).all() and np.isfinite(emo.values).all()


def test_file_shorter_than_the_context_uses_one_whole_file_row(shared_data):
    # sr_chinese.flac lasts 0.96 s: shorter than the 1 s context.
    y = decode_audio(shared_data / "speech" / "sr_chinese.flac", 16000).samples
    emo = emotion_on_grid(y, 16000, frame_times(29, 30.0), EmotionConfig())
    assert emo.counts["emotion_whole_file_frames"] == 29
    assert (emo.values == emo.values[0]).all() and np.isfinite(emo.values).all()
    assert np.abs(emo.values[0]).sum() > 0


def test_nonfinite_functionals_are_filled_and_counted():
    from blendsync.shared.features import fill_nonfinite

    rows = np.ones((4, 88), np.float32)
    rows[1, 3] = np.nan
    rows[2, 5] = np.inf
    filled, n = fill_nonfinite(rows, EmotionConfig(nonfinite_fill=-7.0))
    assert n == 2 and filled[1, 3] == -7.0 and filled[2, 5] == -7.0 and np.isfinite(filled).all()


def _every_row_on_grid(y, times, cfg):
    every = emotion_rows(y, 16000, cfg)
    rows, _ = fill_nonfinite(every.values, cfg)
    return rows_to_grid(rows, every.ends, times - cfg.delay_s).values


def _listed_runs(monkeypatch) -> list:
    """The rows argument of each openSMILE run (None: every row)."""
    runs, real = [], Functionals.run
    monkeypatch.setattr(Functionals, "run", lambda self, y, sr, rows=None: runs.append(rows) or real(self, y, sr, rows))
    return runs


@pytest.mark.parametrize(("fps", "delay_s"), [(30.0, 0.0), (25.0, 0.013), (29.97, -0.05)])
def test_the_grid_computes_the_rows_it_reads_only_with_every_rows_result(shared_data, fps, delay_s, monkeypatch):
    y = decode_audio(shared_data / "speech" / "neurosync_input_88k.wav", 16000).samples
    cfg = dataclasses.replace(EmotionConfig(), delay_s=delay_s)
    times = frame_times(n_frames(len(y) / 16000, fps), fps)
    want = _every_row_on_grid(y, times, cfg)
    runs = _listed_runs(monkeypatch)
    got = emotion_on_grid(y, 16000, times, cfg)
    assert len(runs) == 1 and runs[0] is not None and len(runs[0]) < 0.65 * len(emotion_rows(y, 16000, cfg).index)
    assert np.array_equal(got.values.view(np.uint32), want.view(np.uint32))


def test_rows_that_do_not_cover_the_grid_are_computed_again_all_of_them(shared_data, monkeypatch):
    """A listed row missing (here: dropped on purpose) is caught before gridding."""
    y = decode_audio(shared_data / "speech" / "ljspeech_LJ050-0131_22k.wav", 16000).samples
    cfg = EmotionConfig()
    times = frame_times(n_frames(len(y) / 16000, 30.0), 30.0)
    want = _every_row_on_grid(y, times, cfg)
    real = sf.rows_read_by_grid
    monkeypatch.setattr(sf, "rows_read_by_grid", lambda *a: np.delete(real(*a), 40))
    runs = _listed_runs(monkeypatch)
    got = emotion_on_grid(y, 16000, times, cfg)
    assert [r is None for r in runs] == [False, True]
    assert np.array_equal(got.values.view(np.uint32), want.view(np.uint32))
