"""librosa's mel spectrogram, made without librosa, is librosa's own bit for bit."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from blendsync.shared.audio import decode_audio
from blendsync.shared.config import MelConfig
from blendsync.shared.features.librosa_mel import hann_window, mel_basis, melspectrogram


@pytest.mark.parametrize(
    ("sr", "n_fft", "n_mels", "fmin", "fmax"),
    [(16000, 512, 80, 0.0, 8000.0), (16000, 1024, 64, 30.0, 7600.0), (22050, 2048, 128, 500.0, 11025.0)],
)
def test_the_mel_bank_is_librosas_bit_for_bit(sr, n_fft, n_mels, fmin, fmax):
    want = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    got = mel_basis(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("win", "n_fft"), [(400, 512), (512, 512), (401, 512), (1, 16), (1024, 2048)])
def test_the_window_is_librosas_bit_for_bit(win, n_fft):
    want = librosa.util.pad_center(librosa.filters.get_window("hann", win, fftbins=True), size=n_fft)
    np.testing.assert_array_equal(hann_window(win, n_fft), want)


@pytest.mark.parametrize("seconds", [0.01, 0.02, 0.031, 1.0, 7.3, 130.0])
def test_the_mel_spectrogram_is_librosas_bit_for_bit(shared_data, seconds):
    """Real speech, lengths from under one window to over librosa's block of frames."""
    y = decode_audio(shared_data / "speech" / "cmu_arctic_a0007_16k.wav", 16000).samples
    y = np.tile(y, int(np.ceil(seconds * 16000 / len(y))))[: int(seconds * 16000)]
    cfg = MelConfig()
    kw = dict(sr=16000, n_fft=cfg.n_fft, hop_length=int(round(cfg.hop_s * 16000)),
              win_length=int(round(cfg.win_s * 16000)), n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)  # fmt: skip
    want = librosa.feature.melspectrogram(y=y, window="hann", center=True, pad_mode="constant", power=2.0, **kw)
    got = melspectrogram(y, **kw)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
