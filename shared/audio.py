"""Audio decoding: any container soundfile reads (wav, flac, aiff, ogg, mp3 where libsndfile
decodes it), any rate and channel count -> mono float32 at the feature sample rate.

Problems a user can fix (empty, silent, NaN, too short, undecodable) raise AudioError with
the file and what is wrong; the caller adds the manifest row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from blendsync.shared.streams.resample import resample_whole, stream_resampler

log = logging.getLogger(__name__)

# The feature config's resampler unless one is named (shared.streams.resample).
DEFAULT_RESAMPLER = "soxr-vhq"
MIN_DURATION_S = 0.25
# A sample at or beyond this magnitude sits at an integer format's limit (32767/32768 for
# 16 bit; wider formats reach closer to 1): the recording clipped there.
FULL_SCALE = 32767 / 32768
# Above this fraction of clipped samples a take gets a warning (a few peaks are common).
CLIPPED_WARN_FRACTION = 1e-3
# Peak below this (about -100 dBFS) counts as silence: nothing to learn from.
SILENCE_PEAK = 1e-5


class AudioError(ValueError):
    """A file that cannot be used as speech input."""


@dataclass(frozen=True, kw_only=True)
class DecodedAudio:
    """samples: (N,) float32 mono in [-1, 1] at sample_rate. clipped_samples: source samples
    (over all channels) at or beyond full scale, plus resampled ones clipped back to [-1, 1]."""

    samples: np.ndarray
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    source_format: str
    clipped_samples: int
    # How it was brought to sample_rate (shared.streams.resample), where it was.
    resampler: str = DEFAULT_RESAMPLER

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate


def resample(x: np.ndarray, sr_in: int, sr_out: int, resampler: str = DEFAULT_RESAMPLER) -> np.ndarray:
    """(N,) float -> (M,) float32 by the named resampler (shared.streams.resample)."""
    if sr_in == sr_out:
        return np.ascontiguousarray(x, dtype=np.float32)
    return resample_whole(x, sr_in, sr_out, resampler)


def decode_audio(path: str | Path, sample_rate: int, resampler: str = DEFAULT_RESAMPLER) -> DecodedAudio:
    p = Path(path)
    if not p.is_file():
        raise AudioError(f"{p}: audio file not found")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
        info = sf.info(str(p))
        fmt = info.format
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{p}: cannot decode audio ({decode_failure(e)})") from None
    return prepare_samples(data, sr, sample_rate, source=str(p), source_format=fmt, resampler=resampler)


def decode_failure(e: Exception) -> str:
    """libsndfile's reason without the path it repeats ("Error opening '/x/y.md': Format not
    recognised." -> "format not recognised")."""
    text = str(e).strip()
    if text.startswith("Error opening ") and "': " in text:
        text = text.split("': ", 1)[1]
    text = text.rstrip(".")
    return text[:1].lower() + text[1:]


# Uploads are decoded this many frames at a time, each block mixed to mono at once, so that a
# file of many channels at a high rate (a FLAC of a constant compresses to almost nothing) is
# never held whole: 285 kB of 8-channel 192 kHz FLAC decoded whole took 2.4 GB.
DECODE_BLOCK_FRAMES = 1 << 16
# The most mono samples an upload may hold at its own rate, before resampling: its duration
# limit at 48 kHz (a longer file at a higher rate is refused, naming both).
MAX_SOURCE_RATE_FOR_LIMIT = 48_000


def decode_audio_bytes(
    data: bytes,
    sample_rate: int,
    source: str,
    resampler: str = DEFAULT_RESAMPLER,
    *,
    rates: tuple[int, int] | None = None,
    max_duration_s: float | None = None,
) -> DecodedAudio:
    """As decode_audio, for a file's bytes held in memory (an upload): no file is written, and
    messages name `source` only (libsndfile's own reason, which names a path, is left out).
    rates (lowest, highest) and max_duration_s are checked on the file's header, before any
    sample is read: a 2 kB file claiming 1 Hz is hours of audio at 16 kHz. The samples are
    decoded in blocks mixed to mono as they come (the same mono samples as a whole read)."""
    import io

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            fmt, sr, ch = f.format, f.samplerate, f.channels
            _check_header(f, source, rates, max_duration_s)
            parts, bad, at_limit = [], 0, 0
            for block in f.blocks(blocksize=DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True):
                mono, b, a = _mix_block(block)
                parts.append(mono.copy() if mono.base is not None else mono)
                bad, at_limit = bad + b, at_limit + a
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        raise AudioError(
            f"{source}: cannot decode audio (not a WAV, FLAC, OGG or MP3 file that libsndfile reads)"
        ) from None
    mono = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return _prepared(mono, ch, bad, at_limit, sr, sample_rate, source, fmt, resampler)


def _check_header(f, source: str, rates: tuple[int, int] | None, max_duration_s: float | None) -> None:
    sr = f.samplerate
    if rates is not None and not rates[0] <= sr <= rates[1]:
        raise AudioError(f"{source}: its sample rate is {sr} Hz; audio from {rates[0]} to {rates[1]} Hz is taken")
    duration = f.frames / sr if sr > 0 else float("inf")
    if max_duration_s is None:
        return
    if duration > max_duration_s:
        raise AudioError(f"{source}: {duration:.0f} s of audio, over the {max_duration_s:g} s taken at once")
    limit = max_duration_s * MAX_SOURCE_RATE_FOR_LIMIT
    if f.frames > limit:
        raise AudioError(
            f"{source}: {duration:.0f} s at {sr} Hz is {f.frames} samples, over the {limit:.0f} taken at once "
            f"({max_duration_s:g} s at {MAX_SOURCE_RATE_FOR_LIMIT} Hz): send it at a lower rate or in parts"
        )


def _mix_block(data: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(N, channels) float32 -> (mono (N,), NaN/inf samples, samples at full scale)."""
    bad = int(np.count_nonzero(~np.isfinite(data)))
    at_limit = int(np.count_nonzero(np.abs(data) >= FULL_SCALE))
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return mono, bad, at_limit


def prepare_samples(
    data: np.ndarray,
    sr: int,
    sample_rate: int,
    *,
    source: str = "<array>",
    source_format: str = "array",
    resampler: str = DEFAULT_RESAMPLER,
) -> DecodedAudio:
    """(N, channels) or (N,) float at sr -> checked mono DecodedAudio at sample_rate."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    n, ch = data.shape
    if n == 0 or ch == 0:
        raise AudioError(f"{source}: audio is empty (0 samples)")
    mono, bad, at_limit = _mix_block(data)
    return _prepared(mono, ch, bad, at_limit, sr, sample_rate, source, source_format, resampler)


def _prepared(
    mono: np.ndarray, ch: int, bad: int, at_limit: int, sr: int, sample_rate: int, source: str, source_format: str,
    resampler: str,
) -> DecodedAudio:  # fmt: skip
    """The checks and the resampling of mono samples (N,) mixed from `ch` channels, of which
    `bad` samples were NaN/inf and `at_limit` at full scale."""
    n = len(mono)
    if n == 0 or ch == 0:
        raise AudioError(f"{source}: audio is empty (0 samples)")
    if bad:
        raise AudioError(f"{source}: audio holds {bad} NaN/inf samples")
    dur = n / sr
    if dur < MIN_DURATION_S:
        raise AudioError(f"{source}: audio is {dur:.3f} s long, shorter than the {MIN_DURATION_S} s minimum")
    if at_limit > CLIPPED_WARN_FRACTION * n * ch:
        log.warning(
            "%s: %d samples (%.2f%%) at full scale: the recording clipped, and features of its loudest "
            "passages are distorted",
            source,
            at_limit,
            100 * at_limit / (n * ch),
        )
    peak = float(np.max(np.abs(mono)))
    if peak < SILENCE_PEAK:
        raise AudioError(f"{source}: audio is silent (peak {peak:.2e} < {SILENCE_PEAK:.0e})")
    y = resample(mono, sr, sample_rate, resampler)
    # openSMILE scales float input by 32768 to int16: anything outside [-1, 1] would wrap.
    over = int(np.count_nonzero(np.abs(y) > 1.0))
    if over:
        log.warning("%s: %d samples outside [-1, 1] after resampling; clipped", source, over)
        np.clip(y, -1.0, 1.0, out=y)
    return DecodedAudio(
        samples=y,
        sample_rate=sample_rate,
        source_sample_rate=int(sr),
        source_channels=int(ch),
        source_format=source_format,
        clipped_samples=at_limit + over,
        resampler=resampler,
    )


class AudioStream:
    """Audio that arrives in pieces, made what decode_audio makes of a whole file: mono,
    resampled by the same resampler as a stream (which gives the whole file's samples
    exactly), clipped to [-1, 1], with the same checks (NaN at once; empty, too short or
    silent once the stream ends, since only then is the whole known).

    push(data (N, channels) or (N,) float at source_rate) -> the resampled samples it
    completes; finish() -> the resampler's last samples, after the checks. delay_s: the most
    the resampler holds back."""

    def __init__(
        self, source_rate: int, sample_rate: int, source: str = "<stream>", resampler: str = DEFAULT_RESAMPLER
    ):
        self.source, self.source_rate, self.sample_rate = source, int(source_rate), int(sample_rate)
        self._rs = stream_resampler(resampler, self.source_rate, self.sample_rate)
        self.delay_s = self._rs.delay_s
        self.samples_in = 0
        self.peak = 0.0
        self.clipped_samples = 0

    def push(self, data: np.ndarray) -> np.ndarray:
        data = np.asarray(data, dtype=np.float32)
        if data.ndim == 1:
            data = data[:, None]
        if not np.isfinite(data).all():
            raise AudioError(f"{self.source}: audio holds {int(np.count_nonzero(~np.isfinite(data)))} NaN/inf samples")
        self.samples_in += data.shape[0]
        self.clipped_samples += int(np.count_nonzero(np.abs(data) >= FULL_SCALE))
        mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        if mono.size:
            self.peak = max(self.peak, float(np.max(np.abs(mono))))
        return self._out(self._rs.push(mono))

    def finish(self) -> np.ndarray:
        if self.samples_in == 0:
            raise AudioError(f"{self.source}: audio is empty (0 samples)")
        dur = self.samples_in / self.source_rate
        if dur < MIN_DURATION_S:
            raise AudioError(f"{self.source}: audio is {dur:.3f} s long, shorter than the {MIN_DURATION_S} s minimum")
        if self.peak < SILENCE_PEAK:
            raise AudioError(f"{self.source}: audio is silent (peak {self.peak:.2e} < {SILENCE_PEAK:.0e})")
        return self._out(self._rs.finish())

    def _out(self, y: np.ndarray) -> np.ndarray:
        over = np.abs(y) > 1.0
        if over.any():
            self.clipped_samples += int(np.count_nonzero(over))
            y = np.clip(y, -1.0, 1.0)
        return np.asarray(y, dtype=np.float32)
