"""Feature-level augmentation of training batches (AugmentConfig): a log-mel level offset,
SpecAugment-style time and frequency masks on the mel stream, and emotion-stream dropout.

It runs on the device on the standardised features, drawing from torch's seeded RNG (so a
resumed run draws what an uninterrupted one would), and never reads a value back. Shapes:
mel (B, L, M), emotion (B, L, E), frame_mask (B, L) True = real frame.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from blendsync.train.core.config import AugmentConfig

# dB -> natural-log power units (log-mel is ln(power + floor)).
_LN_PER_DB = math.log(10.0) / 10.0


class FeatureAugmenter:
    def __init__(self, cfg: AugmentConfig, mel_std: np.ndarray, device: torch.device):
        self.cfg = cfg
        # A level offset of g dB is g·ln(10)/10 in log-mel, g·ln(10)/10 / std per standardised bin.
        self.per_db = torch.as_tensor(_LN_PER_DB / np.asarray(mel_std, np.float32), device=device)

    def __call__(
        self, mel: torch.Tensor, emotion: torch.Tensor, frame_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        B, L, M = mel.shape
        dev = mel.device
        if c.gain_db:
            level = (torch.rand(B, device=dev) * 2 - 1) * c.gain_db  # (B,) dB
            mel = mel + level[:, None, None] * self.per_db[None, None, :] * frame_mask[..., None].to(mel.dtype)
        if c.time_masks:
            mel = mel.masked_fill(_spans(B, L, c.time_masks, c.time_mask_frames, dev)[:, :, None], 0.0)
        if c.freq_masks:
            mel = mel.masked_fill(_spans(B, M, c.freq_masks, c.freq_mask_bins, dev)[:, None, :], 0.0)
        if c.emotion_dropout:
            keep = (torch.rand(B, device=dev) >= c.emotion_dropout).to(emotion.dtype)
            emotion = emotion * keep[:, None, None]
        return mel, emotion


def _spans(B: int, n: int, count: int, widest: int, dev: torch.device) -> torch.Tensor:
    """(B, n) bool: per row, the union of `count` spans, each of a width uniform in
    0..min(widest, n) at a uniform start that keeps it inside 0..n."""
    pos = torch.arange(n, device=dev)
    out = torch.zeros(B, n, dtype=torch.bool, device=dev)
    top = min(widest, n)
    for _ in range(count):
        width = torch.floor(torch.rand(B, device=dev) * (top + 1))
        start = torch.floor(torch.rand(B, device=dev) * (n - width + 1))
        out |= (pos[None, :] >= start[:, None]) & (pos[None, :] < (start + width)[:, None])
    return out
