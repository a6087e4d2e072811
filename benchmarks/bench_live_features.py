#!/usr/bin/env python3
"""Live features against the chunked re-extraction they replace, in the same run.

For real speech pushed in 10 ms chunks (a sound card's buffer):
1. CPU per 33 ms frame (process CPU: every thread, openSMILE's own included) of
   shared.streams.live.LiveFeatures against FeatureStream below (the chunked re-extraction an
   offline model streamed on before: it re-runs openSMILE over about 2.4 s of audio per push)
   at 10 ms and at its usual 0.1 s.
2. Equality with whole-file features: the largest difference of each stream.
3. openSMILE's hand-over delay: audio received past a context's end when its row comes out.
4. Memory over a long stream (--minutes): the growth of the process's resident memory with the
   live ring buffers (a fresh process per variant) against openSMILE's default growing buffers.

    python benchmarks/bench_live_features.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPEECH = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data")) / "speech"
FILES = ("ljspeech_LJ050-0131_22k.wav", "neurosync_input_88k.wav", "cmu_arctic_a0007_16k.wav")


def cpu_per_frame(make, data: np.ndarray, sr: int, chunk_s: float) -> tuple[float, np.ndarray, np.ndarray]:
    stream = make(sr)
    step = max(1, int(chunk_s * sr))
    c0 = time.process_time()
    out = [stream.push(data[i : i + step]) for i in range(0, len(data), step)]
    out.append(stream.finish())
    cpu = time.process_time() - c0
    mel, emo = np.concatenate([m for m, _ in out]), np.concatenate([e for _, e in out])
    return cpu / len(mel), mel, emo


def emission_delays(y: np.ndarray) -> np.ndarray:
    """Seconds of audio past each row's context end when the row came out (10 ms writes, a
    short pause after each so that openSMILE keeps up, as in real time)."""
    from blendsync.shared.config import FEATURE_PRESETS
    from blendsync.shared.streams.live import LiveEmotion

    emo = LiveEmotion(FEATURE_PRESETS["default"].emotion, 16000)
    out = []
    for i in range(0, len(y), 160):
        emo.write(y[i : i + 160])
        time.sleep(0.003)
        _, ends = emo.take()
        out += [(i + 160) / 16000 - e for e in ends]
    emo.finish()
    emo.close()
    return np.asarray(out)


def rss_mb() -> float:
    """This process's resident memory now (VmRSS), MB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def memory_child(minutes: float, ring: bool) -> None:
    """Run in a fresh process: stream `minutes` of speech through openSMILE, print peak RSS growth."""
    from blendsync.shared.audio import decode_audio
    from blendsync.shared.config import FEATURE_PRESETS
    from blendsync.shared.features.smile import EXTERNAL_SINK
    from blendsync.shared.streams.live import LiveEmotion

    y = np.concatenate([decode_audio(SPEECH / f, 16000).samples for f in FILES])
    cfg = FEATURE_PRESETS["default"].emotion
    emo = LiveEmotion(cfg, 16000)
    if not ring:  # the same stream with openSMILE's own growing buffers
        emo.close()
        from blendsync.shared.features import _smile

        s = _smile(cfg.feature_set, cfg.context_s, cfg.hop_s)
        emo._smile = s.start({**s.options(), "sampleRate": 16000})  # the package's source and buffers
        emo._smile.external_sink_set_callback_ex(EXTERNAL_SINK, emo._collect)
        import threading

        emo._thread = threading.Thread(target=emo._run, daemon=True)
        emo._thread.start()
    rss0 = rss_mb()
    total = int(minutes * 60 * 16000)
    done = 0
    while done < total:
        for i in range(0, len(y), 1600):
            emo.write(y[i : i + 1600])
            emo.take()
            done += 1600
            if done >= total:
                break
    grown = rss_mb() - rss0  # before the end of input, while every buffer holds what it holds
    emo.finish()
    print(grown)


# -- the baseline: features of audio as it arrives by re-extracting a segment per push ----------
from blendsync.shared.audio import AudioStream  # noqa: E402
from blendsync.shared.config import FeatureConfig  # noqa: E402
from blendsync.shared.features import features_at  # noqa: E402
from blendsync.shared.frame_grid import frame_times, n_frames  # noqa: E402

# Audio beyond a frame's own context that its features depend on: the mel window reaches
# 16 ms to either side; openSMILE's LLD frames reach 50 ms past a context's end, and its
# smoothers (3-frame moving averages, F0 Viterbi) settle within a few hundred ms.
LEFT_MARGIN_S = 1.0
RIGHT_MARGIN_S = 0.3
# openSMILE's first functional row needs its context plus its 60 ms F0 frame.
FIRST_CONTEXT_MARGIN_S = 0.1


class FeatureStream:
    """push(samples (N,) or (N, channels) at source_rate) -> (mel (n, M), emotion (n, E)) of
    the n frames they complete (n may be 0); finish() -> those of the remaining frames."""

    def __init__(self, cfg: FeatureConfig, source_rate: int, source: str = "<stream>"):
        self.cfg = cfg
        self.audio = AudioStream(source_rate, cfg.sample_rate, source, cfg.resampler)
        # Samples from the last segment's start on: y[0] is sample y_base of the stream.
        self._y, self._y_base = np.zeros(0, np.float32), 0
        self.frames = 0  # frames [0, frames) have features

    @property
    def duration_s(self) -> float:
        """Audio received so far, at the feature sample rate."""
        return (self._y_base + len(self._y)) / self.cfg.sample_rate

    def push(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._y = np.concatenate([self._y, self.audio.push(data)])
        have_s, cfg = self.duration_s, self.cfg
        if have_s < cfg.emotion.context_s + FIRST_CONTEXT_MARGIN_S + RIGHT_MARGIN_S:
            upto = self.frames  # the first full context (which frames before it share) is not complete yet
        else:
            upto = max(self.frames, int(math.floor((have_s - RIGHT_MARGIN_S) * cfg.fps)))
        return self._features(upto)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        self._y = np.concatenate([self._y, self.audio.finish()])
        return self._features(n_frames(self.duration_s, self.cfg.fps))

    def _features(self, upto: int) -> tuple[np.ndarray, np.ndarray]:
        cfg, sr = self.cfg, self.cfg.sample_rate
        if upto <= self.frames:
            return (np.zeros((0, cfg.n_mels), np.float32), np.zeros((0, cfg.n_emotion), np.float32))
        hop = int(round(0.01 * sr))
        start_t = self.frames / cfg.fps - cfg.emotion.context_s - LEFT_MARGIN_S
        seg_start = max(self._y_base, int(math.floor(start_t * sr / hop)) * hop)
        self._y, self._y_base = self._y[seg_start - self._y_base :], seg_start
        times = frame_times(upto, cfg.fps)[self.frames :] - seg_start / sr
        f = features_at(self._y, sr, times, cfg)
        self.frames = upto
        return f["mel"].values, f["emotion"].values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--memory-child", choices=["ring", "growing"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.minutes, args.memory_child == "ring")
        return
    import soundfile as sf

    from blendsync.shared.audio import decode_audio
    from blendsync.shared.config import FEATURE_PRESETS
    from blendsync.shared.features import compute_features
    from blendsync.shared.frame_grid import n_frames
    from blendsync.shared.streams.live import LiveFeatures

    cfg = FEATURE_PRESETS["live"]
    print(f"{cfg.hash}: the live feature config; process CPU per 33 ms frame, 10 ms chunks unless said")
    for name in FILES:
        data, sr = sf.read(str(SPEECH / name), dtype="float32", always_2d=True)
        dec = decode_audio(SPEECH / name, 16000, cfg.resampler)
        whole = compute_features(dec.samples, 16000, n_frames(len(dec.samples) / 16000, cfg.fps), cfg)
        live, mel, emo = cpu_per_frame(lambda r: LiveFeatures(cfg, r), data, sr, 0.01)
        old10, *_ = cpu_per_frame(lambda r: FeatureStream(cfg, r), data, sr, 0.01)
        old100, *_ = cpu_per_frame(lambda r: FeatureStream(cfg, r), data, sr, 0.1)
        print(
            f"  {name} ({len(data) / sr:.1f} s, {sr} Hz): live {1000 * live:.2f} ms; chunked re-extraction "
            f"{1000 * old10:.1f} ms ({old10 / live:.0f}x), at 0.1 s chunks {1000 * old100:.1f} ms "
            f"({old100 / live:.1f}x); "
            f"largest difference to the whole file: mel {np.abs(mel - whole['mel'].values).max():.1e}, "
            f"emotion {np.abs(emo - whole['emotion'].values).max():.1e}"
        )
    y = np.concatenate([decode_audio(SPEECH / f, 16000).samples for f in FILES])
    d = emission_delays(y) * 1000
    print(f"openSMILE hands a row over {np.median(d):.0f} ms (p50), {np.percentile(d, 99):.0f} ms (p99), "
          f"{d.max():.0f} ms (max) after its context's end ({len(d)} rows)")  # fmt: skip
    grown = {}
    for kind in ("ring", "growing"):
        r = subprocess.run([sys.executable, __file__, "--minutes", str(args.minutes), "--memory-child", kind],
                           capture_output=True, text=True, check=True)  # fmt: skip
        grown[kind] = float(r.stdout.strip().splitlines()[-1])
    print(f"{args.minutes:g} minutes streamed through openSMILE: resident memory grew {grown['ring']:.1f} MB with "
          f"the live ring buffers, {grown['growing']:.1f} MB with openSMILE's growing ones")  # fmt: skip


if __name__ == "__main__":
    main()
