"""Features of live audio, every sample processed once (docs/design.md, Live features).

LiveFeatures.push(samples at the source rate) returns the features of the frames the audio
received so far completes; finish() returns the rest. They equal a whole file's
(shared.features.compute_features): the log-mel rows are the same short-time spectra,
computed row by row as each window fills, and the eGeMAPS rows come from openSMILE running
as a stream through its SMILEapi (an external audio source written to, a sink that hands
rows back): the same dataflow as the one-pass extraction, so the same values, with ring
buffers so that memory stays flat over hours. Both are put on the frame grid by the same
arithmetic as a whole file's (shared.frame_grid.rows_to_grid).

Right context, the audio after a frame's instant that its features need:
    resampling: none at the feature rate (16 kHz); otherwise the config's resampler's hold-back
        (shared.streams.resample: a constant 4 ms for the live config's sinc-4ms; soxr-vhq's
        bursts, up to 84 ms at 44.1 kHz)
    mel: half the FFT window (16 ms) plus the next 10 ms row: MEL_RIGHT_CONTEXT_S
    emotion: openSMILE hands over the row of a context ending at t once it has audio up to
        about t + 70 ms (at most 130 ms), plus the next 10 ms row, less emotion.delay_s (the
        live feature config's 0.15 s covers it: 0)
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from blendsync.shared.audio import AudioStream
from blendsync.shared.config import EmotionConfig, FeatureConfig, MelConfig
from blendsync.shared.features import N_EMOTION, fill_nonfinite, whole_file_functionals
from blendsync.shared.features.smile import EXTERNAL_SINK, EXTERNAL_SOURCE, ns_to_seconds, pandas_ns
from blendsync.shared.frame_grid import frame_times, n_frames, rows_to_grid
from blendsync.shared.streams.resample import hold_back_s

log = logging.getLogger(__name__)

MEL_RIGHT_CONTEXT_S = 0.026
# openSMILE hands over the row of a context ending at t once it holds audio up to t + this
# (measured on real speech in 10 ms chunks: 70 ms for nearly every row, at most 130 ms).
EMOTION_EMIT_S = 0.07
EMOTION_EMIT_MAX_S = 0.13
EMOTION_RIGHT_CONTEXT_S = EMOTION_EMIT_S + 0.01
# What a frame's emotion row may wait for, at most: the latency a stream states and paces at.
EMOTION_RIGHT_CONTEXT_MAX_S = EMOTION_EMIT_MAX_S + 0.01
# Audio handed to openSMILE at a time where the emotion row's delay leaves room for it.
EMOTION_HANDOVER_S = 0.05
# Emotion rows taken from openSMILE's hand-over in batches of this many, unless a frame
# waits for one (each take costs about 0.4 ms of pandas' time conversion).
EMOTION_BATCH = 10


def right_context_s(cfg: FeatureConfig, source_rate: int | None = None) -> float:
    """Audio after a frame's instant that its features need: the larger of the two streams'
    right contexts, plus what the resampler holds back when the source is at another rate."""
    emotion = max(0.0, EMOTION_RIGHT_CONTEXT_MAX_S - cfg.emotion.delay_s)
    resampler = 0.0 if source_rate is None else hold_back_s(cfg.resampler, source_rate, cfg.sample_rate)
    return max(MEL_RIGHT_CONTEXT_S, emotion) + resampler


@dataclass
class Rows:
    """Extractor rows (R, D) float32 stamped at increasing times (R,) in seconds, as a
    growing buffer whose head is dropped once no frame needs it: first is the index of
    values[0] among all rows so far."""

    values: np.ndarray
    times: np.ndarray
    first: int = 0

    @classmethod
    def empty(cls, width: int) -> Rows:
        return cls(np.zeros((0, width), np.float32), np.zeros(0, np.float64))

    def add(self, values: np.ndarray, times: np.ndarray) -> None:
        if len(values):
            self.values = np.concatenate([self.values, values])
            self.times = np.concatenate([self.times, times])

    def covers(self, t: float) -> bool:
        """A row stamped after t exists: the rows around t are both here."""
        return len(self.times) > 0 and self.times[-1] > t + 1e-9

    def grid(self, times: np.ndarray) -> np.ndarray:
        """The rows at the instants times (T,) by the whole file's arithmetic (rows_to_grid);
        every instant must lie after the first kept row, or before the very first row."""
        lo = int(np.searchsorted(self.times, times[0], side="right")) - 1
        lo = max(0, lo)
        return rows_to_grid(self.values[lo:], self.times[lo:], times).values

    def drop_before(self, t: float) -> None:
        """Forget the rows no instant at or after t needs (keep the one at or before t)."""
        keep = max(0, int(np.searchsorted(self.times, t, side="right")) - 1)
        if keep:
            self.values, self.times, self.first = self.values[keep:], self.times[keep:], self.first + keep


class LiveMel:
    """Log-mel rows as their windows fill: row r is centred on sample r * hop of the stream,
    with the whole file's zero padding of n_fft / 2 at both ends (librosa, center=True)."""

    def __init__(self, cfg: MelConfig, sample_rate: int):
        from blendsync.shared.features.librosa_mel import hann_window, mel_basis

        self.cfg, self.sr = cfg, sample_rate
        self.hop = int(round(cfg.hop_s * sample_rate))
        self.n_fft = cfg.n_fft
        # librosa's own arrays, made without importing it (shared.features.librosa_mel).
        self.window = hann_window(int(round(cfg.win_s * sample_rate)), self.n_fft)[:, None]  # float64
        self.basis = mel_basis(sr=sample_rate, n_fft=self.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
        # The stream from its padded start: buf[0] is padded sample `base` (the first
        # n_fft / 2 of the padded stream are the zeros before sample 0).
        self.buf = np.zeros(self.n_fft // 2, np.float32)
        self.base = 0
        self.rows = 0  # rows [0, rows) are out
        self.samples = 0

    def push(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.buf = np.concatenate([self.buf, y])
        self.samples += len(y)
        # Row r needs padded samples [r * hop, r * hop + n_fft).
        upto = (self.base + len(self.buf) - self.n_fft) // self.hop + 1
        return self._rows(max(self.rows, upto))

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        self.buf = np.concatenate([self.buf, np.zeros(self.n_fft // 2, np.float32)])
        return self._rows(1 + self.samples // self.hop)

    def _rows(self, upto: int) -> tuple[np.ndarray, np.ndarray]:
        if upto <= self.rows:
            return np.zeros((0, self.cfg.n_mels), np.float32), np.zeros(0, np.float64)
        starts = np.arange(self.rows, upto) * self.hop - self.base
        frames = self.buf[starts[:, None] + np.arange(self.n_fft)[None, :]].T  # (n_fft, n)
        spec = np.fft.rfft(self.window * frames, axis=0).astype(np.complex64)
        power = np.abs(spec) ** 2
        mel = self.basis @ power
        rows = np.log(mel + self.cfg.log_floor).T.astype(np.float32)
        times = np.arange(self.rows, upto, dtype=np.float64) * self.hop / self.sr
        self.rows = upto
        drop = self.rows * self.hop - self.base  # the next row's first sample
        self.buf, self.base = self.buf[drop:], self.base + drop
        return rows, times


@functools.lru_cache(maxsize=4)
def _ring_buffer_confs(sample_rate: int) -> tuple[str, str]:
    """(an external audio source config, a buffer-mode config): ring buffers in place of
    openSMILE's growing ones, so that a stream of hours holds a few seconds. The source keeps
    6 s (the jitter component looks 2.5 s back); the levels before the functionals 4 s (the
    1 s context and the smoothers' lag). Files named by their content in the folder the
    one-pass configs share (smile_config.cached_file): written once, whatever the number of
    streams, servers and processes."""
    from blendsync.shared.features.smile_config import cached_file

    source = cached_file(
        "[componentInstances:cComponentManager]\n"
        "instance[extsource].type=cExternalAudioSource\n"
        "[extsource:cExternalAudioSource]\n"
        "writer.dmLevel=wave\n"
        "writer.levelconf.growDyn=0\n"
        "writer.levelconf.isRb=1\n"
        f"writer.levelconf.nT={6 * sample_rate}\n"
        f"sampleRate={sample_rate}\n"
        "nBits=16\n"
        "channels=1\n",
        ".conf.inc",
    )
    buffers = cached_file(
        "writer.levelconf.growDyn = 0\nwriter.levelconf.isRb = 1\nwriter.levelconf.nT = 400\n", ".conf.inc"
    )
    return source, buffers


class LiveEmotion:
    """eGeMAPS functional rows from openSMILE running as a stream in a thread of its own:
    push writes 16-bit audio into its external source (scaled as opensmile's process_signal
    scales it), its sink's callback collects the rows; finish signals the end of input and
    collects the last rows. close() stops it early. The openSMILE instance is configured as
    a whole file's (shared.features.smile: the package's config file and options, the
    one-pass functionals' frame mode of features._smile) with ring-buffer levels in place of
    growing ones."""

    def __init__(self, cfg: EmotionConfig, sample_rate: int, batch_s: float = 0.0):
        from blendsync.shared.features import _smile

        self.cfg, self.sr = cfg, sample_rate
        smile = _smile(cfg.feature_set, cfg.context_s, cfg.hop_s)
        source, buffers = _ring_buffer_confs(sample_rate)
        options = {**smile.options(), "source": source, "bufferModeConf": buffers, "sampleRate": sample_rate}
        self._smile = smile.start(options)
        self._lock = threading.Lock()
        self._new: list[tuple[np.ndarray, float]] = []
        self._smile.external_sink_set_callback_ex(EXTERNAL_SINK, self._collect)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="opensmile-live", daemon=True)
        self._thread.start()
        self.written = 0  # samples handed to openSMILE
        self.batch_samples = int(round(batch_s * sample_rate))
        self.write_samples = sample_rate  # at most 1 s per write into the 6 s source ring
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def _run(self) -> None:
        try:
            self._smile.run()
        except BaseException as e:  # reported by the next push/finish
            self._error = e

    def _collect(self, data: np.ndarray, meta) -> None:
        with self._lock:
            self._new.append((data.reshape(-1).astype(np.float32), float(meta.time)))

    def write(self, y: np.ndarray) -> None:
        """Write y (float32 in [-1, 1]). Never waits for openSMILE: the rows this audio
        completes come out about EMOTION_EMIT_S after their context's end (take()). Audio is
        handed over once `batch_s` of it is here: each hand-over wakes openSMILE's tick loop,
        which costs as much for 10 ms as for 50 (flush() hands over the rest)."""
        pcm = (np.asarray(y, np.float32) * 32768).astype(np.int16)
        self._pending.append(pcm)
        self._pending_n += len(pcm)
        if self._pending_n >= self.batch_samples:
            self.flush()

    def flush(self) -> None:
        """Hand the audio written so far to openSMILE."""
        if not self._pending_n:
            return
        pcm = np.concatenate(self._pending)
        self._pending, self._pending_n = [], 0
        data = pcm.tobytes()
        piece = 2 * self.write_samples  # the source's ring holds 6 s: a larger write would never fit
        for at in range(0, len(data), piece):
            while True:
                self._check()
                if self._smile.external_audio_source_write_data(EXTERNAL_SOURCE, data[at : at + piece]):
                    break
                time.sleep(0.0005)  # its ring buffer is full: it is still working through earlier audio
        self.written += len(pcm)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Signal the end of input; every row not taken yet."""
        self.flush()
        self._check()
        self._smile.external_audio_source_set_eoi(EXTERNAL_SOURCE)
        self._thread.join()
        self._check()
        return self.take()

    def close(self) -> None:
        """Stop openSMILE (a stream ended early) and free it."""
        if self._thread.is_alive():
            try:
                self._smile.external_audio_source_set_eoi(EXTERNAL_SOURCE)
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
            self._thread.join(timeout=5)
        if not self._thread.is_alive() and self._smile is not None:
            self._smile.free()
            self._smile = None

    def take(self, at_least: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The rows out and not taken yet: (R, 88) and the end of each row's context (R,) s;
        none unless at least `at_least` are waiting."""
        with self._lock:
            if len(self._new) < at_least:
                new = []
            else:
                new, self._new = self._new, []
        if not new:
            return np.zeros((0, N_EMOTION), np.float32), np.zeros(0, np.float64)
        values = np.stack([v for v, _ in new])
        # The row times as the one-pass extraction converts them (nanoseconds as pandas makes them).
        starts = ns_to_seconds(pandas_ns(np.array([t for _, t in new])))
        return values, starts + self.cfg.context_s

    def _check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"openSMILE stopped: {self._error}") from self._error


_NO_MEL = (np.zeros((0, 0), np.float32), np.zeros(0, np.float64))


class LiveFeatures:
    """push(samples (N,) or (N, channels) at source_rate) -> (mel (n, M), emotion (n, E)) of
    the next n frames (n may be 0); finish() -> those of the remaining frames. Frame k leaves
    as soon as the audio up to its instant plus the right context has arrived."""

    def __init__(self, cfg: FeatureConfig, source_rate: int, source: str = "<stream>"):
        self.cfg = cfg
        self.audio = AudioStream(source_rate, cfg.sample_rate, source, cfg.resampler)
        self.mel = LiveMel(cfg.mel, cfg.sample_rate)
        # Audio goes to openSMILE in 50 ms batches where the emotion row's delay leaves room for
        # them (the live config's 0.15 s); else at once, for the lowest latency.
        spare = cfg.emotion.delay_s - EMOTION_RIGHT_CONTEXT_S
        self.emotion = LiveEmotion(cfg.emotion, cfg.sample_rate, batch_s=EMOTION_HANDOVER_S if spare >= 0.05 else 0.0)
        self.mel_rows = Rows.empty(cfg.n_mels)
        self.emotion_rows = Rows.empty(N_EMOTION)
        self.frames = 0  # frames [0, frames) are out
        self.samples = 0  # at the feature rate
        self.counts = {"emotion_partial_context_frames": 0, "emotion_nonfinite_filled": 0}
        # Audio until the first emotion row: a stream shorter than one context gets its
        # functionals over the whole signal at the end ("first"), as a whole file does.
        self._head: list[np.ndarray] | None = [] if cfg.emotion.before_first_context == "first" else None
        self.right_context_s = right_context_s(cfg, source_rate)

    @property
    def duration_s(self) -> float:
        return self.samples / self.cfg.sample_rate

    def push(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = self.audio.push(data)
        self.emotion.write(y)
        self._feed(y, *self.mel.push(y), *self.emotion.take(EMOTION_BATCH))
        return self._frames(finished=False)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """The remaining frames (the audio checks of a whole file run here: AudioError)."""
        try:
            y = self.audio.finish()
            self.emotion.write(y)
            self._feed(y, *self.mel.push(y), *self.emotion.finish())
            self._feed(np.zeros(0, np.float32), *self.mel.finish(), *self.emotion.take())
        finally:
            self.emotion.close()
        return self._frames(finished=True)

    def close(self) -> None:
        self.emotion.close()

    def _feed(self, y, mel, mel_t, emo, emo_t) -> None:
        self.samples += len(y)
        if self._head is not None:
            self._head.append(y)
        self.mel_rows.add(mel, mel_t)
        if len(emo):
            emo, filled = fill_nonfinite(emo, self.cfg.emotion)
            self.counts["emotion_nonfinite_filled"] += filled
            self.emotion_rows.add(emo, emo_t)
            self._head = None

    def _frames(self, finished: bool) -> tuple[np.ndarray, np.ndarray]:
        cfg, e = self.cfg, self.cfg.emotion
        upto = self._ready(finished)
        if upto <= self.frames:
            return np.zeros((0, cfg.n_mels), np.float32), np.zeros((0, N_EMOTION), np.float32)
        times = frame_times(upto, cfg.fps)[self.frames :]
        mel = self.mel_rows.grid(times)
        emotion = self._emotion_at(times - e.delay_s, finished)
        self.frames = upto
        self.mel_rows.drop_before(times[-1])
        self.emotion_rows.drop_before(times[-1] - e.delay_s)
        return mel, emotion

    def _ready(self, finished: bool) -> int:
        """Frames [frames, n) whose rows are all here."""
        cfg = self.cfg
        if finished:
            return n_frames(self.duration_s, cfg.fps)
        k = self.frames
        while True:
            t = k / cfg.fps
            if t >= self.duration_s or not self.mel_rows.covers(t) or not self._emotion_ready(t - cfg.emotion.delay_s):
                return k
            k += 1

    def _emotion_ready(self, t: float) -> bool:
        e = self.cfg.emotion
        if t < e.context_s - 1e-9 and e.before_first_context == "fill":
            return True  # before the first full context: the fill, no row needed
        ready = (lambda: len(self.emotion_rows.times) > 0) if t < e.context_s - 1e-9 else (
            lambda: self.emotion_rows.covers(t))  # fmt: skip
        if not ready():  # rows may be waiting in openSMILE's hand-over: take them now
            self._feed(np.zeros(0, np.float32), *_NO_MEL, *self.emotion.take())
        return ready()

    def _emotion_at(self, t: np.ndarray, finished: bool) -> np.ndarray:
        e = self.cfg.emotion
        out = np.empty((len(t), N_EMOTION), np.float32)
        before = t < e.context_s - 1e-9
        self.counts["emotion_partial_context_frames"] += int(np.count_nonzero(before))
        rows = self.emotion_rows
        if len(rows.times) == 0:  # no context ever completed (finished: a stream shorter than one context)
            if e.before_first_context == "fill":
                out[:] = np.float32(e.nonfinite_fill)
            else:
                whole = np.concatenate(self._head or [np.zeros(0, np.float32)])
                row, filled = fill_nonfinite(whole_file_functionals(whole, self.cfg.sample_rate, e), e)
                self.counts["emotion_nonfinite_filled"] += filled
                out[:] = row[0]
            return out
        if e.before_first_context == "fill" and before.any():
            out[before] = np.float32(e.nonfinite_fill)
            if not (~before).any():
                return out
            out[~before] = rows.grid(t[~before])
            return out
        out[:] = rows.grid(t)
        return out
