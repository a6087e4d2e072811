"""The per-file featurize function: audio (+ targets) -> arrays on the frame grid.

bsfeat calls it once per manifest row (one Dask task per file); predict calls the same
function on new audio, so training and inference features cannot drift apart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blendsync.shared.audio import DecodedAudio, decode_audio
from blendsync.shared.config import FeatureConfig
from blendsync.shared.features import compute_features
from blendsync.shared.features.pieces import ONE_PASS, Workers
from blendsync.shared.frame_grid import n_frames
from blendsync.shared.sync import SyncConfig, estimate_lag
from blendsync.shared.targets import TargetError, TargetSpec, read_targets, targets_on_grid, time_scaled

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeaturizedFile:
    """mel: (T, n_mels) float32; emotion: (T, 88) float32; targets: (T, C) float32 in [0, 1]
    or None for audio without targets; info: JSON-able facts for the item's attrs."""

    mel: np.ndarray
    emotion: np.ndarray
    targets: np.ndarray | None
    info: dict

    @property
    def frames(self) -> int:
        return int(self.mel.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"mel": self.mel, "emotion": self.emotion}
        if self.targets is not None:
            out["targets"] = self.targets
        return out


def featurize_file(
    audio: str | Path | DecodedAudio,
    targets: TargetSpec | None,
    cfg: FeatureConfig,
    *,
    sync: SyncConfig = SyncConfig(),
    workers: Workers = ONE_PASS,
    speed: float = 1.0,
) -> FeaturizedFile:
    """Raises AudioError / TargetError (both ValueError) naming the file for unusable input.

    A take with targets also gets its audio/curve lag estimated (info["sync"]: the estimate of
    the curves as read, shift_frames 0; bsfeat extract --auto-sync makes shifted copies of the
    items out of sync, featurize.extract.align_out_of_sync). workers: a long file's openSMILE
    pass in pieces at once (shared.features.pieces), with the same features. audio may be
    already decoded at cfg.sample_rate (predict keeps the samples for its plot). speed: the
    audio plays `speed` times as fast as it was captured (an --augment variant,
    featurize.audio_variants): the curves are time-scaled with it."""
    if isinstance(audio, DecodedAudio):
        if audio.sample_rate != cfg.sample_rate:
            raise ValueError(f"decoded audio at {audio.sample_rate} Hz, the feature config's is {cfg.sample_rate} Hz")
        if audio.source_sample_rate != audio.sample_rate and audio.resampler != cfg.resampler:
            raise ValueError(f"audio resampled by {audio.resampler}, the feature config's resampler is {cfg.resampler}")
        dec = audio
    else:
        dec = decode_audio(audio, cfg.sample_rate, cfg.resampler)
    audio_s = dec.duration_s
    info: dict = {
        "audio_duration_s": audio_s,
        "source_sample_rate": dec.source_sample_rate,
        "source_channels": dec.source_channels,
        "source_format": dec.source_format,
        "audio_clipped_samples": dec.clipped_samples,
    }
    curves = None
    duration = audio_s
    if targets is not None:
        curves = time_scaled(read_targets(targets, cfg.channels, cfg.targets.jitter_tolerance), speed)
        target_s = curves.duration_s
        diff = target_s - audio_s
        if abs(diff) > cfg.targets.max_mismatch_s:
            raise TargetError(
                f"{targets.describe()}: targets last {target_s:.3f} s but audio {audio} lasts "
                f"{audio_s:.3f} s (difference {abs(diff):.3f} s > tolerance "
                f"{cfg.targets.max_mismatch_s} s)"
            )
        duration = min(audio_s, target_s)
        info.update(
            targets_duration_s=target_s,
            targets_source_fps=curves.fps,
            targets_source_format=curves.source_format,
            targets_source_frames=int(curves.values.shape[0]),
            targets_notes=list(curves.notes),
            trimmed_s=abs(diff),
        )
    T = n_frames(duration, cfg.fps)
    feats = compute_features(dec.samples, dec.sample_rate, T, cfg, workers)
    counts = {**feats["mel"].counts, **feats["emotion"].counts}
    tgt = None
    if curves is not None:
        tg = targets_on_grid(curves, cfg.fps, T)
        tgt = tg.values
        counts.update(tg.counts)
        if tg.counts["targets_clipped_values"]:
            log.warning(
                "%s: %d target values outside [0, 1] were clipped",
                targets.describe(),
                tg.counts["targets_clipped_values"],
            )
        est = estimate_lag(feats["mel"].values, tgt, cfg.channels.channels, cfg.fps, sync)
        info["sync"] = {**est.to_doc(), "shift_frames": 0, "auto_sync": False, "config": sync.to_dict()}
    info["frames"] = T
    info["counts"] = counts
    return FeaturizedFile(feats["mel"].values, feats["emotion"].values, tgt, info)
