"""The model a train config describes: the offline model (model.py) or the live one
(live_model.py, which builds on the offline model's parts), chosen in one place above both."""

from __future__ import annotations

from torch import nn

from blendsync.shared.config import FeatureConfig
from blendsync.train.core.config import TrainConfig
from blendsync.train.core.live_model import BlendshapeLiveModel
from blendsync.train.core.model import BlendshapeModel


def build_model(cfg: TrainConfig, features: FeatureConfig, channels: int) -> nn.Module:
    """The model a train config describes (sizes, window, lookahead, frames per window) for
    the features' widths (mel bins, eGeMAPS functionals) and C channels: the offline
    BlendshapeModel, or the live BlendshapeLiveModel (model.streaming; live_model.py)."""
    s = cfg.stream
    kw = dict(
        n_mels=features.n_mels,
        n_emotion=features.n_emotion,
        channels=channels,
        window=s.window,
        cfg=cfg.model,
        lookahead=s.lookahead,
        frames_per_window=s.frames_per_window,
    )
    if cfg.model.streaming:
        return BlendshapeLiveModel(**kw)
    return BlendshapeModel(**kw)
