"""librosa's mel spectrogram step for step, without importing librosa.

Importing librosa's feature module loads numba, llvmlite and scipy.signal: about 3.8 s of a
`bstrain predict` run whose log-mel itself takes 0.05 s for 120 s of audio, and about 190 MB
of a server's memory. These are librosa's own operations in its own order (the periodic Hann
window of scipy's general cosine centred in n_fft; Slaney's mel scale and area
normalisation; the centred STFT in librosa's blocks of frames; the power spectrum and the
filter bank applied by the same einsum), so the arrays are bit-identical to librosa's
(tests/shared/features/test_librosa_mel.py), and the features and their config hash stay.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

# Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hann_window(win_length: int, n_fft: int) -> np.ndarray:
    """(n_fft,) float64: librosa.filters.get_window("hann", win_length, fftbins=True) (scipy's
    periodic Hann) centred in n_fft zeros, as librosa.util.pad_center puts it."""
    if win_length <= 1:
        w = np.ones(win_length, dtype=np.float64)
    else:
        m = win_length + 1  # periodic: one more point, the last dropped
        fac = np.linspace(-np.pi, np.pi, m, dtype=np.float64)
        w = np.zeros(m, dtype=np.float64)
        for k, a in enumerate((0.5, 0.5)):
            w += a * np.cos(k * fac)
        w = w[:-1]
    lpad = (n_fft - win_length) // 2
    return np.pad(w, (lpad, n_fft - win_length - lpad))


def _hz_to_mel(f: float) -> float:
    mel = f / _F_SP
    if f >= _MIN_LOG_HZ:
        mel = _MIN_LOG_MEL + np.log(np.asanyarray(f) / _MIN_LOG_HZ) / _LOGSTEP
    return mel


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    freqs = _F_SP * mels
    log_t = mels >= _MIN_LOG_MEL
    freqs[log_t] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_t] - _MIN_LOG_MEL))
    return freqs


def mel_basis(*, sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) float32: librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels,
    fmin=fmin, fmax=fmax) with its defaults (htk=False, norm="slaney")."""
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(np.asanyarray(fmin)), _hz_to_mel(np.asanyarray(fmax)), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


# librosa.util.MAX_MEM_BLOCK: the bytes of frames one rfft call takes.
_MAX_MEM_BLOCK = 2**8 * 2**10


def _frame(x: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """(n,) -> (frame_length, frames) views: librosa.util.frame on the last axis."""
    xw = as_strided(x, strides=x.strides + (x.strides[-1],), shape=(x.shape[-1] - frame_length + 1, frame_length))
    return np.moveaxis(xw, -1, -2)[..., ::hop_length]


def stft(y: np.ndarray, *, n_fft: int, hop_length: int, win_length: int) -> np.ndarray:
    """(n,) float32 -> (1 + n_fft // 2, frames) complex64: librosa.stft(y, n_fft=n_fft,
    hop_length=hop_length, win_length=win_length, window="hann", center=True,
    pad_mode="constant")."""
    fft_window = hann_window(win_length, n_fft)[:, None]
    start_k = int(np.ceil(n_fft // 2 / hop_length))
    tail_k = (y.shape[-1] + n_fft // 2 - n_fft) // hop_length + 1
    if tail_k <= start_k:
        start, extra = 0, 0
        y = np.pad(y, (n_fft // 2, n_fft // 2), mode="constant")
    else:
        start = start_k * hop_length - n_fft // 2
        y_pre = np.pad(y[: (start_k - 1) * hop_length - n_fft // 2 + n_fft + 1], (n_fft // 2, 0), mode="constant")
        frames_pre = _frame(y_pre, n_fft, hop_length)[..., :start_k]
        extra = frames_pre.shape[-1]
        if tail_k * hop_length - n_fft // 2 + n_fft <= y.shape[-1] + n_fft // 2:
            y_post = np.pad(y[tail_k * hop_length - n_fft // 2 :], (0, n_fft // 2), mode="constant")
            frames_post = _frame(y_post, n_fft, hop_length)
            extra += frames_post.shape[-1]
        else:
            frames_post = np.empty_like(frames_pre, shape=(frames_pre.shape[0], 0))
    dtype = np.complex64 if y.dtype == np.float32 else np.complex128
    frames = _frame(y[start:], n_fft, hop_length)
    out = np.zeros((1 + n_fft // 2, frames.shape[-1] + extra), dtype=dtype, order="F")
    off_start = 0
    if extra > 0:
        off_start = frames_pre.shape[-1]
        out[:, :off_start] = np.fft.rfft(fft_window * frames_pre, axis=-2)
        off_end = frames_post.shape[-1]
        if off_end > 0:
            out[:, -off_end:] = np.fft.rfft(fft_window * frames_post, axis=-2)
    n_columns = max(int(_MAX_MEM_BLOCK // (frames.shape[0] * frames.itemsize)), 1)
    for bl_s in range(0, frames.shape[-1], n_columns):
        bl_t = min(bl_s + n_columns, frames.shape[-1])
        out[:, bl_s + off_start : bl_t + off_start] = np.fft.rfft(fft_window * frames[:, bl_s:bl_t], axis=-2)
    return out


def melspectrogram(
    y: np.ndarray, *, sr: int, n_fft: int, hop_length: int, win_length: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """(n,) float32 -> (n_mels, frames) float32 power: librosa.feature.melspectrogram with the
    arguments shared.features.mel_rows gives it (hann, center=True, pad_mode="constant",
    power=2.0)."""
    S = np.abs(stft(y, n_fft=n_fft, hop_length=hop_length, win_length=win_length)) ** 2.0
    basis = mel_basis(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return np.einsum("...ft,mf->...mt", S, basis, optimize=True)
