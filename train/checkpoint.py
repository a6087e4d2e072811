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
    problem = checkpoint_problem(ckpt)
    if problem:
        raise CheckpointError(f"{p}: malformed checkpoint: {problem}")
    return ckpt


# What every use of a checkpoint reads (predict, evaluate, export, resume), with its type.
REQUIRED = {"model": dict, "config_json": str, "feature_config_json": str, "feature_config_hash": str,
            "channels": list, "normalizer": dict, "window": int, "lookahead": int, "fps": (int, float)}
# What --resume reads on top.
RESUME_STATE = {"optimizer": dict, "scheduler": dict, "rng_cpu_all": torch.Tensor, "prev_all": torch.Tensor,
                "step": int, "epoch": int, "step_in_epoch": int}
NORMALIZER_KEYS = ("mel_mean", "mel_std", "emotion_mean", "emotion_std", "target_mean")


def checkpoint_problem(ckpt: dict) -> str | None:
    """What is wrong with a loaded checkpoint dict, or None: missing or mistyped keys, an
    embedded config that does not parse or validate, statistics of the wrong length, model
    weights whose names or shapes are not those of the model its config describes."""
    import json

    from blendsync.shared.config import FeatureConfig
    from blendsync.train.config import TrainConfig
    from blendsync.train.model import build_model

    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        return f"missing {', '.join(missing)}"
    wrong = [f"{k} is {type(ckpt[k]).__name__}" for k, t in REQUIRED.items() if not isinstance(ckpt[k], t)]
    if wrong:
        return "; ".join(wrong)
    try:
        cfg = TrainConfig.from_checkpoint_json(ckpt["config_json"])
    except (ValueError, TypeError, KeyError) as e:
        return f"its train config (config_json) is invalid: {e}"
    try:
        fc = FeatureConfig.from_dict(json.loads(ckpt["feature_config_json"]))
    except (ValueError, TypeError, KeyError) as e:
        return f"its feature config (feature_config_json) is invalid: {e}"
    channels = ckpt["channels"]
    if not channels or not all(isinstance(c, str) for c in channels):
        return "channels must be a non-empty list of names"
    norm = ckpt["normalizer"]
    want = {"mel_mean": fc.mel.n_mels, "mel_std": fc.mel.n_mels, "emotion_mean": 88, "emotion_std": 88,
            "target_mean": len(channels), "target_std": len(channels)}
    for k in (*NORMALIZER_KEYS, "target_std"):
        if k not in norm:
            if k == "target_std":
                continue  # written only since loss.scale exists
            return f"normalizer has no {k}"
        try:
            n = len(norm[k])
        except TypeError:
            return f"normalizer {k} is not a list"
        if n != want[k]:
            return f"normalizer {k} has {n} values, expected {want[k]}"
    model = build_model(cfg, fc.mel.n_mels, len(channels))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = ckpt["model"]
    lost = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if lost or extra:
        return (f"model weights do not match its config: {len(lost)} missing ({', '.join(lost[:3])}), "
                f"{len(extra)} unexpected ({', '.join(extra[:3])})")
    shapes = [f"{k} {tuple(got[k].shape)} (expected {expected[k]})" for k in expected
              if not isinstance(got[k], torch.Tensor) or tuple(got[k].shape) != expected[k]]
    if shapes:
        return f"model weights of the wrong shape: {'; '.join(shapes[:3])}"
    return None


def resume_problem(ckpt: dict) -> str | None:
    """What a checkpoint lacks to continue training (a predict-only or exported-from
    checkpoint may have the model but not the optimiser)."""
    missing = [k for k in RESUME_STATE if k not in ckpt]
    if missing:
        return f"cannot resume from it: missing {', '.join(missing)}"
    wrong = [f"{k} is {type(ckpt[k]).__name__}" for k, t in RESUME_STATE.items() if not isinstance(ckpt[k], t)]
    return f"cannot resume from it: {'; '.join(wrong)}" if wrong else None
