"""Checkpoints: plain dicts of tensors, numbers and strings, loaded with weights_only=True so
loading never runs pickled code. Written to a temporary file and renamed into place."""

from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT = "blendsync-checkpoint-1"


class CheckpointError(ValueError):
    pass


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, wrong file, pickled code refused
        raise CheckpointError(f"{p}: not a readable blendsync checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not a blendsync checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__})")
    return ckpt
