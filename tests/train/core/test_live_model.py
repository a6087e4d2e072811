"""The live model: frame-by-frame steps with cached keys and values give exactly what its
windows give (the training and whole-file path), whatever the lookahead and depth; the live
preset and its window."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from blendsync.shared.config import FeatureConfig
from blendsync.train.core.build import build_model
from blendsync.train.core.config import ConfigOverrides, TrainConfig, live_window, receptive_frames


def _model(lookahead: int, layers: int, K: int = 16, channels: int = 5, seed: int = 0):
    torch.manual_seed(seed)
    cfg = TrainConfig().with_preset("live")
    m = dataclasses.replace(cfg.model, mel_layers=layers, emotion_layers=layers, attention_span=6, context_frames=9)
    s = dataclasses.replace(cfg.stream, lookahead=lookahead, frames_per_window=K, window=live_window(K, lookahead, m))
    model = build_model(dataclasses.replace(cfg, model=m, stream=s), FeatureConfig(), channels).eval()
    with torch.no_grad():  # weights away from their neutral start, so that every path matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.decoder.train()  # its outputs unclamped, so that no change hides at 0 or 1 (it has no dropout)
    return model, s


def _windowed(model, s, mel, emo):
    """Every frame's unsmoothed output, one window per block, as whole-file predict cuts them."""
    T = mel.shape[0]
    a, _ = model.positions
    out = []
    for f in range(0, T, s.frames_per_window):
        idx = torch.arange(f - a, f - a + s.window)
        real = (idx >= 0) & (idx < T)
        take = idx.clamp(0, T - 1)
        w_mel = torch.where(real[:, None], mel[take], 0.0)[None]
        w_emo = torch.where(real[:, None], emo[take], 0.0)[None]
        with torch.no_grad():
            out.append(model(w_mel, w_emo, real[None])["current"][0])
    return torch.cat(out)[:T]


def _stepped(model, mel, emo):
    state, out = model.start(1), []
    for t in range(mel.shape[0]):
        o = model.step(state, mel[t : t + 1], emo[t : t + 1])
        if o is not None:
            out.append(o)
    for _ in range(model.lookahead):  # the frames after the end that the last frames look ahead to
        out.append(model.step(state, torch.zeros(1, mel.shape[1]), torch.zeros(1, emo.shape[1]), real=False))
    return torch.cat([o["current"] for o in out]), torch.cat([o["smoothed"] for o in out])


@pytest.mark.parametrize("lookahead,layers", [(0, 1), (3, 1), (5, 2)])
def test_steps_equal_the_windows(lookahead, layers):
    model, s = _model(lookahead, layers)
    g = torch.Generator().manual_seed(1)
    T = 61  # not a multiple of the block: the last block's frames past the end are padding
    mel, emo = torch.randn(T, 80, generator=g), torch.randn(T, 88, generator=g)
    current, smoothed = _stepped(model, mel, emo)
    assert current.shape == (T, 5)
    torch.testing.assert_close(current, _windowed(model, s, mel, emo), rtol=0, atol=1e-5)
    alpha = torch.sigmoid(model.smoothing_alpha).item()
    want = current.clone()
    for t in range(1, T):  # the recursive filter, reset at the stream's start only
        want[t] = alpha * current[t] + (1 - alpha) * want[t - 1]
    torch.testing.assert_close(smoothed, want, rtol=0, atol=1e-5)


def test_a_frame_depends_on_nothing_beyond_its_lookahead_nor_before_its_reach():
    model, s = _model(lookahead=2, layers=2)
    g = torch.Generator().manual_seed(2)
    T = 60
    mel, emo = torch.randn(T, 80, generator=g), torch.randn(T, 88, generator=g)
    base, _ = _stepped(model, mel, emo)
    k, reach = 30, receptive_frames(model.cfg)
    later = mel.clone()
    later[k + 3 :] += 5.0  # past frame k's lookahead (2)
    earlier = mel.clone()
    earlier[: k + 2 - reach] += 5.0  # before the first frame its output can reach
    for changed in (later, earlier):
        torch.testing.assert_close(_stepped(model, changed, emo)[0][k], base[k], rtol=0, atol=1e-6)
    nearer = mel.clone()
    nearer[k + 2] += 5.0  # inside its lookahead: it must move
    assert (_stepped(model, nearer, emo)[0][k] - base[k]).abs().max() > 1e-4


def test_the_live_preset_and_its_window():
    cfg, why = ConfigOverrides(preset="live").resolve(TrainConfig(), "cpu")
    assert cfg.model.streaming and cfg.stream.frames_per_window == 64 and cfg.stream.lookahead == 2
    assert cfg.stream.window == 64 + 2 + receptive_frames(cfg.model)
    more, _ = ConfigOverrides(preset="live", values={"stream.lookahead": 6}).resolve(TrainConfig(), "cpu")
    assert more.stream.window == cfg.stream.window + 4  # the window follows the lookahead
    with pytest.raises(ValueError, match="stream.window must be at least"):
        ConfigOverrides(preset="live", values={"stream.window": 64}).resolve(TrainConfig(), "cpu")
    small, _ = ConfigOverrides(preset="small").resolve(TrainConfig(), "cpu")
    assert not small.model.streaming and small.stream.window == 256
