"""Sample-rate conversion of audio that arrives in pieces, equal to converting it whole.

Two resamplers, chosen by the feature config's `resampler` (docs/design.md, Live features):

- soxr-vhq: soxr's very-high-quality polyphase filter (the default; every store before the
  setting existed used it). Its streaming interface gives the one-shot result exactly, but
  hands samples over in bursts: at 44.1 kHz in 10 ms chunks it holds back 9 to 84 ms,
  at 8 kHz up to 110 ms, so a live stream behind it is late by the bursts' worst.
- sinc-4ms: a Kaiser-windowed sinc reaching 4 ms to either side of each output sample,
  computed here. Every output sample leaves as soon as the input 4 ms after its instant is
  in: a constant delay, whatever the rate and the chunks. Flat (within 0.01 dB) to 7.5 kHz
  and 0.07 dB down at 7.8 kHz at 16 kHz out, stopband 60 dB from 8.5 kHz (tones; soxr-vhq is
  3 dB down at 7.5 kHz and gone by 7.8 kHz). The live feature config's.

Both are streams: push(x) -> the samples x completes; finish() -> the rest. A whole file is
one push and a finish, so a stream and a file give the same samples bit for bit: each output
sample of sinc-4ms is one row of an elementwise product summed by numpy's pairwise sum over
that row alone, whatever else is computed with it (tested with random chunkings).
"""

from __future__ import annotations

import functools
import math

import numpy as np

RESAMPLERS = ("soxr-vhq", "sinc-4ms")
SINC_HALF_S = 0.004
SINC_ATTENUATION_DB = 60.0
# Outputs per phase from which a view per phase beats gathering every row at once.
_PER_PHASE_ROWS = 8
# Rows multiplied at once (a 1.5 MB product at 48 kHz in).
_ROWS_AT_ONCE = 1024
# Chunk of the stream's simulation that measures soxr's hold-back: a sound card's 10 ms.
_PROBE_CHUNK_S = 0.01


class SincResampler:
    """push(x (N,) float) -> float32 samples at sr_out; finish() -> the last ones. Output
    sample m is the input's band-limited value at instant m / sr_out (no shift: a file's
    samples stay where they were in time); the input before its start and after its end is
    zero. Output length: ceil(N * sr_out / sr_in)."""

    def __init__(self, sr_in: int, sr_out: int, half_s: float = SINC_HALF_S):
        g = math.gcd(int(sr_in), int(sr_out))
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self.up, self.down = self.sr_out // g, self.sr_in // g
        self.reach = int(math.ceil(half_s * self.sr_in))  # input samples to either side
        self.table = _sinc_table(self.sr_in, self.sr_out, self.reach)  # (up, taps) float32
        self.delay_s = hold_back_s("sinc-4ms", self.sr_in, self.sr_out)
        # Input from buf_start on (indices of the stream; before 0 are zeros).
        self._buf = np.zeros(self.reach, np.float32)
        self._buf_start = -self.reach
        self._n_in = 0
        self._m = 0  # the next output sample

    def push(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, x])
        self._n_in += len(x)
        have = self._buf_start + len(self._buf)  # input indices below this are here
        # Output m needs input up to floor(m * down / up) + reach.
        upto = ((have - 1 - self.reach) * self.up) // self.down + 1
        return self._out(min(max(self._m, upto), self._total()))

    def finish(self) -> np.ndarray:
        self._buf = np.concatenate([self._buf, np.zeros(self.reach + 1, np.float32)])
        return self._out(self._total())

    def _total(self) -> int:
        return -(-self._n_in * self.up // self.down)

    def _out(self, upto: int) -> np.ndarray:
        if upto <= self._m:
            return np.zeros(0, np.float32)
        m = np.arange(self._m, upto, dtype=np.int64)
        pos = m * self.down  # in 1/up input samples
        base, phase = pos // self.up, pos % self.up
        taps = self.table.shape[1]
        first = base - self.reach - self._buf_start
        if len(m) < _PER_PHASE_ROWS * self.up:  # a stream's chunk: the rows gathered at once
            rows = self._buf[first[:, None] + np.arange(taps)[None, :]]
            y = (rows * self.table[phase]).sum(axis=1)
        else:  # a file: the outputs of one phase read the input at one stride, a view per phase
            y = np.empty(len(m), np.float32)
            for p in range(min(self.up, len(m))):
                ours = y[p :: self.up]  # phases repeat every `up` outputs
                for lo in range(0, len(ours), _ROWS_AT_ONCE):
                    n = min(_ROWS_AT_ONCE, len(ours) - lo)
                    start = int(first[p]) + lo * self.down
                    view = np.lib.stride_tricks.as_strided(
                        self._buf[start:], shape=(n, taps), strides=(self.down * 4, 4), writeable=False
                    )
                    ours[lo : lo + n] = (view * self.table[phase[p]]).sum(axis=1)
        self._m = upto
        keep = (self._m * self.down) // self.up - self.reach - self._buf_start
        if keep > 0:
            self._buf, self._buf_start = self._buf[keep:], self._buf_start + keep
        return y


@functools.lru_cache(maxsize=16)
def _sinc_table(sr_in: int, sr_out: int, reach: int) -> np.ndarray:
    """(up, 2 reach + 1) float32: row p weighs the input samples base - reach … base + reach
    of an output at input position base + p / up."""
    g = math.gcd(sr_in, sr_out)
    up = sr_out // g
    cutoff = min(sr_in, sr_out) / 2
    beta = 0.1102 * (SINC_ATTENUATION_DB - 8.7)
    offset = (np.arange(2 * reach + 1)[None, :] - reach) - np.arange(up)[:, None] / up  # input samples
    u = np.clip(offset / (reach + 1), -1.0, 1.0)
    window = np.i0(beta * np.sqrt(1.0 - u * u)) / np.i0(beta)
    return ((2 * cutoff / sr_in) * np.sinc(2 * cutoff * offset / sr_in) * window).astype(np.float32)


class SoxrResampler:
    """soxr's VHQ stream: push(x) -> float32 samples; finish() -> the last ones. delay_s: the
    most it holds back in a stream of 10 ms chunks (measured on its own filter at start)."""

    def __init__(self, sr_in: int, sr_out: int):
        import soxr

        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self._rs = soxr.ResampleStream(self.sr_in, self.sr_out, 1, dtype="float32", quality="VHQ")
        self.delay_s = _soxr_hold_back_s(self.sr_in, self.sr_out)

    def push(self, x: np.ndarray) -> np.ndarray:
        return self._rs.resample_chunk(np.asarray(x, np.float32).reshape(-1), last=False)

    def finish(self) -> np.ndarray:
        return self._rs.resample_chunk(np.zeros(0, np.float32), last=True)


@functools.lru_cache(maxsize=16)
def _soxr_hold_back_s(sr_in: int, sr_out: int) -> float:
    """The most soxr's VHQ stream holds back, fed 2 s in 10 ms chunks: input received less
    output given, in seconds, past its first half second."""
    import soxr

    rs = soxr.ResampleStream(sr_in, sr_out, 1, dtype="float32", quality="VHQ")
    step = max(1, int(round(_PROBE_CHUNK_S * sr_in)))
    chunk = np.zeros(step, np.float32)
    given, worst = 0, 0.0
    for i in range(1, int(2.0 / _PROBE_CHUNK_S) + 1):
        given += len(rs.resample_chunk(chunk))
        if i * _PROBE_CHUNK_S >= 0.5:
            worst = max(worst, i * step / sr_in - given / sr_out)
    return worst


class Unchanged:
    """The identity: audio already at the feature rate."""

    delay_s = 0.0

    def push(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32).reshape(-1)

    def finish(self) -> np.ndarray:
        return np.zeros(0, np.float32)


def stream_resampler(kind: str, sr_in: int, sr_out: int):
    """A resampler stream of this kind (RESAMPLERS) from sr_in to sr_out."""
    if kind not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {list(RESAMPLERS)}, got {kind!r}")
    if int(sr_in) == int(sr_out):
        return Unchanged()
    return SincResampler(sr_in, sr_out) if kind == "sinc-4ms" else SoxrResampler(sr_in, sr_out)


def hold_back_s(kind: str, sr_in: int, sr_out: int) -> float:
    """The most a stream of this resampler holds back: the input after an output sample's
    instant it waits for (sinc-4ms: 4 ms and a sample; soxr-vhq: its bursts, measured)."""
    if int(sr_in) == int(sr_out):
        return 0.0
    if kind == "sinc-4ms":
        return (int(math.ceil(SINC_HALF_S * sr_in)) + 1) / sr_in
    return _soxr_hold_back_s(int(sr_in), int(sr_out))


def resample_whole(x: np.ndarray, sr_in: int, sr_out: int, kind: str) -> np.ndarray:
    """(N,) -> (M,) float32: a whole signal, the samples its stream gives."""
    if kind == "soxr-vhq" and int(sr_in) != int(sr_out):
        import soxr

        return soxr.resample(np.asarray(x, np.float32), sr_in, sr_out, quality="VHQ").astype(np.float32)
    rs = stream_resampler(kind, sr_in, sr_out)
    return np.concatenate([rs.push(x), rs.finish()])
