"""bstrain fit --init-from: start a run from another run's weights, on other data or another rig.

The optimiser and schedule start afresh. The model (sizes, window, lookahead, frames per
window) is the checkpoint's; the features must be those it was trained on. Channels are
matched by name: the rows of every per-channel parameter (model.PER_CHANNEL) of a channel
both have are copied; a channel only the new data has keeps its fresh start (its output at
its training mean); a channel only the checkpoint has is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from blendsync.train.core.checkpoint import Checkpoint
from blendsync.train.core.config import ConfigOverrides, TrainConfig
from blendsync.train.core.model import PER_CHANNEL, BlendshapeModel
from blendsync.train.core.normalization import Normalizer

log = logging.getLogger(__name__)

# The stream settings that are part of a trained model.
MODEL_STREAM_KEYS = ("window", "lookahead", "frames_per_window")


@dataclass(frozen=True)
class InitFrom:
    """The run to start from. keep_normalization: standardise the features with its input
    statistics (mel and emotion means and spreads) instead of the new training split's."""

    path: Path
    checkpoint: Checkpoint
    keep_normalization: bool = False

    @classmethod
    def load(cls, path: str | Path, keep_normalization: bool = False) -> InitFrom:
        return cls(Path(path), Checkpoint.load(path), keep_normalization)


@dataclass(frozen=True)
class ChannelMatch:
    matched: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"matched": self.matched, "new": self.new, "dropped": self.dropped}


def fine_tune_config(cfg: TrainConfig, init: InitFrom, overrides: ConfigOverrides) -> TrainConfig:
    """cfg with the checkpoint's model: its model section and preset, window, lookahead and
    frames per window. ValueError when a choice (--preset, -K, --set model.*) asks for another."""
    own = init.checkpoint.config
    have = {
        "preset": own.preset,
        **{f"model.{k}": v for k, v in own.to_dict()["model"].items()},
        **{f"stream.{k}": getattr(own.stream, k) for k in MODEL_STREAM_KEYS},
    }
    asked = [
        overrides.sources.get(key, key)
        for key, value in have.items()
        if overrides.asks(key) is not None and overrides.asks(key) != value
    ]
    if asked:
        raise ValueError(
            f"--init-from {init.path}: fine-tuning keeps that checkpoint's model; "
            f"{' and '.join(asked)} would change it (its preset is {own.preset}, "
            f"{own.stream.frames_per_window} frames per window)"
        )
    s = own.stream
    return TrainConfig.from_dict(
        {
            **cfg.to_dict(),
            "preset": own.preset,
            "model": own.to_dict()["model"],
            "stream": {
                **cfg.to_dict()["stream"],
                "window": s.window,
                "lookahead": s.lookahead,
                "frames_per_window": s.frames_per_window,
            },
        }
    )


def starting_statistics(norm: Normalizer, init: InitFrom) -> Normalizer:
    """The new training split's statistics, with the checkpoint's feature statistics when
    keep_normalization (the targets' are always the new data's: its channels)."""
    if not init.keep_normalization:
        return norm
    n = init.checkpoint.normalizer
    return replace(norm, mel_mean=n.mel_mean, mel_std=n.mel_std, emotion_mean=n.emotion_mean, emotion_std=n.emotion_std)


def transfer_weights(model: BlendshapeModel, init: InitFrom, channels: list[str]) -> ChannelMatch:
    """Load the checkpoint's weights into model (built for `channels`, its head already at
    the new training means), per-channel rows by name."""
    ck = init.checkpoint
    src = ck.model_state
    have = {c: i for i, c in enumerate(ck.channels)}
    match = ChannelMatch(
        [c for c in channels if c in have],
        [c for c in channels if c not in have],
        [c for c in ck.channels if c not in set(channels)],
    )
    state = model.state_dict()
    rows_to = torch.tensor([i for i, c in enumerate(channels) if c in have], dtype=torch.long)
    rows_from = torch.tensor([have[c] for c in channels if c in have], dtype=torch.long)
    with torch.no_grad():
        for name, value in state.items():
            if name in PER_CHANNEL:
                if len(rows_to):
                    value.index_copy_(0, rows_to, src[name].to(value.dtype).index_select(0, rows_from))
            else:
                value.copy_(src[name])  # state_dict() tensors share the parameters' storage
    return match
