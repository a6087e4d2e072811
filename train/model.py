"""The dual-stream cross-attention model (DESIGN.md, Model).

Shapes: B windows, L frames, M mel bins, E = 88 eGeMAPS, C channels, d = d_model.
    mel (B, L, M) -> per-bin series (B*M, L, d) -> self-attention over time -> (B, M, L, d)
        -> mean over bins -> (B, L, d)
    emotion (B, L, E) -> (B, L, d) -> self-attention over time
    blendshape_queries (C, d) cross-attend to each stream -> (B, C, d) twice, and each stream's
        encoding at the target frame (window position L - 1 - lookahead) is added to what its
        attention returns (model.target_frame_residual; a departure from the method notes:
        without it the small model predicted each channel's mean for hundreds of steps)
    fused = (mel_weights * mel_attended + emotion_weights * emotion_attended) / temperature
    decoder (B, C, d) -> (B, C), linear, clamped to [0, 1] outside training
    smoothed = alpha * current + (1 - alpha) * prev.detach(), alpha = sigmoid(smoothing_alpha)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from blendsync.train.config import ModelConfig


def sinusoidal(length: int, d: int) -> torch.Tensor:
    """(length, d) sine/cosine position codes: a learnable time embedding starts from them so
    attention can find the target frame (lookahead frames from the window's end) from the
    first step instead of having to grow position information out of noise."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float32)
    ang = pos / torch.pow(10000.0, i / d)
    out = torch.zeros(length, d)
    out[:, 0::2] = torch.sin(ang)
    out[:, 1::2] = torch.cos(ang[:, : d // 2])
    return out


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + feed-forward on F.scaled_dot_product_attention.

    Dropout acts on the residual branches, not on attention probabilities, so SDPA can use
    its fused kernels (about 4x faster than nn.TransformerEncoderLayer on CPU here)."""

    def __init__(self, d: int, heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
        """x (N, L, d); attend (N, 1, 1, L) bool, True = a key to attend to, or None."""
        N, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(N, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(N, L, D)))
        return x + self.drop(self.ff(self.norm2(x)))


class Encoder(nn.Module):
    def __init__(self, d: int, heads: int, layers: int, ff_mult: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ff_mult, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x (N, L, d), pad (N, L) True = padding (never all True in a row)."""
        exporting = torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
        # Eagerly, a window without padding skips the mask (SDPA's fused kernels); exported
        # graphs always carry it (no data-dependent branch).
        attend = None if not exporting and not bool(pad.any()) else ~pad[:, None, None, :]
        for layer in self.layers:
            x = layer(x, attend)
        return self.norm(x)


class MelStream(nn.Module):
    """Frequency-axis split: each mel bin is its own time series with a bin embedding."""

    def __init__(self, n_mels: int, window: int, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.value_proj = nn.Linear(1, d)
        self.time_embedding = nn.Parameter(sinusoidal(window, d))
        self.bin_embedding = nn.Parameter(torch.randn(n_mels, d) * 0.02)
        self.encoder = Encoder(d, cfg.heads, cfg.mel_layers, cfg.ff_mult, cfg.dropout)

    def forward(self, mel: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """mel (B, L, M), pad (B, L) True = padding -> (B, L, d)."""
        B, L, M = mel.shape
        x = mel.transpose(1, 2).reshape(B * M, L, 1)
        x = self.value_proj(x) + self.time_embedding[:L]
        x = x.view(B, M, L, -1) + self.bin_embedding[:, None, :]
        x = x.view(B * M, L, -1)
        key_pad = pad.repeat_interleave(M, dim=0)
        x = self.encoder(x, key_pad)
        return x.view(B, M, L, -1).mean(dim=1)


class EmotionStream(nn.Module):
    def __init__(self, n_features: int, window: int, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.proj = nn.Linear(n_features, d)
        self.time_embedding = nn.Parameter(sinusoidal(window, d))
        self.encoder = Encoder(d, cfg.heads, cfg.emotion_layers, cfg.ff_mult, cfg.dropout)

    def forward(self, emotion: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """emotion (B, L, E), pad (B, L) -> (B, L, d)."""
        x = self.proj(emotion) + self.time_embedding[: emotion.shape[1]]
        return self.encoder(x, pad)


class DualStreamAttention(nn.Module):
    """Per-channel queries attend to each stream; learnable per-channel stream weights."""

    def __init__(self, channels: int, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.temperature = cfg.temperature
        self.mel_attention = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.emotion_attention = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        # Start as the average of the two streams: (0.5 T m + 0.5 T e) / T.
        self.mel_weights = nn.Parameter(torch.full((channels,), 0.5 * cfg.temperature))
        self.emotion_weights = nn.Parameter(torch.full((channels,), 0.5 * cfg.temperature))

    def forward(self, queries, mel_enc, emo_enc, pad, target: int | None = None):
        """queries (B, C, d), encodings (B, L, d), pad (B, L) -> fused (B, C, d).
        target: window position of the target frame; its encoding is added to what each
        stream's attention returns, so every channel sees its own frame from the first step
        while attention learns the wider context."""
        mel_att, _ = self.mel_attention(queries, mel_enc, mel_enc, key_padding_mask=pad, need_weights=False)
        emo_att, _ = self.emotion_attention(queries, emo_enc, emo_enc, key_padding_mask=pad, need_weights=False)
        if target is not None:
            mel_att = mel_att + mel_enc[:, target : target + 1]
            emo_att = emo_att + emo_enc[:, target : target + 1]
        return (self.mel_weights[:, None] * mel_att + self.emotion_weights[:, None] * emo_att) / self.temperature


class Decoder(nn.Module):
    """(B, C, d) -> (B, C): a shared MLP, then one linear output unit per channel.

    A linear head starting at each channel's training mean, clamped to [0, 1] outside
    training: real targets are sparse (means of 0.003-0.008), and a sigmoid head there has
    vanishing gradients that let rarely active channels sink towards 0."""

    def __init__(self, channels: int, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.norm = nn.LayerNorm(d)
        self.hidden = nn.Linear(d, d)
        self.head_weight = nn.Parameter(torch.randn(channels, d) * (1.0 / math.sqrt(d)) * 0.1)
        self.head_bias = nn.Parameter(torch.zeros(channels))

    def init_bias(self, channel_means: torch.Tensor) -> None:
        with torch.no_grad():
            self.head_bias.copy_(channel_means.clamp(0.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.hidden(self.norm(x)))
        out = (h * self.head_weight).sum(-1) + self.head_bias
        return out if self.training else out.clamp(0.0, 1.0)


class BlendshapeModel(nn.Module):
    def __init__(self, *, n_mels: int, n_emotion: int, channels: int, window: int, cfg: ModelConfig,
                 lookahead: int | None = None):
        super().__init__()
        self.target = None if lookahead is None or not cfg.target_frame_residual else window - 1 - lookahead
        self.mel_stream = MelStream(n_mels, window, cfg)
        self.emotion_stream = EmotionStream(n_emotion, window, cfg)
        self.blendshape_queries = nn.Parameter(torch.randn(channels, cfg.d_model) * 0.02)
        self.dual_stream_attention = DualStreamAttention(channels, cfg)
        self.decoder = Decoder(channels, cfg)
        self.smoothing_alpha = nn.Parameter(torch.tensor(float(cfg.smoothing_alpha_init)))

    def forward(self, mel, emotion, frame_mask, prev=None, has_prev=None) -> dict[str, torch.Tensor]:
        """mel (B, L, M), emotion (B, L, E), frame_mask (B, L) True = real frame,
        prev (B, C) previous smoothed output of each stream, has_prev (B,) bool.
        Returns current (B, C) and smoothed (B, C)."""
        pad = ~frame_mask
        mel_enc = self.mel_stream(mel, pad)
        emo_enc = self.emotion_stream(emotion, pad)
        q = self.blendshape_queries.unsqueeze(0).expand(mel.shape[0], -1, -1)
        fused = self.dual_stream_attention(q, mel_enc, emo_enc, pad, self.target)
        current = self.decoder(fused)
        if prev is None:
            return {"current": current, "smoothed": current}
        alpha = torch.sigmoid(self.smoothing_alpha)
        blended = alpha * current + (1 - alpha) * prev.detach()
        smoothed = torch.where(has_prev[:, None], blended, current)
        return {"current": current, "smoothed": smoothed}
