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

A live model (model.streaming) also exports its one-frame step (--graph step): inputs mel
(B, M) and emotion (B, E) of the newest frame, real (B,) (False for the lookahead frames of
padding a stream ends with), has_prev (B,) (False until the first output), then the carried
state (core.live_model.state_names, all zeros or False at a stream's start; the sidecar lists
their shapes); outputs current and smoothed (B, C) of the frame lookahead frames back (a
runtime skips the first lookahead steps' outputs), then the next state in the same order.
The steps give the window graph's outputs (tested with onnxruntime).
"""

from __future__ import annotations

import io
import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from blendsync.shared.files import write_atomically

# torch (and the checkpoint code that needs it) is imported by the functions that export, so
# that the CLI can offer FORMATS as its choices without loading torch for --help.
if TYPE_CHECKING:
    import torch
    from torch import nn

    from blendsync.train.core.checkpoint import Checkpoint

ONNX_OPSET = 18
INPUTS = ("mel", "emotion", "frame_mask", "prev", "has_prev")
OUTPUTS = ("current", "smoothed")
# A live model's one-frame step graph (--graph step): the carried state follows these.
STEP_INPUTS = ("mel", "emotion", "real", "has_prev")


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


@contextmanager
def _quiet_tracer():
    """The tracer's notes on what it keeps as constants (the window's shape, Python numbers):
    expected for a graph of fixed window shape, and ten lines on every export."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=r".*[Cc]onstant folding.*")
        yield


def _write_onnx(wrapped: nn.Module, args: tuple, out: Path, inputs: list[str], outputs: list[str]) -> None:
    import torch

    dyn = {name: {0: "batch"} for name in (*inputs, *outputs)}
    buf = io.BytesIO()  # serialised in memory: a full disk is then an OSError naming out
    with _quiet_tracer(), torch.no_grad():
        torch.onnx.export(
            wrapped.requires_grad_(False),
            args,
            buf,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dyn,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    write_atomically(out, buf.getbuffer())


def _write_torchscript(wrapped: nn.Module, args: tuple, out: Path, inputs: list[str], outputs: list[str]) -> None:
    import torch

    # Weights that need no gradient: a runtime's outputs then need none either.
    with _quiet_tracer(), torch.no_grad():
        traced = torch.jit.trace(wrapped.requires_grad_(False), args, check_trace=False)
    buf = io.BytesIO()  # torch's own file writer aborts the process on a full disk
    torch.jit.save(traced, buf)
    write_atomically(out, buf.getbuffer())


# bstrain export --format: the one list of graph formats (the CLI's choices are its keys).
FORMATS = {"onnx": _write_onnx, "torchscript": _write_torchscript}
# bstrain export --graph: window (every model) or step (a live model's one frame with its state).
GRAPHS = ("window", "step")


def export(
    checkpoint: str | Path, out: str | Path, fmt: str, frames_per_window: int | None = None, graph: str = "window"
) -> Path:
    """Write the model to out and its sidecar to out + '.json'; returns the sidecar path.
    frames_per_window: a graph predicting fewer frames per window than the model was trained
    with (see BlendshapeModel.use_frames_per_window); None: the checkpoint's. graph "step": a
    live model's one-frame step with its carried state as inputs and outputs."""
    from blendsync.train.core.checkpoint import Checkpoint

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {list(GRAPHS)}, got {graph!r}")
    ck = Checkpoint.load(checkpoint)
    model = ck.build_model("cpu")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if graph == "step":
        if not getattr(model, "streaming", False):
            raise ValueError(f"{checkpoint}: --graph step is the live model's; this checkpoint is an offline model")
        from blendsync.train.core.live_model import state_names
        from blendsync.train.inference.live import live_step_graph, live_step_inputs

        names = state_names(ck.config.model)
        inputs, outputs = [*STEP_INPUTS, *names], [*OUTPUTS, *(f"next_{n}" for n in names)]
        args = live_step_inputs(ck.n_mels, ck.feature_config.n_emotion, model)
        FORMATS[fmt](live_step_graph(model, ck.normalizer), args, out, inputs, outputs)
        doc = {**sidecar(ck, fmt), "graph": "step", "inputs": inputs, "outputs": outputs,
               "state": {n: {"shape": list(a.shape[1:]), "dtype": str(a.dtype).removeprefix("torch.")}
                         for n, a in zip(names, args[len(STEP_INPUTS):])}}  # fmt: skip
    else:
        if frames_per_window is not None:
            model.use_frames_per_window(frames_per_window)
        FORMATS[fmt](exported_model(model, ck.normalizer), example_inputs(ck), out, list(INPUTS), list(OUTPUTS))
        doc = {**sidecar(ck, fmt, model.frames_per_window), "graph": "window"}
    side = out.with_name(out.name + ".json")
    write_atomically(side, json.dumps(doc, indent=2))
    return side
