"""Chunked (streaming) prediction: audio arrives N seconds at a time and curves leave with a
fixed latency, matching whole-file prediction.

State carried between chunks: the resampler (soxr's streaming resampler gives the one-shot
result exactly), the 16 kHz samples still needed as left context, the features of frames
already computed (a block's window reaches L - K - lookahead frames before the block) and
the last smoothed output. Each chunk featurizes the new frames from a segment that starts on
the 10 ms grid with enough left context (emotion context + extractor margin) and stops an
extractor margin short of the audio received; a block of K frames is predicted once the
lookahead frames after its last frame are featurized, so a frame waits for up to K - 1
later frames as well (the latency frame blocks add).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from blendsync.shared.audio import AudioError
from blendsync.shared.features import emotion_rows, fill_nonfinite, mel_rows, whole_file_functionals
from blendsync.shared.frame_grid import frame_times, n_frames, rows_to_grid

# Audio beyond a frame's own context that its features depend on: the mel window reaches
# 16 ms to either side; openSMILE's LLD frames reach 50 ms past a context's end, and its
# smoothers (3-frame moving averages, F0 Viterbi) settle within a few hundred ms.
LEFT_MARGIN_S = 1.0
RIGHT_MARGIN_S = 0.3
# openSMILE's first functional row needs its context plus its 60 ms F0 frame.
FIRST_CONTEXT_MARGIN_S = 0.1


def _features(pred, seg: np.ndarray, sr: int, seg_start: int, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (mel (k1-k0, M), emotion (k1-k0, E)) of frames [k0, k1) computed from the
    samples seg, which start at sample seg_start of the file, on the 10 ms grid so that the
    extractors' rows fall where the whole-file rows do. Gridding as shared.features does it
    for a whole file."""
    cfg = pred.feature_config
    t = frame_times(k1, cfg.fps)[k0:] - seg_start / sr
    rows, rt = mel_rows(seg, sr, cfg.mel)
    mel = rows_to_grid(rows, rt, t).values
    got = emotion_rows(seg, sr, cfg.emotion)
    if got is None:  # the whole file so far is shorter than one context
        row = fill_nonfinite(whole_file_functionals(seg, sr, cfg.emotion), cfg.emotion)[0]
        emo = np.repeat(row, len(t), axis=0)
    else:
        er, ends = got
        emo = rows_to_grid(fill_nonfinite(er, cfg.emotion)[0], ends, t).values
    return mel, emo.astype(np.float32)


def animate_chunked(pred, audio: str | Path, chunk_seconds: float) -> dict:
    """Curves (T, C) at the model's fps computed chunk by chunk (see the module docstring),
    with the audio duration, featurize and model seconds, and the latency in seconds from a
    sample arriving to its frame's curves, at most (chunk + extractor margin + lookahead +
    K - 1 frames of the block; compute comes on top)."""
    cfg = pred.feature_config
    sr = cfg.sample_rate
    try:
        info = sf.info(str(audio))
    except Exception as e:
        raise AudioError(f"{audio}: cannot decode audio ({e})") from None
    block = max(1, int(round(chunk_seconds * info.samplerate)))
    rs = soxr.ResampleStream(info.samplerate, sr, 1, dtype="float32", quality="VHQ")
    # Only what later chunks still need is kept: samples from the last segment's start
    # (y[0] is sample y_base of the file) and features from the earliest frame a future
    # window reaches (mel[0] is frame f_base), so memory stays bounded on endless streams.
    y, y_base = np.zeros(0, np.float32), 0
    mel = emo = None
    f_base = 0
    la, K = pred.lookahead, pred.frames_per_window
    reach = pred.reach  # frames a block's window reaches before the block
    fps = cfg.fps
    hop = int(round(0.01 * sr))
    featurized = 0  # frames [0, featurized) have features
    done = 0  # frames [0, done) have curves
    prev = None
    out: list[np.ndarray] = []
    feat_s = model_s = 0.0
    blocks = list(sf.blocks(str(audio), blocksize=block, dtype="float32", always_2d=True))
    for i, data in enumerate(blocks):
        final = i == len(blocks) - 1
        mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        y = np.concatenate([y, np.clip(rs.resample_chunk(mono, last=final), -1, 1)])
        have_s = (y_base + len(y)) / sr
        if final:
            upto = n_frames(have_s, fps)
        elif have_s < cfg.emotion.context_s + FIRST_CONTEXT_MARGIN_S + RIGHT_MARGIN_S:
            # The first full context (which frames before it share) is not complete yet.
            upto = featurized
        else:
            upto = max(featurized, int(math.floor((have_s - RIGHT_MARGIN_S) * fps)))
        if upto > featurized:
            start_t = featurized / fps - cfg.emotion.context_s - LEFT_MARGIN_S
            seg_start = max(y_base, int(math.floor(start_t * sr / hop)) * hop)
            y, y_base = y[seg_start - y_base :], seg_start
            t0 = time.perf_counter()
            m, e = _features(pred, y, sr, seg_start, featurized, upto)
            feat_s += time.perf_counter() - t0
            mel = m if mel is None else np.concatenate([mel, m])
            emo = e if emo is None else np.concatenate([emo, e])
            featurized = upto
        # Blocks whose window lies within the frames featurized (all of them at the end).
        ready = -(-featurized // K) if final else max(0, featurized - la) // K
        last = featurized if final else ready * K
        if last > done:
            t0 = time.perf_counter()
            cur = pred.current_blocks(mel, emo, range(done // K, ready), first=f_base,
                                      final_frames=featurized if final else None)
            sm = pred.smooth(cur, prev)
            prev = sm[-1]
            out.append(sm)
            done = last
            keep = max(f_base, done - reach)
            mel, emo, f_base = mel[keep - f_base :], emo[keep - f_base :], keep
            model_s += time.perf_counter() - t0
    if not out:
        raise AudioError(f"{audio}: no frames")
    return {
        "curves": np.concatenate(out), "duration_s": (y_base + len(y)) / sr, "featurize_s": feat_s,
        "model_s": model_s,
        "latency_s": chunk_seconds + RIGHT_MARGIN_S + (la + K - 1) / fps,
    }
