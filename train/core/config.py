"""Training configuration: model sizes (with the full/small presets), streaming, loss
weights, optimisation and diagnostics, as frozen dataclasses with a canonical JSON form
that is stored in every checkpoint and run folder."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from blendsync.shared.config import canonical_json, plain, read_config_file, short_hash


@dataclass(frozen=True)
class ModelConfig:
    d_model: int = 32
    heads: int = 2
    mel_layers: int = 1
    emotion_layers: int = 1
    ff_mult: int = 4
    dropout: float = 0.1
    # Fusion temperature: fused = (w_mel * mel + w_emo * emo) / temperature.
    temperature: float = 1.0
    # sigmoid(smoothing_alpha) weighs the current output against the previous one.
    smoothing_alpha_init: float = 1.0
    # Add each stream's encoding at the target frame to its attention output (see model.py).
    target_frame_residual: bool = True


@dataclass(frozen=True)
class StreamConfig:
    window: int = 256
    # Training: blocks start every frames_per_window * stride frames (stride 1: every frame).
    stride: int = 1
    lookahead: int = 6
    # K: frames one window predicts (the block ending lookahead frames before the window's
    # end). 1 = the method notes' one output per window; larger K cuts the cost per frame
    # about K-fold and adds up to K - 1 frames of latency to chunked predict (predict can use
    # fewer). 128: the measurements behind it are in README (Frames per window).
    frames_per_window: int = 128
    batch_streams: int = 8
    # Value of padded frames, in standardised units (0 = the training mean).
    pad_value: float = 0.0
    # Files read ahead of the model by the background reader.
    prefetch_files: int = 4
    # Training: lay the files end to end and cut them into batch_streams equal runs, so every
    # stream is busy to the end of the epoch, also with fewer files than streams (at most
    # batch_streams - 1 files are cut, each part starting with a state reset). False: whole
    # files only, which leaves streams idle when files are few or unequal.
    split_files: bool = True
    # Training: shift every file's block grid by a random phase in [0, K·stride) each epoch
    # (seeded), so a take is cut into different windows every epoch instead of the same few;
    # every frame is still a target once per epoch at stride 1. Validation and predict: no shift.
    phase_jitter: bool = True


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms (losses.py) and the unit the errors are measured in.

    preset names the starting weights (LOSS_PRESETS); keys written beside it override them.
    "notes" is the method notes' loss exactly; "default" departs from it (README, Loss) because
    on sparse real targets the notes' L1 and temporal terms flatten the predicted motion.
    """

    preset: str = "default"
    mse: float = 1.0
    # The notes' 0.1 L1 and 0.1 temporal terms are off by default: on sparse real targets they
    # halve the predicted movement (README, Loss).
    l1: float = 0.0
    mouth: float = 0.5
    expression: float = 0.5
    consistency: float = 0.2
    temporal: float = 0.0
    # (std of the prediction - std of the target)^2 per channel over the batch's real frames:
    # pulls the predicted movement towards the target's size (0 = off).
    amplitude: float = 0.0
    # "target_std": every error is divided by its channel's training-target spread (floored
    # at scale_floor), so a channel that moves by 0.03 weighs as much as one that moves by
    # 0.3; "none": errors in target units, as in the method notes.
    scale: str = "none"
    scale_floor: float = 0.01
    # Channels whose training targets never exceed this (no frame above it in the training
    # split: a custom rig's unused controls, a capture's dead curves) are left out of every
    # loss term and predicted as constant 0; their names are logged and kept with the
    # checkpoint. 0 trains every channel.
    still_max: float = 0.05


LOSS_TERMS = ("mse", "l1", "mouth", "expression", "consistency", "temporal", "amplitude")
LOSS_SCALES = ("none", "target_std")
LOSS_PRESETS: dict[str, LossConfig] = {
    "default": LossConfig(),
    # The method notes' weights, errors in target units.
    "notes": LossConfig(preset="notes", mse=1.0, l1=0.1, mouth=0.5, expression=0.5, consistency=0.2,
                        temporal=0.1, amplitude=0.0, scale="none"),
    # Plain mean squared error in target units.
    "mse": LossConfig(preset="mse", mse=1.0, l1=0.0, mouth=0.0, expression=0.0, consistency=0.0,
                      temporal=0.0, amplitude=0.0, scale="none"),
}


def loss_config_from_dict(sec: dict) -> LossConfig:
    sec = dict(sec)
    name = sec.pop("preset", "default")
    if name not in LOSS_PRESETS:
        raise ValueError(f"loss.preset must be one of {sorted(LOSS_PRESETS)}, got {name!r}")
    return dataclasses.replace(LOSS_PRESETS[name], **sec)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    # Linear warmup, then cosine decay to min_lr_ratio · lr. 20 steps: on the learning
    # benchmark (README, Loss) the same held-out skill as 100, reached in about half the steps.
    warmup_steps: int = 20
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    epochs: int = 10
    # Stop after this many optimiser steps (0 = no limit): also sets the cosine length.
    max_steps: int = 0


@dataclass(frozen=True)
class DiagnosticsConfig:
    every_steps: int = 50
    # L2-normalise the gradients of mel_weights and emotion_weights (stream balance).
    normalize_stream_grads: bool = False


VALIDATION_METRICS = {"skill": "max", "mean_r": "max", "loss": "min"}


@dataclass(frozen=True)
class ValidationConfig:
    # Validate every this many optimiser steps, and at the end of the run (0: at the end of
    # every epoch only).
    every_steps: int = 0
    # best.pt is the checkpoint with the best value of this on the validation frames:
    # "skill" (1 - MSE / MSE of the training mean, in target units: comparable across loss
    # settings), "mean_r" (mean Pearson r over the active channels) or "loss" (the training
    # loss, lower is better; it changes meaning with the loss section).
    metric: str = "skill"
    # End training after this many validations in a row without a better metric (0: never).
    patience: int = 0
    # With no validation split in the manifest: validate on the last fraction of every
    # training take's frames, which are then not trained on (0: no validation, best = last).
    holdout_tail: float = 0.1


@dataclass(frozen=True)
class AugmentConfig:
    """Feature-level augmentation of training windows, drawn afresh for every window of every
    step (on the device, from torch's seeded RNG); validation, evaluate and predict never see
    it. Values act on the standardised features, so a mask sets frames or bins to the
    training mean."""

    # A level offset per window, uniform in [-gain_db, +gain_db] dB, added to every log-mel
    # value of its real frames (a louder or quieter microphone). 0: off.
    gain_db: float = 0.0
    # SpecAugment-style masks per window on the mel stream: this many time masks of up to
    # time_mask_frames frames each, and freq_masks masks of up to freq_mask_bins mel bins.
    time_masks: int = 0
    time_mask_frames: int = 8
    freq_masks: int = 0
    freq_mask_bins: int = 8
    # Chance that a window's whole emotion stream is replaced by the training mean, so the
    # model does not lean on it alone. 0.5 by the augmentation benchmark (README,
    # Augmentation): on the custom rig it kept held-out skill up twice as long before
    # overfitting set in; the gain and the masks did not help there and are off.
    emotion_dropout: float = 0.5

    @property
    def active(self) -> bool:
        return bool(self.gain_db or self.time_masks or self.freq_masks or self.emotion_dropout)


# Augmentation off: the section of checkpoints written before it existed.
AUGMENT_OFF = {"gain_db": 0.0, "time_masks": 0, "freq_masks": 0, "emotion_dropout": 0.0}


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 0  # 0 = only last + best


# What each value must be: ("int", minimum), "real" (finite), "pos" (> 0), "nonneg" (>= 0),
# "prob" ([0, 1)), "unit" ([0, 1]), "bool", "str", "betas" (two values in [0, 1)).
FIELD_RULES: dict[str, dict[str, tuple]] = {
    "model": {"d_model": ("int", 1), "heads": ("int", 1), "mel_layers": ("int", 1), "emotion_layers": ("int", 1),
              "ff_mult": ("int", 1), "dropout": ("prob",), "temperature": ("pos",),
              "smoothing_alpha_init": ("real",), "target_frame_residual": ("bool",)},
    "stream": {"window": ("int", 1), "stride": ("int", 1), "lookahead": ("int", 0), "frames_per_window": ("int", 1),
               "batch_streams": ("int", 1), "pad_value": ("real",), "prefetch_files": ("int", 1),
               "split_files": ("bool",), "phase_jitter": ("bool",)},
    "loss": {**{k: ("nonneg",) for k in LOSS_TERMS}, "preset": ("str",), "scale": ("str",), "scale_floor": ("pos",),
             "still_max": ("unit",)},
    "optim": {"lr": ("pos",), "weight_decay": ("nonneg",), "betas": ("betas",), "warmup_steps": ("int", 0),
              "min_lr_ratio": ("unit",), "grad_clip": ("pos",), "epochs": ("int", 1), "max_steps": ("int", 0)},
    "diagnostics": {"every_steps": ("int", 0), "normalize_stream_grads": ("bool",)},
    "validation": {"every_steps": ("int", 0), "metric": ("str",), "patience": ("int", 0), "holdout_tail": ("real",)},
    "checkpoint": {"every_steps": ("int", 0)},
    "augment": {"gain_db": ("nonneg",), "time_masks": ("int", 0), "time_mask_frames": ("int", 1),
                "freq_masks": ("int", 0), "freq_mask_bins": ("int", 1), "emotion_dropout": ("prob",)},
}


def _value_problem(name: str, v: Any, rule: tuple) -> str | None:
    kind = rule[0]
    is_real = isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "int":
        if not isinstance(v, int) or isinstance(v, bool):
            return f"{name} must be an integer, got {v!r}"
        return None if v >= rule[1] else f"{name} must be >= {rule[1]}, got {v}"
    if kind == "bool":
        return None if isinstance(v, bool) else f"{name} must be true or false, got {v!r}"
    if kind == "str":
        return None if isinstance(v, str) else f"{name} must be a name, got {v!r}"
    if kind == "betas":
        ok = (isinstance(v, (tuple, list)) and len(v) == 2
              and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in v))
        return None if ok else f"{name} must be two numbers in [0, 1), got {v!r}"
    if not is_real or not math.isfinite(v):
        return f"{name} must be a finite number, got {v!r}"
    bad = {"pos": v <= 0, "nonneg": v < 0, "prob": not 0 <= v < 1, "unit": not 0 <= v <= 1}.get(kind, False)
    words = {"pos": "> 0", "nonneg": ">= 0", "prob": "in [0, 1)", "unit": "in [0, 1]"}
    return f"{name} must be {words[kind]}, got {v}" if bad else None


def field_problems(cfg: "TrainConfig") -> list[str]:
    """Every value of the config checked on its own, named by its key (section.key)."""
    out = []
    for section, rules in FIELD_RULES.items():
        sec = getattr(cfg, section)
        for key, rule in rules.items():
            p = _value_problem(f"{section}.{key}", getattr(sec, key), rule)
            if p:
                out.append(p)
    for key, rule in (("seed", ("int", -(2**63))), ("compile", ("bool",)), ("preset", ("str",))):
        p = _value_problem(key, getattr(cfg, key), rule)
        if p:
            out.append(p)
    return out


PRESETS: dict[str, ModelConfig] = {
    "full": ModelConfig(d_model=256, heads=4, mel_layers=2, emotion_layers=2),
    "small": ModelConfig(d_model=32, heads=2, mel_layers=1, emotion_layers=1),
}
PRESET_BATCH_STREAMS = {"full": 4, "small": 8}


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # auto: full on a GPU, small on a CPU; custom: the model section as written.
    preset: str = "auto"
    seed: int = 0
    # torch.compile the model for training (worth it on a GPU; the first steps compile).
    compile: bool = False

    def __post_init__(self) -> None:
        problems = field_problems(self)
        if problems:  # relations between values only make sense once each value is sound
            raise ValueError("invalid train config: " + "; ".join(problems))
        s, m = self.stream, self.model
        if not s.lookahead < s.window:
            problems.append(f"stream.lookahead must be in [0, window), got {s.lookahead}")
        if not 1 <= s.frames_per_window <= s.window - s.lookahead:
            problems.append(f"stream.frames_per_window must be in [1, window - lookahead] = "
                            f"[1, {s.window - s.lookahead}], got {s.frames_per_window}")
        elif s.frames_per_window > 1 and not m.target_frame_residual:
            problems.append("stream.frames_per_window > 1 needs model.target_frame_residual: true "
                            "(each block frame adds its own encoding to the shared context)")
        if m.d_model % m.heads:
            problems.append(f"model.d_model ({m.d_model}) must be divisible by heads ({m.heads})")
        if self.preset not in (*PRESETS, "auto", "custom"):
            problems.append(f"preset must be one of {sorted(PRESETS)}, auto or custom, got {self.preset!r}")
        v = self.validation
        if v.metric not in VALIDATION_METRICS:
            problems.append(f"validation.metric must be one of {list(VALIDATION_METRICS)}, got {v.metric!r}")
        if not 0 <= v.holdout_tail < 1:
            problems.append(f"validation.holdout_tail must be in [0, 1), got {v.holdout_tail}")
        lc = self.loss
        if lc.preset not in LOSS_PRESETS:
            problems.append(f"loss.preset must be one of {sorted(LOSS_PRESETS)}, got {lc.preset!r}")
        if lc.scale not in LOSS_SCALES:
            problems.append(f"loss.scale must be one of {list(LOSS_SCALES)}, got {lc.scale!r}")
        if problems:
            raise ValueError("invalid train config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return plain(dataclasses.asdict(self))

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def hash(self) -> str:
        return short_hash(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainConfig":
        d = dict(d or {})
        sections = {
            "model": ModelConfig, "stream": StreamConfig, "loss": LossConfig,
            "optim": OptimConfig, "diagnostics": DiagnosticsConfig, "validation": ValidationConfig,
            "checkpoint": CheckpointConfig, "augment": AugmentConfig,
        }
        unknown = sorted(set(d) - set(sections) - {"preset", "seed", "compile"})
        if unknown:
            raise ValueError(f"unknown key(s) in train config: {unknown}")
        kw: dict[str, Any] = {}
        for name, typ in sections.items():
            sec = dict(d.get(name) or {})
            allowed = {f.name for f in dataclasses.fields(typ)}
            bad = sorted(set(sec) - allowed)
            if bad:
                raise ValueError(f"unknown key(s) in {name}: {bad}; allowed: {sorted(allowed)}")
            if isinstance(sec.get("betas"), list):
                sec["betas"] = tuple(sec["betas"])
            kw[name] = loss_config_from_dict(sec) if typ is LossConfig else typ(**sec)
        return cls(**kw, preset=d.get("preset", "auto"), seed=d.get("seed", 0), compile=d.get("compile", False))

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_checkpoint_json(cls, text: str) -> "TrainConfig":
        """A checkpoint's config; checkpoints written before frame blocks predict one frame
        per window, those written before loss presets used the notes' loss, those written
        before validation settings validated per epoch on the validation split only, keeping
        the lowest validation loss, and those written before the phase shift cut every epoch
        at the same frames."""
        d = json.loads(text)
        d.setdefault("stream", {}).setdefault("frames_per_window", 1)
        d["stream"].setdefault("phase_jitter", False)
        d.setdefault("validation", {"holdout_tail": 0.0, "metric": "loss"})
        loss = d.setdefault("loss", {})
        if "preset" not in loss:  # written before loss presets: the notes' loss
            d["loss"] = {**dataclasses.asdict(LOSS_PRESETS["notes"]), **loss, "preset": "notes"}
        d["loss"].setdefault("still_max", 0.0)  # written before still channels: all trained
        d.setdefault("augment", dict(AUGMENT_OFF))  # written before augmentation: none
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        p = Path(path)
        data = read_config_file(p)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{p}: {e}") from None

    def with_preset(self, preset: str) -> "TrainConfig":
        """Model sizes and batch streams of a preset; everything else kept."""
        return dataclasses.replace(
            self,
            preset=preset,
            model=dataclasses.replace(
                PRESETS[preset], dropout=self.model.dropout, temperature=self.model.temperature,
                smoothing_alpha_init=self.model.smoothing_alpha_init,
                target_frame_residual=self.model.target_frame_residual,
            ),
            stream=dataclasses.replace(self.stream, batch_streams=PRESET_BATCH_STREAMS[preset]),
        )

    def replace(self, **sections: Any) -> "TrainConfig":
        """replace(optim={"epochs": 2}, stream={"stride": 4}) -> a new config."""
        kw = {}
        for name, changes in sections.items():
            cur = getattr(self, name)
            kw[name] = dataclasses.replace(cur, **changes) if dataclasses.is_dataclass(cur) else changes
        return dataclasses.replace(self, **kw)



@dataclass(frozen=True)
class ConfigOverrides:
    """Choices given beside a config file (bstrain fit's options; None: the config's own),
    applied once, by resolve(), to give a run's final config.

    written_loss: the loss section as written in the config file, so that a loss preset given
    here keeps the file's own departures from its preset (a full dump of the default config
    departs from nothing)."""

    preset: str | None = None
    epochs: int | None = None
    max_steps: int | None = None
    batch_streams: int | None = None
    stride: int | None = None
    frames_per_window: int | None = None
    loss_preset: str | None = None
    validate_every: int | None = None
    patience: int | None = None
    seed: int | None = None
    compile: bool | None = None
    written_loss: dict = field(default_factory=dict)

    # Each choice's command-line flag.
    FLAGS = {"preset": "--preset", "epochs": "--epochs", "max_steps": "--max-steps",
             "batch_streams": "--batch-streams", "stride": "--stride", "frames_per_window": "--frames-per-window",
             "loss_preset": "--loss", "validate_every": "--validate-every", "patience": "--patience",
             "seed": "--seed", "compile": "--compile"}

    def given(self) -> list[str]:
        """The flags of the choices made."""
        return [flag for name, flag in self.FLAGS.items() if getattr(self, name) is not None]

    def resolve(self, cfg: TrainConfig, device_type: str) -> tuple[TrainConfig, str]:
        """(the final config, why its preset): the preset first (auto = full on CUDA, small
        elsewhere; custom = the config's own sizes), then every other choice over it."""
        chosen = self.preset or cfg.preset
        why = "from --preset" if self.preset else "from the config"
        if chosen == "auto":
            chosen, why = ("full" if device_type == "cuda" else "small"), f"auto: {device_type}"
        if chosen == "custom":
            why = "model sizes from the config"
        else:
            cfg = cfg.with_preset(chosen)
        pick = lambda **kv: {k: v for k, v in kv.items() if v is not None}  # noqa: E731
        cfg = cfg.replace(optim=pick(epochs=self.epochs, max_steps=self.max_steps),
                          stream=pick(batch_streams=self.batch_streams, stride=self.stride,
                                      frames_per_window=self.frames_per_window),
                          validation=pick(every_steps=self.validate_every, patience=self.patience),
                          **pick(seed=self.seed, compile=self.compile))
        if self.loss_preset is not None:
            own = LOSS_PRESETS.get(self.written_loss.get("preset", "default"), LOSS_PRESETS["default"])
            kept = {k: v for k, v in self.written_loss.items() if k != "preset" and getattr(own, k, None) != v}
            cfg = TrainConfig.from_dict({**cfg.to_dict(), "loss": {**kept, "preset": self.loss_preset}})
        return TrainConfig.from_dict(cfg.to_dict()), why
