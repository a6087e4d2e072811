"""The dual-stream cross-attention model (docs/design.md, The model).

Shapes: B windows, L frames, K block frames (frames_per_window), M mel bins, E = 88 eGeMAPS,
C channels, d = d_model.
    mel (B, L, M) -> per-bin series (B*M, L, d) -> self-attention over time -> (B, M, L, d)
        -> mean over bins -> (B, L, d)
    emotion (B, L, E) -> (B, L, d) -> self-attention over time
    blendshape_queries (C, d) cross-attend to each stream -> (B, C, d) twice: the block's
        shared context. Each of the K block frames (window positions L - K - lookahead …
        L - 1 - lookahead) adds each stream's encoding at its own position to that context
        -> (B, K, C, d) twice (model.target_frame_residual; a departure from the method
        notes: without it the small model predicted each channel's mean for hundreds of steps)
    fused = (mel_weights * mel_attended + emotion_weights * emotion_attended) / temperature
    decoder (B, K, C, d) -> (B, K, C), linear, clamped to [0, 1] outside training
    smoothed_j = alpha * current_j + (1 - alpha) * smoothed_{j-1}.detach() through the block,
        smoothed_{-1} = prev (the stream's last smoothed frame), alpha = sigmoid(smoothing_alpha)
K = 1 is the method notes' one output per window exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from blendsync.train.core.config import ModelConfig


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

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """x (N, L, d), pad (N, L) True = padding (never all True in a row), or None for
        windows without padding: the caller knows from the host-side batch, so no step
        branches on device values, and SDPA keeps its faster mask-free path (1.7x on CPU)."""
        attend = None if pad is None else ~pad[:, None, None, :]
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

    def forward(self, mel: torch.Tensor, pad: torch.Tensor | None, first: int = 0) -> torch.Tensor:
        """mel (B, L, M), pad (B, L) True = padding, or None -> (B, L, d). first: the window
        position of mel's first frame (a window cut to its real frames)."""
        B, L, M = mel.shape
        x = mel.transpose(1, 2).reshape(B * M, L, 1)
        x = self.value_proj(x) + self.time_embedding[first : first + L]
        x = x.view(B, M, L, -1) + self.bin_embedding[:, None, :]
        x = x.view(B * M, L, -1)
        key_pad = None if pad is None else pad.repeat_interleave(M, dim=0)
        x = self.encoder(x, key_pad)
        return x.view(B, M, L, -1).mean(dim=1)


class EmotionStream(nn.Module):
    def __init__(self, n_features: int, window: int, cfg: ModelConfig):
        super().__init__()
        d = cfg.d_model
        self.proj = nn.Linear(n_features, d)
        self.time_embedding = nn.Parameter(sinusoidal(window, d))
        self.encoder = Encoder(d, cfg.heads, cfg.emotion_layers, cfg.ff_mult, cfg.dropout)

    def forward(self, emotion: torch.Tensor, pad: torch.Tensor | None, first: int = 0) -> torch.Tensor:
        """emotion (B, L, E), pad (B, L) or None -> (B, L, d); first as MelStream's."""
        x = self.proj(emotion) + self.time_embedding[first : first + emotion.shape[1]]
        return self.encoder(x, pad)


def padding_as_attention_mask(pad: torch.Tensor, heads: int, queries: int) -> torch.Tensor:
    """pad (B, L) True = padding -> attn_mask (B * heads, queries, L) for nn.MultiheadAttention,
    batch-major as it expands a key_padding_mask. The outputs and gradients are the
    key_padding_mask's bit for bit (tested); its shape check goes through torch._check_with,
    whose first use imports sympy (0.34 s of every predict run's first window)."""
    B, L = pad.shape
    return pad[:, None, None, :].expand(B, heads, queries, L).reshape(B * heads, queries, L)


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

    def forward(self, queries, mel_enc, emo_enc, pad, positions: tuple[int, int] | None = None):
        """queries (B, C, d), encodings (B, L, d), pad (B, L) or None -> fused (B, K, C, d).
        positions: [start, stop) window positions of the block's K frames; each frame's
        encoding is added to what each stream's attention returns (the block's shared
        context), so every channel sees its own frame from the first step while attention
        learns the wider context. None: the attention context alone (K = 1)."""
        mask = None if pad is None else padding_as_attention_mask(pad, self.mel_attention.num_heads, queries.shape[1])
        mel_att, _ = self.mel_attention(queries, mel_enc, mel_enc, attn_mask=mask, need_weights=False)
        emo_att, _ = self.emotion_attention(queries, emo_enc, emo_enc, attn_mask=mask, need_weights=False)
        mel_att, emo_att = mel_att[:, None], emo_att[:, None]  # (B, 1, C, d)
        if positions is not None:
            a, b = positions
            mel_att = mel_att + mel_enc[:, a:b, None, :]  # (B, K, C, d)
            emo_att = emo_att + emo_enc[:, a:b, None, :]
        return (self.mel_weights[:, None] * mel_att + self.emotion_weights[:, None] * emo_att) / self.temperature


class Decoder(nn.Module):
    """(..., C, d) -> (..., C): a shared MLP, then one linear output unit per channel.

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


def smooth_block(
    current: torch.Tensor, prev: torch.Tensor | None, has_prev: torch.Tensor | None, alpha: torch.Tensor
) -> torch.Tensor:
    """The recursive filter through a block, in float32.

    current (B, K, C); prev (B, C) the stream's last smoothed frame before the block;
    has_prev (B,) bool (False: the block starts a file or segment, smoothed_0 = current_0).
    smoothed_j = alpha * current_j + (1 - alpha) * smoothed_{j-1}.detach(): the values are the
    full recursion, computed for all K frames at once as a lower-triangular weighted sum (no
    loop of K dependent steps on the device), and the gradient is the one-step form, so no
    gradient flows into the past; frame 0 without a previous frame passes through unchanged.
    """
    B, K, C = current.shape
    current = current.float()
    if prev is None:
        prev = current[:, 0]
        has_prev = torch.zeros(B, dtype=torch.bool, device=current.device)
    prev = prev.float()
    first = torch.where(has_prev[:, None], alpha * current[:, 0] + (1 - alpha) * prev.detach(), current[:, 0])
    if K == 1:
        return first[:, None]
    with torch.no_grad():
        a = alpha.detach()
        j = torch.arange(K, device=current.device)
        lag = (j[:, None] - j[None, :]).float()  # (K, K): j - i
        weights = torch.where(lag >= 0, a * torch.pow(1 - a, lag.clamp(min=0)), torch.zeros_like(lag))
        # s_j = sum_{i<=j} a (1-a)^(j-i) c_i + (1-a)^(j+1) p, with p = c_0 where there is no prev
        # (then s_0 = c_0).
        p = torch.where(has_prev[:, None], prev, current[:, 0])
        values = (
            torch.einsum("ji,bic->bjc", weights, current)
            + torch.pow(1 - a, (j + 1).float())[None, :, None] * p[:, None]
        )
    rest = alpha * current[:, 1:] + (1 - alpha) * values[:, :-1]
    return torch.cat([first[:, None], rest], dim=1)


class BlendshapeModel(nn.Module):
    # forward(real=): a padded window encoded on its real frames (predict's first and last).
    encodes_real_frames = True

    def __init__(
        self,
        *,
        n_mels: int,
        n_emotion: int,
        channels: int,
        window: int,
        cfg: ModelConfig,
        lookahead: int | None = None,
        frames_per_window: int = 1,
    ):
        super().__init__()
        K = frames_per_window
        if K > 1 and (lookahead is None or not cfg.target_frame_residual):
            raise ValueError(
                "frames_per_window > 1 needs model.target_frame_residual (each block frame's own "
                "encoding) and a lookahead"
            )
        if lookahead is not None and not 1 <= K <= window - lookahead:
            raise ValueError(
                f"frames_per_window must be in [1, window - lookahead] = [1, {window - lookahead}], got {K}"
            )
        self.frames_per_window = self.trained_frames_per_window = K
        self.positions = (
            None if lookahead is None or not cfg.target_frame_residual else (window - K - lookahead, window - lookahead)
        )
        self.mel_stream = MelStream(n_mels, window, cfg)
        self.emotion_stream = EmotionStream(n_emotion, window, cfg)
        self.blendshape_queries = nn.Parameter(torch.randn(channels, cfg.d_model) * 0.02)
        self.dual_stream_attention = DualStreamAttention(channels, cfg)
        self.decoder = Decoder(channels, cfg)
        self.smoothing_alpha = nn.Parameter(torch.tensor(float(cfg.smoothing_alpha_init)))
        # 1 per trained channel, 0 per still one (set_still): not a weight, so not in the
        # state dict; checkpoints keep the still channels by name.
        self.register_buffer("output_mask", torch.ones(channels), persistent=False)

    def set_still(self, still: torch.Tensor) -> None:
        """still (C,) bool: channels predicted as constant 0 (never moving in the training
        split, loss.still_max)."""
        self.output_mask.copy_((~still.to(torch.bool)).to(self.output_mask.dtype))

    def use_frames_per_window(self, K: int) -> None:
        """Predict blocks of K <= the trained K frames: the last K of the trained block
        positions (those nearest the window's end), so every frame still comes from a window
        position the model was trained on. Fewer frames per window cost more per frame and
        wait for fewer later frames (streaming latency)."""
        top = self.trained_frames_per_window
        if not 1 <= K <= top:
            raise ValueError(f"frames per window must be in [1, {top}] (the model was trained with {top}), got {K}")
        self.frames_per_window = K
        if self.positions is not None:
            end = self.positions[1]
            self.positions = (end - K, end)

    def forward(self, mel, emotion, frame_mask, prev=None, has_prev=None, real=None) -> dict[str, torch.Tensor]:
        """mel (B, L, M), emotion (B, L, E), frame_mask (B, L) True = real frame, or None when
        no window of the batch has padding; prev (B, C) the previous smoothed output of each
        stream, has_prev (B,) bool (prev None: every block starts a file).
        real: (lo, hi) where every window's real frames are exactly positions lo … hi - 1
        (the padding of a file's first and last windows): the streams encode only those
        (about half the work for a five-second line, on SDPA's mask-free path) and their
        encodings are zero-padded back to L, where the padding is masked from the fusion as
        before. The same function of the real frames; the floats may differ in the last bits.
        Returns current (B, K, C) and smoothed (B, K, C) float32."""
        pad = None if frame_mask is None else ~frame_mask
        if real is None:
            mel_enc = self.mel_stream(mel, pad)
            emo_enc = self.emotion_stream(emotion, pad)
        else:
            lo, hi = real
            L = mel.shape[1]
            grow = (0, 0, lo, L - hi)  # zero encodings for the padding, before and after
            mel_enc = F.pad(self.mel_stream(mel[:, lo:hi], None, lo), grow)
            emo_enc = F.pad(self.emotion_stream(emotion[:, lo:hi], None, lo), grow)
        q = self.blendshape_queries.unsqueeze(0).expand(mel.shape[0], -1, -1)
        fused = self.dual_stream_attention(q, mel_enc, emo_enc, pad, self.positions)
        current = self.decoder(fused).float() * self.output_mask
        smoothed = smooth_block(current, prev, has_prev, torch.sigmoid(self.smoothing_alpha))
        return {"current": current, "smoothed": smoothed}


# The parameters with one row per output channel (their first dimension is C): fine-tuning
# maps their rows by channel name; every other parameter is shared by all channels.
PER_CHANNEL = (
    "blendshape_queries",
    "dual_stream_attention.mel_weights",
    "dual_stream_attention.emotion_weights",
    "decoder.head_weight",
    "decoder.head_bias",
)
