"""Feature augmentation: what each part does to a batch, and that training with it resumes exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import tiny

from blendsync.train.core.checkpoint import load_checkpoint
from blendsync.train.core.config import AugmentConfig, TrainConfig
from blendsync.train.loop.augment import FeatureAugmenter
from blendsync.train.loop.trainer import fit

B, L, M, E = 64, 40, 80, 88


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mel, emo = torch.randn(B, L, M, generator=g), torch.randn(B, L, E, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[:, :5] = False  # padded start of a file
    return mel, emo, mask


def test_gain_shifts_every_real_frame_by_one_level_in_db():
    mel, emo, mask = batch()
    std = np.linspace(0.5, 2.0, M).astype(np.float32)
    aug = FeatureAugmenter(AugmentConfig(gain_db=6.0, emotion_dropout=0.0), std, torch.device("cpu"))
    out, out_emo = aug(mel, emo, mask)
    ln_shift = (out - mel) * torch.from_numpy(std)  # back to log-mel units
    assert torch.equal(out[:, :5], mel[:, :5]) and torch.equal(out_emo, emo)
    per_window = ln_shift[:, 5:] / (math.log(10) / 10)  # dB, one value per window
    level = per_window[:, 0, 0]
    assert torch.allclose(per_window, level[:, None, None].expand_as(per_window), atol=1e-4)
    assert level.abs().max() <= 6.0 + 1e-4 and level.std() > 2.0  # spread over ±6 dB


def test_masks_cover_bounded_spans_with_the_training_mean():
    mel, emo, mask = batch()
    out, _ = FeatureAugmenter(
        AugmentConfig(time_masks=2, time_mask_frames=7, emotion_dropout=0.0), np.ones(M), torch.device("cpu")
    )(mel, emo, mask)
    masked_frames = (out == 0).all(dim=2)  # (B, L)
    assert masked_frames.any()
    assert int(masked_frames.sum(dim=1).max()) <= 14  # two spans of at most 7 frames
    assert torch.equal(out[~masked_frames], mel[~masked_frames])
    out, _ = FeatureAugmenter(
        AugmentConfig(freq_masks=1, freq_mask_bins=10, emotion_dropout=0.0), np.ones(M), torch.device("cpu")
    )(mel, emo, mask)
    masked_bins = (out == 0).all(dim=1)  # (B, M)
    assert masked_bins.any() and int(masked_bins.sum(dim=1).max()) <= 10
    spans = [torch.nonzero(r).flatten() for r in masked_bins if r.any()]
    assert all(int(s[-1] - s[0]) + 1 == len(s) for s in spans)  # one contiguous band


def test_emotion_dropout_drops_whole_windows_at_its_rate():
    torch.manual_seed(0)
    mel, emo, mask = batch()
    drops = 0
    for _ in range(20):
        _, out = FeatureAugmenter(AugmentConfig(emotion_dropout=0.3), np.ones(M), torch.device("cpu"))(mel, emo, mask)
        zero = (out == 0).flatten(1).all(dim=1)
        kept = (out == emo).flatten(1).all(dim=1)
        assert bool((zero | kept).all())
        drops += int(zero.sum())
    assert 0.25 < drops / (20 * B) < 0.35


def test_defaults_and_old_checkpoints():
    a = TrainConfig().augment  # the benchmark's choice: emotion dropout only
    assert a.emotion_dropout == 0.5 and not (a.gain_db or a.time_masks or a.freq_masks)
    old = TrainConfig.from_checkpoint_json('{"stream": {}, "loss": {"preset": "default"}}')
    assert not old.augment.active and old.loss.still_max == 0.0


@pytest.mark.parametrize("bad", [{"gain_db": -1}, {"emotion_dropout": 1.0}, {"time_masks": -1}, {"freq_mask_bins": 0}])
def test_bad_values_are_named(bad):
    with pytest.raises(ValueError, match=f"augment.{next(iter(bad))}"):
        TrainConfig.from_dict({"augment": bad})


@pytest.mark.slow
def test_augmented_training_resumes_bit_identically(example_store, tmp_path):
    cfg = tiny(optim={"epochs": 1}, augment={"gain_db": 6.0, "time_masks": 2, "freq_masks": 2, "emotion_dropout": 0.2})
    whole = fit(example_store, cfg=cfg, out=tmp_path / "whole")
    part = fit(example_store, cfg=cfg, out=tmp_path / "part", stop_after_steps=whole.step // 2 + 1)
    assert part.interrupted
    fit(example_store, cfg=TrainConfig(), out=tmp_path / "part", resume=True)
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    plain = fit(example_store, cfg=tiny(optim={"epochs": 1}, augment={"emotion_dropout": 0.0}), out=tmp_path / "plain")
    c = load_checkpoint(plain.run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the augmentation did act
