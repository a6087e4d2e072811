"""bstrain export: the model with its input standardisation and its smoothing step as
explicit inputs/outputs, for a real-time runtime (ONNX or TorchScript), plus a JSON sidecar.

Graph inputs (B windows, L frames, M mel bins, E = 88, C channels):
    mel (B, L, M) float32      raw log-mel as bsfeat computes it (standardised inside)
    emotion (B, L, E) float32  raw eGeMAPS functionals (standardised inside)
    frame_mask (B, L) bool     True where a real frame (False: padding beyond the audio)
    prev (B, C) float32        the previous smoothed output of each stream (the last frame of
                               its previous block)
    has_prev (B,) bool         False on a stream's first window (no smoothing into frame 0)
Graph outputs, for the K = frames_per_window frames of each window's block (window positions
L - K - lookahead … L - 1 - lookahead):
    current (B, K, C) float32  the block's outputs, clamped to [0, 1]
    smoothed (B, K, C) float32 s_j = alpha * current_j + (1 - alpha) * s_{j-1}, s_{-1} = prev
                               where has_prev (else s_0 = current_0)
A runtime feeds windows whose blocks start K frames apart and passes smoothed[:, -1] as the
next prev.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

# torch (and the checkpoint code that needs it) is imported by the functions that export, so
# that the CLI can offer FORMATS as its choices without loading torch for --help.
if TYPE_CHECKING:
    import torch
    from torch import nn

    from blendsync.train.core.checkpoint import Checkpoint

ONNX_OPSET = 18
INPUTS = ("mel", "emotion", "frame_mask", "prev", "has_prev")
OUTPUTS = ("current", "smoothed")


def exported_model(model: nn.Module, norm) -> nn.Module:
    """model with the training statistics applied to its raw feature inputs, returning
    (current, smoothed)."""
    import torch
    from torch import nn

    class ExportedModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model.eval()
            for name in ("mel_mean", "mel_std", "emotion_mean", "emotion_std"):
                self.register_buffer(name, torch.as_tensor(getattr(norm, name), dtype=torch.float32))

        def forward(self, mel, emotion, frame_mask, prev, has_prev):
            out = self.model(
                (mel - self.mel_mean) / self.mel_std,
                (emotion - self.emotion_mean) / self.emotion_std,
                frame_mask,
                prev,
                has_prev,
            )
            return out["current"], out["smoothed"]

    return ExportedModel().eval()


def example_inputs(ck: Checkpoint, batch: int = 2) -> tuple[torch.Tensor, ...]:
    import torch

    L, C = ck.window, len(ck.channels)
    g = torch.Generator().manual_seed(0)
    # The mask is always an input of the graph (also where every frame is real).
    mask = torch.ones(batch, L, dtype=torch.bool)
    mask[0, :10] = False
    return (
        torch.randn(batch, L, ck.n_mels, generator=g),
        torch.randn(batch, L, ck.feature_config.n_emotion, generator=g),
        mask,
        torch.rand(batch, C, generator=g),
        torch.tensor([False] + [True] * (batch - 1)),
    )


def sidecar(ck: Checkpoint, fmt: str, K: int | None = None) -> dict:
    """K: the graph's frames per window (the checkpoint's when None)."""
    import torch

    from blendsync.train.core.windows import block_positions

    K = ck.frames_per_window if K is None else K
    return {
        "format": fmt,
        "onnx_opset": ONNX_OPSET if fmt == "onnx" else None,
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "channels": list(ck.channels),
        "fps": ck.fps,
        "window": ck.window,
        "lookahead": ck.lookahead,
        "frames_per_window": K,
        "trained_frames_per_window": ck.frames_per_window,
        "block_positions": list(block_positions(ck.window, ck.lookahead, K)),
        "pad_value_after_standardisation": 0.0,
        "feature_config": ck.feature_config.to_dict(),
        "feature_config_hash": ck.feature_config_hash,
        "normalisation": ck.normalizer.to_dict(),
        "smoothing_alpha": float(torch.sigmoid(ck.model_state["smoothing_alpha"])),
    }


def _write_onnx(wrapped: nn.Module, args: tuple, out: Path) -> None:
    import torch

    dyn = {name: {0: "batch"} for name in (*INPUTS, *OUTPUTS)}
    torch.onnx.export(
        wrapped,
        args,
        str(out),
        input_names=list(INPUTS),
        output_names=list(OUTPUTS),
        dynamic_axes=dyn,
        opset_version=ONNX_OPSET,
        dynamo=False,
    )


def _write_torchscript(wrapped: nn.Module, args: tuple, out: Path) -> None:
    import torch

    with torch.no_grad():
        traced = torch.jit.trace(wrapped, args, check_trace=False)
    traced.save(str(out))


# bstrain export --format: the one list of graph formats (the CLI's choices are its keys).
FORMATS = {"onnx": _write_onnx, "torchscript": _write_torchscript}


def export(checkpoint: str | Path, out: str | Path, fmt: str, frames_per_window: int | None = None) -> Path:
    """Write the model to out and its sidecar to out + '.json'; returns the sidecar path.
    frames_per_window: a graph predicting fewer frames per window than the model was trained
    with (see BlendshapeModel.use_frames_per_window); None: the checkpoint's."""
    from blendsync.train.core.checkpoint import Checkpoint

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    ck = Checkpoint.load(checkpoint)
    model = ck.build_model("cpu")
    if frames_per_window is not None:
        model.use_frames_per_window(frames_per_window)
    wrapped = exported_model(model, ck.normalizer)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    FORMATS[fmt](wrapped, example_inputs(ck), out)
    side = out.with_name(out.name + ".json")
    side.write_text(json.dumps(sidecar(ck, fmt, model.frames_per_window), indent=2))
    return side
