"""Gradients of the dual-stream model: where they flow and where they must stop."""

from __future__ import annotations

import torch

from blendsync.train.core.config import LossConfig, ModelConfig
from blendsync.train.core.model import BlendshapeModel
from blendsync.train.loop.losses import loss_terms, total_loss

CFG = ModelConfig(d_model=16, heads=2, mel_layers=1, emotion_layers=1, dropout=0.0)


def _inputs(B=3, L=20, C=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(B, L, 80, generator=g)
    emo = torch.randn(B, L, 88, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, :5] = False  # a window at a file start
    prev = torch.rand(B, C, generator=g)
    has_prev = torch.tensor([False, True, True])
    return mel, emo, mask, prev, has_prev


def _model(C=7, L=20):
    torch.manual_seed(0)
    return BlendshapeModel(n_mels=80, n_emotion=88, channels=C, window=L, cfg=CFG)


def test_every_parameter_gets_a_gradient_features_and_prev_get_none():
    m = _model()
    mel, emo, mask, prev, has_prev = _inputs()
    prev.requires_grad_(True)
    out = m(mel, emo, mask, prev, has_prev)
    assert out["smoothed"].shape == (3, 1, 7)  # one frame per window
    target = torch.rand_like(out["smoothed"])
    terms = loss_terms(
        out["smoothed"],
        target,
        prev,
        torch.rand_like(prev),
        torch.ones(3, 1, dtype=torch.bool),
        has_prev,
        torch.tensor([1, 1, 0, 0, 0, 0, 0], dtype=torch.bool),
        torch.tensor([0, 0, 1, 1, 0, 0, 0], dtype=torch.bool),
    )
    total_loss(terms, LossConfig()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
    assert mel.grad is None and emo.grad is None  # mid-to-end: features are inputs, not leaves to train
    assert prev.grad is None  # no gradient into the past


def test_alpha_gradient_matches_the_analytic_form():
    m = _model()
    mel, emo, mask, prev, has_prev = _inputs()
    out = m(mel, emo, mask, prev, has_prev)
    g = torch.randn_like(out["smoothed"])
    (out["smoothed"] * g).sum().backward()
    a = m.smoothing_alpha.detach()
    s = torch.sigmoid(a)
    current = out["current"].detach()[:, 0]
    analytic = (g[:, 0] * (current - prev) * s * (1 - s))[has_prev].sum()
    torch.testing.assert_close(m.smoothing_alpha.grad, analytic, rtol=1e-5, atol=1e-7)


def test_first_window_of_a_file_is_not_smoothed():
    m = _model()
    mel, emo, mask, prev, has_prev = _inputs()
    out = m(mel, emo, mask, prev, has_prev)
    torch.testing.assert_close(out["smoothed"][0], out["current"][0])
    assert not torch.allclose(out["smoothed"][1], out["current"][1])


def test_fusion_starts_as_the_average_and_head_at_the_channel_means():
    m = _model()
    att = m.dual_stream_attention
    torch.testing.assert_close(att.mel_weights / att.temperature, torch.full((7,), 0.5))
    torch.testing.assert_close(att.emotion_weights, att.mel_weights)
    means = torch.tensor([0.003, 0.008, 0.0, 0.5, 0.9, 1.0, 0.2])
    m.decoder.init_bias(means)
    with torch.no_grad():
        m.decoder.head_weight.zero_()
        out = m(*_inputs()[:3])["current"]
    torch.testing.assert_close(out[0, 0], means, rtol=1e-5, atol=1e-7)
    m.eval()
    with torch.no_grad():
        m.decoder.head_bias.fill_(1.7)
        assert (m(*_inputs()[:3])["current"] == 1.0).all()  # clamped outside training


def test_loss_terms_are_zero_not_nan_when_empty():
    pred = torch.rand(2, 1, 4)
    prev = torch.rand(2, 4)
    none = torch.zeros(4, dtype=torch.bool)
    t = loss_terms(
        pred, pred.clone(), prev, prev, torch.ones(2, 1, dtype=torch.bool), torch.zeros(2, dtype=torch.bool), none, none
    )
    for k in ("mouth", "expression", "consistency", "temporal"):
        assert t[k].item() == 0.0
    t = loss_terms(
        pred * float("nan"),
        pred,
        prev,
        prev,
        torch.zeros(2, 1, dtype=torch.bool),
        torch.zeros(2, dtype=torch.bool),
        none,
        none,
    )
    assert all(torch.isfinite(v) for v in t.values())


def test_padding_mask_as_attention_mask_is_key_padding_bit_for_bit():
    """The dual-stream attention masks padded frames through attn_mask: the same outputs and
    gradients as key_padding_mask, in training and in eval."""
    import torch

    from blendsync.train.core.model import padding_as_attention_mask

    torch.manual_seed(0)
    B, C, L, d, H = 3, 52, 64, 32, 4
    for train in (True, False):
        mha = torch.nn.MultiheadAttention(d, H, batch_first=True, dropout=0.0).train(train)
        q = torch.randn(B, C, d, requires_grad=True)
        k = torch.randn(B, L, d, requires_grad=True)
        pad = torch.zeros(B, L, dtype=torch.bool)
        pad[0, :10], pad[2, 50:] = True, True
        a, _ = mha(q, k, k, key_padding_mask=pad, need_weights=False)
        b, _ = mha(q, k, k, attn_mask=padding_as_attention_mask(pad, H, C), need_weights=False)
        assert torch.equal(a, b)
        ga = torch.autograd.grad(a.square().sum(), [q, k, *mha.parameters()])
        gb = torch.autograd.grad(b.square().sum(), [q, k, *mha.parameters()])
        assert all(torch.equal(x, y) for x, y in zip(ga, gb, strict=True))


def test_a_padded_window_encoded_on_its_real_frames_predicts_the_same():
    """predict encodes a file's first and last windows on their real frames only (real=):
    the same function as the masked window, equal to float rounding, for blocks of K frames
    and padding before, after and on both sides."""
    from blendsync.train.core.config import ModelConfig as MC

    cfg = MC(d_model=16, heads=2, mel_layers=2, emotion_layers=1, dropout=0.0, target_frame_residual=True)
    L, K, la = 40, 8, 3
    torch.manual_seed(0)
    model = BlendshapeModel(
        n_mels=80, n_emotion=88, channels=7, window=L, cfg=cfg, lookahead=la, frames_per_window=K
    ).eval()
    g = torch.Generator().manual_seed(1)
    for lo, hi in ((17, L), (0, 30), (17, 33), (1, L - 1)):
        mel, emo = torch.randn(1, L, 80, generator=g), torch.randn(1, L, 88, generator=g)
        mask = torch.zeros(1, L, dtype=torch.bool)
        mask[0, lo:hi] = True
        mel[~mask], emo[~mask] = 0.0, 0.0
        with torch.no_grad():
            full = model(mel, emo, mask)["current"]
            real = model(mel, emo, mask, real=(lo, hi))["current"]
        a, b = model.positions
        keep = mask[0, a:b]  # the block's real frames (past a file's end the output is dropped)
        assert keep.any()
        assert torch.allclose(full[0, keep], real[0, keep], atol=1e-5, rtol=0), (lo, hi)
