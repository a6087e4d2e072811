"""The live model: the method notes' dual stream in a causal form whose cost per frame does
not grow with the window (docs/design.md, The live model).

Shapes: B windows, L frames, K block frames, M mel bins, E = 88 eGeMAPS, C channels,
d = d_model, h heads, A = model.attention_span, X = model.context_frames, la = lookahead.
    mel (B, L, M) -> per-bin series (B, M, L, d) -> causal self-attention over each bin's last
        A frames, with a learnt bias per distance -> mean over bins -> (B, L, d)
    emotion (B, L, E) -> (B, L, d) -> the same causal self-attention
    block frame p (window positions L - K - la ... L - 1 - la): blendshape_queries (C, d)
        attend to each stream's X encodings ending la frames after p (its lookahead), with a
        learnt bias per distance, plus the stream's encoding at p (target-frame residual)
        -> (B, K, C, d) twice
    fused, decoder, still-channel mask and smoothing: as the offline model (model.py)

No absolute position enters, so a frame's output depends only on the features la frames
after it and config.receptive_frames before those, wherever it sits: a window of
K + la + receptive_frames (config.live_window) gives every block frame the output the frame-by-frame stream gives
(LiveState and BlendshapeLiveModel.step: one encoder step per layer with cached keys and
values, tested equal). Training uses the windows (every block frame a target); a live host
steps frame by frame at a fixed cost.

A departure from the method notes on purpose: their encoders attend to the whole window in
both directions; here attention looks back A frames per layer and the channel queries X
frames, la of them ahead of the frame they predict. The offline model and its K = 1 mode stay
as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blendsync.train.core.config import ModelConfig, live_window
from blendsync.train.core.model import BlendshapeModel, Decoder, smooth_block


class CausalLayer(nn.Module):
    """Pre-norm self-attention over the current and A - 1 previous frames (a learnt bias per
    head and distance in place of positions) + feed-forward, as the offline EncoderLayer."""

    def __init__(self, d: int, heads: int, ff_mult: int, dropout: float, span: int):
        super().__init__()
        self.heads, self.span = heads, span
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))
        self.drop = nn.Dropout(dropout)
        self.distance_bias = nn.Parameter(torch.zeros(heads, span))

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (..., L, d) -> q, k, v (..., h, L, d / h)."""
        *lead, L, D = x.shape
        qkv = self.qkv(self.norm1(x)).view(*lead, L, 3, self.heads, D // self.heads)
        # (..., L, 3, h, d/h) -> (3, ..., h, L, d/h) by a permutation of non-negative dims:
        # torch's ONNX exporter turned the negative dims of movedim into a Transpose with
        # garbage in its perm (and at times a crash) for the window graph's 6-D tensors.
        n = qkv.dim()
        q, k, v = qkv.permute(n - 3, *range(n - 4), n - 2, n - 4, n - 1).unbind(0)
        return q, k, v

    def _finish(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """a (..., h, L, d / h) -> the layer's output (..., L, d)."""
        m = a.dim()
        a = a.transpose(m - 3, m - 2).reshape(*a.shape[:-3], a.shape[-2], -1)  # (..., L, h * d/h)
        x = x + self.drop(self.out(a))
        return x + self.drop(self.ff(self.norm2(x)))

    def band(self, L: int, pad: torch.Tensor | None, device) -> torch.Tensor:
        """(B or 1, 1, h, L, L) additive mask: the distance bias where 0 <= i - j < A and key j
        is a real frame (a frame always sees itself, so no row is empty), -inf elsewhere."""
        i = torch.arange(L, device=device)
        dist = i[:, None] - i[None, :]
        allowed = (dist >= 0) & (dist < self.span)
        bias = self.distance_bias[:, dist.clamp(0, self.span - 1)]  # (h, L, L)
        if pad is not None:
            allowed = allowed & (~pad[:, None, :] | (dist == 0))  # (B, L, L)
            allowed = allowed[:, None, None]
        else:
            allowed = allowed[None, None, None]
        return torch.where(allowed, bias, torch.tensor(float("-inf"), device=device, dtype=bias.dtype))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, S, L, d) (S sequences per window: M bins, or 1); mask from band()."""
        q, k, v = self._split(x)
        return self._finish(x, F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype)))

    def step(self, x: torch.Tensor, cache: LayerCache, mask: torch.Tensor) -> torch.Tensor:
        """x (B, S, d), the newest frame of every sequence -> (B, S, d). cache holds the keys and
        values of the A - 1 frames before it and is advanced by one; mask (B, 1, 1, A) is 0
        where a key may be attended to, -inf elsewhere. The arithmetic of forward(), with
        functional calls (a stream's step costs its Python overhead: no module calls here)."""
        D = self.norm1.normalized_shape[0]  # a constant, not a traced shape (one-frame graphs)
        h, dh = self.heads, D // self.heads
        y = F.layer_norm(x, (D,), self.norm1.weight, self.norm1.bias, self.norm1.eps)
        q, k, v = F.linear(y, self.qkv.weight, self.qkv.bias).unflatten(-1, (3, h, dh)).unbind(-3)  # (B, S, h, dh)
        keys = torch.cat([cache.k, k.unsqueeze(-2)], dim=-2)  # (B, S, h, A, dh): oldest first, the newest last
        values = torch.cat([cache.v, v.unsqueeze(-2)], dim=-2)
        scores = torch.matmul(keys, q.unsqueeze(-1)).squeeze(-1) * dh**-0.5 + (cache.bias + mask)
        a = torch.matmul(scores.softmax(-1).unsqueeze(-2), values).squeeze(-2)  # (B, S, h, dh)
        cache.k, cache.v = keys[..., 1:, :], values[..., 1:, :]
        x = x + F.linear(a.flatten(-2), self.out.weight, self.out.bias)
        y = F.layer_norm(x, (D,), self.norm2.weight, self.norm2.bias, self.norm2.eps)
        ff_in, ff_out = self.ff[0], self.ff[2]
        return x + F.linear(F.gelu(F.linear(y, ff_in.weight, ff_in.bias)), ff_out.weight, ff_out.bias)


@dataclass
class LayerCache:
    """Keys and values (B, S, h, A - 1, dh) of a causal layer's last A - 1 frames, and its
    distance bias by slot (h, A), oldest first."""

    k: torch.Tensor
    v: torch.Tensor
    bias: torch.Tensor


class CausalEncoder(nn.Module):
    def __init__(self, d: int, heads: int, layers: int, ff_mult: int, dropout: float, span: int):
        super().__init__()
        self.layers = nn.ModuleList(CausalLayer(d, heads, ff_mult, dropout, span) for _ in range(layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """x (B, S, L, d), pad (B, L) True = padding, or None -> (B, S, L, d)."""
        for layer in self.layers:  # each layer its own distance bias
            x = layer(x, layer.band(x.shape[-2], pad, x.device))
        return self.norm(x)

    def step(self, x: torch.Tensor, caches: list[LayerCache], mask: torch.Tensor) -> torch.Tensor:
        """x (B, S, d) -> (B, S, d), one frame."""
        for layer, cache in zip(self.layers, caches):
            x = layer.step(x, cache, mask)
        return F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias, self.norm.eps)

    def empty_caches(self, B: int, S: int, d: int, device) -> list[LayerCache]:
        out = []
        for layer in self.layers:
            h, A = layer.heads, layer.span
            z = torch.zeros(B, S, h, A - 1, d // h, device=device)
            out.append(LayerCache(z, z.clone(), layer.distance_bias.detach().flip(-1).clone()))
        return out


class CausalMelStream(nn.Module):
    """Frequency-axis split: each mel bin its own series (a bin embedding, no time embedding)."""

    def __init__(self, n_mels: int, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.value_proj = nn.Linear(1, d)
        self.bin_embedding = nn.Parameter(torch.randn(n_mels, d) * 0.02)
        self.encoder = CausalEncoder(d, cfg.heads, cfg.mel_layers, cfg.ff_mult, cfg.dropout, cfg.attention_span)

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, L, M) -> (B, M, L, d)."""
        return self.value_proj(mel.transpose(1, 2)[..., None]) + self.bin_embedding[:, None, :]

    def forward(self, mel: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """mel (B, L, M) -> (B, L, d)."""
        return self.encoder(self.embed(mel), pad).mean(dim=1)

    def step(self, mel: torch.Tensor, caches: list[LayerCache], mask: torch.Tensor) -> torch.Tensor:
        """mel (B, M), the newest frame -> (B, d)."""
        x = mel[..., None] * self.value_proj.weight[:, 0] + self.value_proj.bias + self.bin_embedding  # (B, M, d)
        return self.encoder.step(x, caches, mask).mean(dim=1)


class CausalEmotionStream(nn.Module):
    def __init__(self, n_features: int, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.proj = nn.Linear(n_features, d)
        self.encoder = CausalEncoder(d, cfg.heads, cfg.emotion_layers, cfg.ff_mult, cfg.dropout, cfg.attention_span)

    def forward(self, emotion: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """emotion (B, L, E) -> (B, L, d)."""
        return self.encoder(self.proj(emotion)[:, None], pad)[:, 0]

    def step(self, emotion: torch.Tensor, caches: list[LayerCache], mask: torch.Tensor) -> torch.Tensor:
        """emotion (B, E) -> (B, d)."""
        x = F.linear(emotion, self.proj.weight, self.proj.bias)[:, None]  # (B, 1, d)
        return self.encoder.step(x, caches, mask)[:, 0]


class ContextAttention(nn.Module):
    """The channel queries attending to one stream's last X encodings (a learnt bias per head
    and distance from the newest)."""

    def __init__(self, d: int, heads: int, context: int):
        super().__init__()
        self.heads, self.context = heads, context
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.distance_bias = nn.Parameter(torch.zeros(heads, context))

    def queries(self, queries: torch.Tensor) -> torch.Tensor:
        """(C, d) -> (h, C, dh), scaled."""
        C, D = queries.shape
        q = self.q_proj(queries).view(C, self.heads, D // self.heads).transpose(0, 1)
        return q / math.sqrt(D // self.heads)

    def keys_values(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., d) -> keys, values (..., h, dh)."""
        *lead, D = enc.shape
        return (self.k_proj(enc).view(*lead, self.heads, D // self.heads),
                self.v_proj(enc).view(*lead, self.heads, D // self.heads))  # fmt: skip

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """q (h, C, dh); k, v (B, K, X, h, dh) with the newest last; real (B, K, X) -> (B, K, C, d)."""
        scores = torch.einsum("hcd,bkxhd->bkhcx", q, k) + self.distance_bias.flip(-1)[:, None, :]
        real = real.clone()
        real[..., -1] = True  # the newest encoding is always attended to (no row without a key)
        scores = scores.masked_fill(~real[:, :, None, None, :], float("-inf"))
        a = torch.einsum("bkhcx,bkxhd->bkchd", scores.softmax(-1), v)
        return self.out_proj(a.flatten(-2))

    def step_key_value(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """enc (B, d), the newest encoding -> its key and value (B, h, 1, dh)."""
        D = self.k_proj.out_features
        shape = (-1, self.heads, 1, D // self.heads)
        return (F.linear(enc, self.k_proj.weight, self.k_proj.bias).view(shape),
                F.linear(enc, self.v_proj.weight, self.v_proj.bias).view(shape))  # fmt: skip

    def step_attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q (h, C, dh) from queries(); k, v (B, h, X, dh), the newest last; mask (B, h, 1, X): the
        distance bias where a key may be attended to, -inf elsewhere -> (B, C, d)."""
        scores = torch.matmul(q, k.transpose(-1, -2)) + mask  # (B, h, C, X)
        a = torch.matmul(scores.softmax(-1), v)  # (B, h, C, dh)
        return F.linear(a.transpose(1, 2).flatten(-2), self.out_proj.weight, self.out_proj.bias)

    def forward(self, queries: torch.Tensor, enc: torch.Tensor, pad: torch.Tensor | None, ends: torch.Tensor):
        """enc (B, L, d), pad (B, L) or None; ends (K,) the window position of each block frame's
        newest encoding -> (B, K, C, d)."""
        B, L, _ = enc.shape
        X = self.context
        idx = ends[:, None] - torch.arange(X - 1, -1, -1, device=enc.device)  # (K, X): oldest … newest
        real = (idx >= 0)[None].expand(B, -1, -1)
        idx = idx.clamp(min=0)
        if pad is not None:
            real = real & ~pad[:, idx]
        k, v = self.keys_values(enc)  # (B, L, h, dh)
        return self.attend(self.queries(queries), k[:, idx], v[:, idx], real)


class LiveDualStreamAttention(nn.Module):
    """Per-channel queries attend to each stream's recent encodings; learnable per-channel
    stream weights (the notes' fusion, as the offline DualStreamAttention)."""

    def __init__(self, channels: int, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.temperature = cfg.temperature
        self.mel_attention = ContextAttention(d, cfg.heads, cfg.context_frames)
        self.emotion_attention = ContextAttention(d, cfg.heads, cfg.context_frames)
        self.mel_weights = nn.Parameter(torch.full((channels,), 0.5 * cfg.temperature))
        self.emotion_weights = nn.Parameter(torch.full((channels,), 0.5 * cfg.temperature))

    def fuse(self, mel_att: torch.Tensor, emo_att: torch.Tensor) -> torch.Tensor:
        return (self.mel_weights[:, None] * mel_att + self.emotion_weights[:, None] * emo_att) / self.temperature


@dataclass(kw_only=True)
class LiveState:
    """What a stream carries from frame to frame: each causal layer's cache (keys, values),
    which of the last A - 1 frames are real (B, A - 1), the keys and values of each stream's
    last X encodings (B, h, X, dh) and which are real (B, X), the last la + 1 encodings of
    each stream (B, la + 1, d) for the target-frame residual, the previous smoothed output
    (B, C) and whether there is one (B,), the frames stepped so far; and what is constant for
    a model (the projected channel queries (h, C, dh) and the context distance biases (h, 1, X),
    read from its weights by BlendshapeLiveModel.constants)."""

    mel_caches: list[LayerCache]
    emotion_caches: list[LayerCache]
    layer_real: torch.Tensor
    mel_kv: tuple[torch.Tensor, torch.Tensor]
    emotion_kv: tuple[torch.Tensor, torch.Tensor]
    context_real: torch.Tensor
    mel_recent: torch.Tensor
    emotion_recent: torch.Tensor
    prev: torch.Tensor
    has_prev: torch.Tensor
    constants: dict[str, torch.Tensor]
    frames: int = 0

    def tensors(self) -> list[torch.Tensor]:
        """The carried tensors in a fixed order (STATE_NAMES): what a one-frame graph takes
        and gives back."""
        caches = [x for c in (*self.mel_caches, *self.emotion_caches) for x in (c.k, c.v)]
        return [*caches, self.layer_real, *self.mel_kv, *self.emotion_kv, self.context_real, self.mel_recent,
                self.emotion_recent, self.prev]  # fmt: skip

    def load(self, tensors: list[torch.Tensor]) -> None:
        """The inverse of tensors()."""
        it = iter(tensors)
        for c in (*self.mel_caches, *self.emotion_caches):
            c.k, c.v = next(it), next(it)
        self.layer_real = next(it)
        self.mel_kv, self.emotion_kv = (next(it), next(it)), (next(it), next(it))
        self.context_real, self.mel_recent, self.emotion_recent, self.prev = next(it), next(it), next(it), next(it)


def state_names(cfg: ModelConfig) -> list[str]:
    """Names of LiveState.tensors(), in order."""
    layers = [f"{s}{i}_{kv}" for s, n in (("mel", cfg.mel_layers), ("emotion", cfg.emotion_layers))
              for i in range(n) for kv in ("k", "v")]  # fmt: skip
    return [*layers, "layer_real", "mel_context_k", "mel_context_v", "emotion_context_k", "emotion_context_v",
            "context_real", "mel_recent", "emotion_recent", "prev"]  # fmt: skip


class BlendshapeLiveModel(nn.Module):
    """The live model: forward() on windows (training, whole-file predict, export), as the
    offline BlendshapeModel's; start() and step() frame by frame (live streams)."""

    streaming = True

    def __init__(
        self, *, n_mels: int, n_emotion: int, channels: int, window: int, cfg: ModelConfig, lookahead: int,
        frames_per_window: int,
    ):  # fmt: skip
        super().__init__()
        K = frames_per_window
        need = live_window(K, lookahead, cfg)
        if window < need:
            raise ValueError(f"a live model of {K} frames per window with lookahead {lookahead} needs a window of "
                             f"at least {need} frames, got {window}")  # fmt: skip
        self.cfg, self.lookahead = cfg, lookahead
        self.frames_per_window = self.trained_frames_per_window = K
        self.positions = (window - K - lookahead, window - lookahead)
        self.mel_stream = CausalMelStream(n_mels, cfg)
        self.emotion_stream = CausalEmotionStream(n_emotion, cfg)
        self.blendshape_queries = nn.Parameter(torch.randn(channels, cfg.d_model) * 0.02)
        self.dual_stream_attention = LiveDualStreamAttention(channels, cfg)
        self.decoder = Decoder(channels, cfg)
        self.smoothing_alpha = nn.Parameter(torch.tensor(float(cfg.smoothing_alpha_init)))
        self.register_buffer("output_mask", torch.ones(channels), persistent=False)

    # The offline model's: still channels masked, fewer frames per window from the trained block's end.
    set_still = BlendshapeModel.set_still
    use_frames_per_window = BlendshapeModel.use_frames_per_window

    def forward(self, mel, emotion, frame_mask, prev=None, has_prev=None) -> dict[str, torch.Tensor]:
        """As BlendshapeModel.forward: mel (B, L, M), emotion (B, L, E), frame_mask (B, L) or
        None, prev (B, C), has_prev (B,) -> current, smoothed (B, K, C)."""
        pad = None if frame_mask is None else ~frame_mask
        mel_enc = self.mel_stream(mel, pad)
        emo_enc = self.emotion_stream(emotion, pad)
        a, b = self.positions
        ends = torch.arange(a, b, device=mel.device) + self.lookahead
        att = self.dual_stream_attention
        mel_att = att.mel_attention(self.blendshape_queries, mel_enc, pad, ends) + mel_enc[:, a:b, None, :]
        emo_att = att.emotion_attention(self.blendshape_queries, emo_enc, pad, ends) + emo_enc[:, a:b, None, :]
        current = self.decoder(att.fuse(mel_att, emo_att)).float() * self.output_mask
        smoothed = smooth_block(current, prev, has_prev, torch.sigmoid(self.smoothing_alpha))
        return {"current": current, "smoothed": smoothed}

    # -- frame by frame -------------------------------------------------------------------------
    def constants(self) -> dict[str, torch.Tensor]:
        """What a stream reads from the weights once: the projected channel queries (h, C, dh)
        and the context distance biases by slot (h, 1, X), oldest first."""
        att = self.dual_stream_attention
        return {
            "mel_queries": att.mel_attention.queries(self.blendshape_queries),
            "emotion_queries": att.emotion_attention.queries(self.blendshape_queries),
            "mel_context_bias": att.mel_attention.distance_bias.flip(-1)[:, None, :],
            "emotion_context_bias": att.emotion_attention.distance_bias.flip(-1)[:, None, :],
        }

    @torch.no_grad()
    def start(self, batch: int = 1) -> LiveState:
        """The state of batch streams before their first frame (the model in eval mode: its
        weights are read into the state's constants)."""
        if self.training:
            raise ValueError("a live model steps in eval mode (model.eval())")
        d, dev = self.cfg.d_model, self.blendshape_queries.device
        h, X, A = self.cfg.heads, self.cfg.context_frames, self.cfg.attention_span
        z = torch.zeros(batch, h, X, d // h, device=dev)
        return LiveState(
            mel_caches=self.mel_stream.encoder.empty_caches(batch, self.mel_stream.bin_embedding.shape[0], d, dev),
            emotion_caches=self.emotion_stream.encoder.empty_caches(batch, 1, d, dev),
            layer_real=torch.zeros(batch, A - 1, dtype=torch.bool, device=dev),
            mel_kv=(z, z.clone()),
            emotion_kv=(z.clone(), z.clone()),
            context_real=torch.zeros(batch, X, dtype=torch.bool, device=dev),
            mel_recent=torch.zeros(batch, self.lookahead + 1, d, device=dev),
            emotion_recent=torch.zeros(batch, self.lookahead + 1, d, device=dev),
            prev=torch.zeros(batch, self.output_mask.shape[0], device=dev),
            has_prev=torch.zeros(batch, dtype=torch.bool, device=dev),
            constants={k: v.clone() for k, v in self.constants().items()},
        )

    def state_from(self, tensors: list[torch.Tensor], has_prev: torch.Tensor) -> LiveState:
        """A LiveState holding tensors (LiveState.tensors() order) and has_prev (B,): what a
        one-frame graph rebuilds from its inputs (its constants read from the weights)."""
        z = torch.zeros(0)
        layers = [*self.mel_stream.encoder.layers, *self.emotion_stream.encoder.layers]
        caches = [LayerCache(z, z, layer.distance_bias.flip(-1)) for layer in layers]
        n = len(self.mel_stream.encoder.layers)
        state = LiveState(
            mel_caches=caches[:n], emotion_caches=caches[n:], layer_real=z, mel_kv=(z, z), emotion_kv=(z, z),
            context_real=z, mel_recent=z, emotion_recent=z, prev=z, has_prev=has_prev, constants=self.constants(),
        )  # fmt: skip
        state.load(tensors)
        return state

    @torch.no_grad()
    def step(self, state: LiveState, mel: torch.Tensor, emotion: torch.Tensor, real: bool = True) -> dict | None:
        """One new frame of standardised features, mel (B, M) and emotion (B, E), into state.
        Returns the outputs of the frame la frames back, {"current", "smoothed"} (B, C), once
        there is one (None for the first la frames). real=False steps a padding frame (the
        frames past a stream's end that its last la frames look ahead to): it is never attended
        to but by itself."""
        flags = torch.full((mel.shape[0],), real, dtype=torch.bool, device=mel.device)
        current, smoothed = self.advance(state, mel, emotion, flags)
        state.frames += 1
        if state.frames <= self.lookahead:
            return None
        state.has_prev = torch.ones_like(state.has_prev)
        return {"current": current, "smoothed": smoothed}

    def advance(self, state: LiveState, mel: torch.Tensor, emotion: torch.Tensor, real: torch.Tensor):
        """Step every tensor of state by one frame (real (B,) bool) and return (current,
        smoothed) (B, C) of the frame la frames back: meaningful once more than la frames have
        been stepped (step() keeps that count; a one-frame graph's runtime does). The
        smoothing starts where state.has_prev is False."""
        B, dev = mel.shape[0], mel.device
        minus_inf = torch.tensor(float("-inf"), device=dev)
        # A frame always attends to itself; its own flag decides for the frames after it.
        self_too = torch.ones(B, 1, dtype=torch.bool, device=dev)
        layer_mask = torch.where(torch.cat([state.layer_real, self_too], dim=1), 0.0, minus_inf)[:, None, None, :]
        mel_enc = self.mel_stream.step(mel, state.mel_caches, layer_mask)  # (B, d)
        emo_enc = self.emotion_stream.step(emotion, state.emotion_caches, layer_mask)
        flag = real[:, None]
        state.layer_real = torch.cat([state.layer_real[:, 1:], flag], dim=1)
        att, c = self.dual_stream_attention, state.constants
        state.mel_kv = _push_kv(state.mel_kv, att.mel_attention.step_key_value(mel_enc))
        state.emotion_kv = _push_kv(state.emotion_kv, att.emotion_attention.step_key_value(emo_enc))
        state.context_real = torch.cat([state.context_real[:, 1:], flag], dim=1)
        state.mel_recent = torch.cat([state.mel_recent[:, 1:], mel_enc[:, None]], dim=1)
        state.emotion_recent = torch.cat([state.emotion_recent[:, 1:], emo_enc[:, None]], dim=1)
        # The newest encoding is always attended to (no row without a key).
        attended = torch.cat([state.context_real[:, :-1], self_too], dim=1)
        ctx = torch.where(attended, 0.0, minus_inf)[:, None, None, :]  # (B, 1, 1, X)
        mel_att = att.mel_attention.step_attend(c["mel_queries"], *state.mel_kv, c["mel_context_bias"] + ctx)
        emo_att = att.emotion_attention.step_attend(
            c["emotion_queries"], *state.emotion_kv, c["emotion_context_bias"] + ctx
        )
        fused = att.fuse(mel_att + state.mel_recent[:, 0, None], emo_att + state.emotion_recent[:, 0, None])
        current = self.decoder(fused).float() * self.output_mask  # (B, C)
        alpha = torch.sigmoid(self.smoothing_alpha)
        smoothed = torch.where(state.has_prev[:, None], alpha * current + (1 - alpha) * state.prev, current)
        state.prev = smoothed
        return current, smoothed


def _push_kv(kv: tuple[torch.Tensor, torch.Tensor], new: tuple[torch.Tensor, torch.Tensor]):
    """Drop the oldest of X cached keys and values (B, h, X, dh), append the newest (B, h, 1, dh)."""
    return tuple(torch.cat([old[:, :, 1:], n], dim=2) for old, n in zip(kv, new))
