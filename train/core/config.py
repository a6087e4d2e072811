"""Training configuration: model sizes (with the full/small presets), streaming, loss
weights, optimisation and diagnostics, as frozen dataclasses with a canonical JSON form
that is stored in every checkpoint and run folder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from blendsync.shared import settings
from blendsync.shared.config import canonical_json, plain, read_config_file, short_hash
from blendsync.shared.settings import (
    flag,
    fraction,
    integer,
    nonnegative,
    one_of,
    positive,
    real,
    section,
    unit,
    unit_pair,
)

PRESETS: dict[str, ModelConfig] = {}  # filled below the class: full and small
PRESET_BATCH_STREAMS = {"full": 4, "small": 8, "live": 8}
# Model sizes a preset sets (ModelConfig fields); the rest of the model section is kept.
PRESET_SIZES = (
    "d_model", "heads", "mel_layers", "emotion_layers", "ff_mult", "streaming", "attention_span", "context_frames",
)  # fmt: skip


def preset_names() -> tuple[str, ...]:
    """What preset may say: a preset's name, auto (full on a GPU, small on a CPU) or custom."""
    return (*PRESETS, "auto", "custom")


# The most frames a window (and every length counted in frames) may hold: 2048 frames is 68 s
# at 30 fps, 8x the default window. Values read from a checkpoint meet the rules a config file
# does: a window of 1e9 frames asked for memory no machine has, and one of 8192 frames 43 GB for
# the per-bin mel stream's attention of one window (80 bins x L^2 x heads floats; 2.7 GB at 2048).
MAX_WINDOW = 2048


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    d_model: int = integer(32, minimum=1, maximum=4096, doc="Width d of every encoding, query and attention context.")
    heads: int = integer(2, minimum=1, maximum=256, doc="Attention heads (d_model must be divisible by them).")
    mel_layers: int = integer(1, minimum=1, maximum=64, doc="Self-attention layers of the mel stream.")
    emotion_layers: int = integer(
        1, minimum=1, maximum=64, doc="Self-attention layers of the emotion (eGeMAPS) stream."
    )
    ff_mult: int = integer(4, minimum=1, maximum=64, doc="Feed-forward width of each layer, in multiples of d_model.")
    dropout: float = fraction(0.1, doc="Dropout in the encoders and the decoder during training.")
    temperature: float = positive(1.0, doc="Fusion temperature: fused = (w_mel * mel + w_emo * emo) / temperature.")
    smoothing_alpha_init: float = real(
        1.0,
        doc="Initial smoothing_alpha; alpha = sigmoid(smoothing_alpha) weighs "
        "the current output against the previous smoothed one.",
    )
    target_frame_residual: bool = flag(
        True,
        doc="Add each stream's encoding at a block frame's own window position "
        "to the block's shared attention context (needed for "
        "stream.frames_per_window > 1).",
    )
    streaming: bool = flag(
        False,
        doc="The live model: causal encoders attending attention_span frames back and channel queries attending "
        "context_frames encodings up to lookahead frames ahead, so that a stream steps frame by frame at a "
        "fixed cost (docs: Design, The live model). false: the offline model, bidirectional over the window.",
    )
    attention_span: int = integer(
        16,
        minimum=1,
        maximum=MAX_WINDOW,
        doc="Live model: frames (the current one included) each encoder layer attends to.",
    )
    context_frames: int = integer(
        48,
        minimum=1,
        maximum=MAX_WINDOW,
        doc="Live model: encodings of each stream the channel queries attend to for a frame.",
    )


def receptive_frames(m: ModelConfig) -> int:
    """Frames before a live model's newest input that its output can depend on."""
    return max(m.mel_layers, m.emotion_layers) * (m.attention_span - 1) + m.context_frames - 1


def live_window(frames_per_window: int, lookahead: int, m: ModelConfig) -> int:
    """The window that gives a live model's block frames exactly their frame-by-frame outputs."""
    return frames_per_window + lookahead + receptive_frames(m)


PRESETS.update(
    {
        "full": ModelConfig(d_model=256, heads=4, mel_layers=2, emotion_layers=2),
        "small": ModelConfig(d_model=32, heads=2, mel_layers=1, emotion_layers=1),
        "live": ModelConfig(
            d_model=32,
            heads=2,
            mel_layers=1,
            emotion_layers=1,
            ff_mult=2,
            streaming=True,
            attention_span=16,
            context_frames=48,
        ),  # fmt: skip
    }
)
# Stream settings a preset sets besides batch_streams: the live model trains blocks of 64
# frames (its cost per frame does not depend on them) and looks 2 frames (67 ms) ahead: on the
# quality-against-lookahead benchmark (docs: Design, The live model) lookaheads of 0 to 8 frames
# scored within their seeds' spread of each other, and 2 keeps the latency under 150 ms.
PRESET_STREAMS: dict[str, dict] = {"live": {"frames_per_window": 64, "lookahead": 2}}


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    window: int = integer(256, minimum=1, maximum=MAX_WINDOW, doc="Frames L of one model window.")
    stride: int = integer(
        1,
        minimum=1,
        doc="Training blocks start every frames_per_window x stride frames "
        "(1: every frame is a target once per epoch).",
    )
    lookahead: int = integer(
        6,
        minimum=0,
        maximum=MAX_WINDOW,
        doc="Frames of audio after a block's last frame that its window sees "
        "(6 = 200 ms at 30 fps: mouths move before the sound).",
    )
    frames_per_window: int = integer(
        128,
        minimum=1,
        maximum=MAX_WINDOW,
        doc=(
            "K: frames one window predicts, the block ending lookahead frames before the window's end. 1 = the method "
            "notes' one output per window; larger K cuts the cost per frame about K-fold and adds up to K - 1 frames "
            "of latency to chunked predict (which can use fewer). 128 by the frame-block benchmarks (docs: Design)."
        ),
    )
    batch_streams: int = integer(
        8,
        minimum=1,
        maximum=4096,
        doc="B: parallel streams, each walking its own files in time order (a preset sets it: small 8, full 4).",
    )
    pad_value: float = real(0.0, doc="Value of padded frames, in standardised units (0 = the training mean).")
    prefetch_files: int = integer(4, minimum=1, doc="Files the background reader reads ahead of the model.")
    split_files: bool = flag(
        True,
        doc=(
            "Training: lay the files end to end and cut them into batch_streams equal runs, so every stream is busy "
            "to the end of the epoch (at most batch_streams - 1 files are cut, each part starting with a state "
            "reset). false: whole files only, which leaves streams idle when files are few or unequal."
        ),
    )
    phase_jitter: bool = flag(
        True,
        doc=(
            "Training: shift every file's block grid by a seeded random phase in [0, K x stride) each epoch, so a "
            "take is cut into different windows every epoch; every frame is still a target once per epoch at "
            "stride 1. Validation and predict never shift."
        ),
    )


LOSS_TERMS = ("mse", "l1", "mouth", "expression", "consistency", "temporal", "amplitude")
LOSS_SCALES = ("none", "target_std")
LOSS_PRESETS: dict[str, LossConfig] = {}  # filled below the class


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Weights of the loss terms (losses.py) and the unit the errors are measured in.

    preset names the starting weights (LOSS_PRESETS); keys written beside it override them.
    "notes" is the method notes' loss exactly; "default" departs from it (docs: Design, Loss)
    because on sparse real targets the notes' L1 and temporal terms flatten the predicted motion.
    """

    preset: str = one_of(
        "default",
        lambda: LOSS_PRESETS,
        doc=("Starting weights: default, notes (the method notes' loss) or mse; keys written beside it override them."),
    )
    mse: float = nonnegative(1.0, doc="Mean squared error over every trained channel.")
    l1: float = nonnegative(
        0.0,
        doc=(
            "Mean absolute error. Off by default (the notes' 0.1): on sparse real targets it pulls every curve to its "
            "median and halves the predicted movement."
        ),
    )
    mouth: float = nonnegative(0.5, doc="MSE over the mouth channel group.")
    expression: float = nonnegative(0.5, doc="MSE over the expression channel group.")
    consistency: float = nonnegative(0.2, doc="Velocity matching: (pred - prev_pred) against (target - prev_target).")
    temporal: float = nonnegative(
        0.0, doc="Smoothness, (pred - prev_pred)^2. Off by default (the notes' 0.1), for the same reason as l1."
    )
    amplitude: float = nonnegative(
        0.0,
        doc=(
            "(std of the prediction - std of the target)^2 per channel over the batch's real frames: pulls the "
            "predicted movement towards the target's size (0 = off)."
        ),
    )
    scale: str = one_of(
        "none",
        lambda: LOSS_SCALES,
        doc=(
            "target_std: every error is divided by its channel's training-target spread (floored at scale_floor), so "
            "a channel that moves by 0.03 weighs as much as one that moves by 0.3; none: errors in target units, as "
            "in the method notes."
        ),
    )
    scale_floor: float = positive(0.01, doc="Smallest spread an error is divided by under target_std.")
    still_max: float = unit(
        0.05,
        doc=(
            "Channels no training frame lifts above this (a custom rig's unused controls, a capture's dead curves) "
            "are left out of every loss term and predicted as constant 0; named in the log and the checkpoint. "
            "0 trains every channel."
        ),
    )


LOSS_PRESETS.update(
    {
        "default": LossConfig(),
        # The method notes' weights, errors in target units.
        "notes": LossConfig(
            preset="notes",
            mse=1.0,
            l1=0.1,
            mouth=0.5,
            expression=0.5,
            consistency=0.2,
            temporal=0.1,
            amplitude=0.0,
            scale="none",
        ),
        # Plain mean squared error in target units.
        "mse": LossConfig(
            preset="mse",
            mse=1.0,
            l1=0.0,
            mouth=0.0,
            expression=0.0,
            consistency=0.0,
            temporal=0.0,
            amplitude=0.0,
            scale="none",
        ),
    }
)


def loss_config_from_dict(sec: dict) -> LossConfig:
    sec = dict(sec)
    name = sec.pop("preset", "default")
    if name not in LOSS_PRESETS:
        raise ValueError(f"loss.preset must be one of {list(LOSS_PRESETS)}, got {name!r}")
    return dataclasses.replace(LOSS_PRESETS[name], **sec)


# Settings added after checkpoints were written, with the value that gives the behaviour from
# before: hashed only when they differ from it.
_HASHED_UNLESS_BEFORE = {("optim", "ema_decay"): 0.0, ("augment", "variant_p"): 0.0}


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    lr: float = positive(1e-3, doc="Peak learning rate of AdamW.")
    weight_decay: float = nonnegative(0.01, doc="AdamW weight decay.")
    betas: tuple[float, float] = unit_pair((0.9, 0.999), doc="AdamW betas.")
    warmup_steps: int = integer(
        20,
        minimum=0,
        doc=(
            "Linear warmup steps before the cosine decay; 20 reached the held-out skill of 100 in about half the steps "
            "on the learning benchmark."
        ),
    )
    min_lr_ratio: float = unit(0.05, doc="The cosine decays to this fraction of lr by the run's last step.")
    grad_clip: float = positive(1.0, doc="Largest gradient norm (clipped above it).")
    epochs: int = integer(10, minimum=1, doc="Epochs over the training split.")
    max_steps: int = integer(
        0, minimum=0, doc="Stop after this many optimiser steps (0 = no limit); also sets the cosine's length."
    )
    ema_decay: float = fraction(
        0.0,
        doc=(
            "Exponential moving average of the weights (0: off): validation, best.pt and last.pt hold the average "
            "(decay d: each step moves it 1 - d of the way to the trained weights; early steps move it more), "
            "training continues on the trained weights."
        ),
    )


@dataclass(frozen=True)
class DiagnosticsConfig:
    every_steps: int = integer(
        50,
        minimum=0,
        doc=(
            "Log the gradient norms, the smoothing_alpha gradient and the mel/emotion balance every this many steps "
            "(0: never)."
        ),
    )
    normalize_stream_grads: bool = flag(
        False, doc="L2-normalise the gradients of mel_weights and emotion_weights (the stream balance)."
    )


VALIDATION_METRICS = {"skill": "max", "mean_r": "max", "loss": "min"}


@dataclass(frozen=True)
class ValidationConfig:
    every_steps: int = integer(
        0,
        minimum=0,
        doc="Validate every this many optimiser steps and at the end of the run (0: at the end of every epoch).",
    )
    metric: str = one_of(
        "skill",
        lambda: VALIDATION_METRICS,
        doc=(
            "What best.pt keeps the best of on the validation frames: skill (1 - MSE / MSE of the training mean, in "
            "target units, comparable across loss settings), mean_r (mean Pearson r over the active channels) or "
            "loss (the training loss, lower is better; it changes meaning with the loss section)."
        ),
    )
    patience: int = integer(
        0, minimum=0, doc="End training after this many validations in a row without a better metric (0: never)."
    )
    holdout_tail: float = fraction(
        0.1,
        doc=(
            "With no validation split in the manifest: validate on this last fraction of every training take's frames, "
            "which are then not trained on (0: no validation, best = last)."
        ),
    )


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """Feature-level augmentation of training windows, drawn afresh for every window of every
    step (on the device, from torch's seeded RNG); validation, evaluate and predict never see
    it. Values act on the standardised features, so a mask sets frames or bins to the
    training mean."""

    gain_db: float = nonnegative(
        0.0,
        doc=(
            "A level offset per window, uniform in [-gain_db, +gain_db] dB, added to every log-mel value of its real "
            "frames (a louder or quieter microphone). 0: off."
        ),
    )
    time_masks: int = integer(0, minimum=0, doc="SpecAugment time masks per window on the mel stream.")
    time_mask_frames: int = integer(8, minimum=1, doc="Longest time mask, in frames.")
    freq_masks: int = integer(0, minimum=0, doc="SpecAugment frequency masks per window on the mel stream.")
    freq_mask_bins: int = integer(8, minimum=1, doc="Widest frequency mask, in mel bins.")
    emotion_dropout: float = fraction(
        0.5,
        doc=(
            "Chance that a window's whole emotion stream is replaced by the training mean, so the model does not lean "
            "on it alone. 0.5 by the augmentation benchmark: on the custom rig it kept held-out skill up twice as long "
            "before overfitting set in; the level offset and the masks did not help there and are off."
        ),
    )

    variant_p: float = fraction(
        0.0,
        doc=(
            "Chance that an epoch walks one of a training take's stored audio variants (bsfeat extract --augment: "
            "faster, slower, pitched, noisy) instead of the take, drawn per take and epoch; 0: the takes as captured."
        ),
    )

    @property
    def active(self) -> bool:
        """Whether the feature-level augmenter runs (variant_p chooses files, not features)."""
        return bool(self.gain_db or self.time_masks or self.freq_masks or self.emotion_dropout)


# Augmentation off: the section of checkpoints written before it existed.
AUGMENT_OFF = {"gain_db": 0.0, "time_masks": 0, "freq_masks": 0, "emotion_dropout": 0.0}


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = integer(
        0, minimum=0, doc="Also save step_N.pt every this many steps (0: only last.pt and best.pt)."
    )


def field_problems(cfg: TrainConfig) -> list[str]:
    """Every value of the config checked on its own, named by its key (section.key)."""
    return settings.problems(cfg)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    model: ModelConfig = section(
        ModelConfig,
        doc="Model sizes (a preset replaces d_model, heads, the layers and "
        "ff_mult; preset: custom keeps them as written).",
    )
    stream: StreamConfig = section(StreamConfig, doc="Windows, blocks and the parallel streams.")
    loss: LossConfig = section(LossConfig, doc="Loss terms and their weights.")
    optim: OptimConfig = section(OptimConfig, doc="Optimiser and schedule.")
    diagnostics: DiagnosticsConfig = section(DiagnosticsConfig, doc="Gradient diagnostics in the log.")
    validation: ValidationConfig = section(ValidationConfig, doc="Validation, best.pt and early stopping.")
    checkpoint: CheckpointConfig = section(CheckpointConfig, doc="Checkpoints besides last.pt and best.pt.")
    augment: AugmentConfig = section(
        AugmentConfig, doc="Feature augmentation of training windows (never of validation, evaluate or predict)."
    )
    preset: str = one_of(
        "auto",
        lambda: preset_names(),
        doc=(
            "Model sizes: auto (full on a GPU, small on a CPU), small, full, or custom (the model section as written)."
        ),
    )
    seed: int = integer(
        0,
        minimum=-(2**63),
        doc="Seed of every random choice (initial weights, file order, phase shifts, augmentation, dropout).",
    )
    compile: bool = flag(
        False, doc="torch.compile the model for training (worth it on a GPU; the first steps compile)."
    )

    def __post_init__(self) -> None:
        problems = field_problems(self)
        if problems:  # relations between values only make sense once each value is sound
            raise ValueError("invalid train config: " + "; ".join(problems))
        s, m = self.stream, self.model
        if not s.lookahead < s.window:
            problems.append(f"stream.lookahead must be in [0, window), got {s.lookahead}")
        if not 1 <= s.frames_per_window <= s.window - s.lookahead:
            problems.append(
                f"stream.frames_per_window must be in [1, window - lookahead] = "
                f"[1, {s.window - s.lookahead}], got {s.frames_per_window}"
            )
        elif s.frames_per_window > 1 and not m.target_frame_residual:
            problems.append(
                "stream.frames_per_window > 1 needs model.target_frame_residual: true "
                "(each block frame adds its own encoding to the shared context)"
            )
        if m.d_model % m.heads:
            problems.append(f"model.d_model ({m.d_model}) must be divisible by heads ({m.heads})")
        if m.streaming and s.window < live_window(s.frames_per_window, s.lookahead, m):
            problems.append(
                f"stream.window must be at least frames_per_window + lookahead + the live model's receptive field "
                f"= {live_window(s.frames_per_window, s.lookahead, m)} frames, got {s.window} (leave stream.window "
                "out and it is set so)"
            )
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
        return short_hash(self.hashed_dict())

    def hashed_dict(self) -> dict:
        """to_dict() without the settings added after checkpoints were written that hold their
        earlier behaviour: every earlier config hash still stands."""
        d = self.to_dict()
        for (part, key), before in _HASHED_UNLESS_BEFORE.items():
            if d[part].get(key) == before:
                d[part].pop(key)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> TrainConfig:
        if d is not None and not isinstance(d, dict):
            raise ValueError(f"a train config is a mapping of sections, got {type(d).__name__}")
        d = dict(d or {})
        sections = settings.sections(cls)  # {"model": ModelConfig, ...}, from the fields themselves
        scalars = {f.name for f in dataclasses.fields(cls)} - set(sections)
        unknown = sorted(set(d) - set(sections) - scalars)
        if unknown:
            raise ValueError(f"unknown key(s) in train config: {unknown}")
        kw: dict[str, Any] = {k: d[k] for k in scalars if k in d}
        for name, typ in sections.items():
            if d.get(name) is not None and not isinstance(d[name], dict):
                raise ValueError(f"{name} must be a mapping of its settings, got {type(d[name]).__name__}")
            sec = dict(d.get(name) or {})
            allowed = {f.name for f in dataclasses.fields(typ)}
            bad = sorted(set(sec) - allowed)
            if bad:
                raise ValueError(f"unknown key(s) in {name}: {bad}; allowed: {sorted(allowed)}")
            if isinstance(sec.get("betas"), list):
                sec["betas"] = tuple(sec["betas"])
            kw[name] = loss_config_from_dict(sec) if typ is LossConfig else typ(**sec)
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_checkpoint_json(cls, text: str) -> TrainConfig:
        """A checkpoint's config; checkpoints written before frame blocks predict one frame
        per window, those written before loss presets used the notes' loss, those written
        before validation settings validated per epoch on the validation split only, keeping
        the lowest validation loss, and those written before the phase shift cut every epoch
        at the same frames."""
        d = json.loads(text)
        sections = settings.sections(cls)
        if not isinstance(d, dict) or any(d.get(k) is not None and not isinstance(d[k], dict) for k in sections):
            return cls.from_dict(d)  # refused there, naming what is not a mapping
        d.setdefault("stream", {}).setdefault("frames_per_window", 1)
        d["stream"].setdefault("phase_jitter", False)
        d.setdefault("validation", {"holdout_tail": 0.0, "metric": "loss"})
        loss = d.setdefault("loss", {})
        if "preset" not in loss:  # written before loss presets: the notes' loss
            d["loss"] = {**dataclasses.asdict(LOSS_PRESETS["notes"]), **loss, "preset": "notes"}
        d["loss"].setdefault("still_max", 0.0)  # written before still channels: all trained
        d.setdefault("augment", dict(AUGMENT_OFF))  # written before augmentation: none
        for (part, key), before in _HASHED_UNLESS_BEFORE.items():
            d.setdefault(part, {}).setdefault(key, before)
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        p = Path(path)
        data = read_config_file(p)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{p}: {e}") from None

    def with_preset(self, preset: str) -> TrainConfig:
        """Model sizes (PRESET_SIZES) and batch streams of a preset; everything else kept."""
        sizes = {k: getattr(PRESETS[preset], k) for k in PRESET_SIZES}
        model = dataclasses.replace(self.model, **sizes)
        stream = dataclasses.replace(
            self.stream, batch_streams=PRESET_BATCH_STREAMS[preset], **PRESET_STREAMS.get(preset, {})
        )
        if model.streaming:
            stream = dataclasses.replace(stream, window=live_window(stream.frames_per_window, stream.lookahead, model))
        return dataclasses.replace(self, preset=preset, model=model, stream=stream)

    def replace(self, **sections: Any) -> TrainConfig:
        """replace(optim={"epochs": 2}, stream={"stride": 4}) -> a new config."""
        kw = {}
        for name, changes in sections.items():
            cur = getattr(self, name)
            kw[name] = dataclasses.replace(cur, **changes) if dataclasses.is_dataclass(cur) else changes
        return dataclasses.replace(self, **kw)


def setting_keys() -> dict[str, dataclasses.Field]:
    """Every train config key ("optim.lr", "seed", ...) and its field."""
    return settings.keys(TrainConfig)


def parse_setting(text: str) -> tuple[str, Any]:
    """ "section.key=value" (bstrain fit --set) -> (key, value). The value is read as YAML
    (numbers, true/false, [lists]), with 3e-4-style floats that YAML 1.1 reads as text taken as
    numbers; the key must be a setting of the train config."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--set {text!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
    known = setting_keys()
    if key not in known:
        near = [k for k in known if k.split(".")[-1] == key.split(".")[-1]]
        raise ValueError(
            f"--set {text!r}: unknown config key {key!r}"
            + (f"; did you mean {' or '.join(near)}?" if near else "; see bstrain write-default-config")
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        for number in (int, float):
            try:
                value = number(value)
                break
            except ValueError:
                pass
    return key, value


@dataclass(frozen=True, kw_only=True)
class ConfigOverrides:
    """Choices given beside a config file, applied once by resolve() to give a run's final
    config: the model preset, the loss preset, and config keys set by bstrain fit's flags
    (--epochs, -K, ...) and --set KEY=VALUE.

    values: {dotted key: value}; sources: {dotted key: the flag that set it}, for messages.
    written_loss: the loss section as written in the config file, so that a loss preset given
    here keeps the file's own departures from its preset (a full dump of the default config
    departs from nothing)."""

    preset: str | None = None
    loss_preset: str | None = None
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    written_loss: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.values) - set(setting_keys()))
        if unknown:
            raise ValueError(f"unknown config key(s): {unknown}")

    @classmethod
    def from_settings(cls, pairs: list[tuple[str, Any, str]], written_loss: dict | None = None) -> ConfigOverrides:
        """From (key, value, the flag that set it) in the order given; preset and loss.preset
        are the presets. A key given twice is refused (which one was meant?)."""
        preset = loss_preset = None
        values, sources = {}, {}
        for key, value, how in pairs:
            if key in sources:
                raise ValueError(f"{key} given twice ({sources[key]} and {how}): give it once")
            sources[key] = how
            if key == "preset":
                preset = value
            elif key == "loss.preset":
                loss_preset = value
            else:
                values[key] = value
        return cls(
            preset=preset,
            loss_preset=loss_preset,
            values=values,
            sources=sources,
            written_loss=dict(written_loss or {}),
        )

    def given(self) -> list[str]:
        """How the choices made were given (flags, --set KEY), for messages."""
        made = [
            *(["preset"] if self.preset is not None else []),
            *(["loss.preset"] if self.loss_preset else []),
            *self.values,
        ]
        return list(dict.fromkeys(self.sources.get(k, k) for k in made))

    def asks(self, key: str) -> Any:
        """The value given for key (preset and loss.preset included), or None."""
        return {"preset": self.preset, "loss.preset": self.loss_preset}.get(key, self.values.get(key))

    def resolve(self, cfg: TrainConfig, device_type: str) -> tuple[TrainConfig, str]:
        """(the final config, why its preset): the preset first (auto = full on CUDA, small
        elsewhere; custom = the config's own sizes), then every key over it. Model sizes set
        over a preset make the config's preset custom (they are no longer the preset's)."""
        chosen = self.preset or cfg.preset
        why = "from --preset" if self.preset else "from the config"
        if chosen == "auto":
            chosen, why = ("full" if device_type == "cuda" else "small"), f"auto: {device_type}"
        if chosen == "custom":
            why = "model sizes from the config"
        else:
            cfg = cfg.with_preset(chosen)
        d = cfg.to_dict()
        for key, value in self.values.items():
            *path, name = key.split(".")
            sec = d
            for part in path:
                sec = sec[part]
            sec[name] = value
        m = d["model"]
        if m["streaming"] and "stream.window" not in self.values:  # the window a live model's blocks need
            s = d["stream"]
            s["window"] = live_window(s["frames_per_window"], s["lookahead"], ModelConfig(**m))
        sized = [k for k in self.values if k.startswith("model.") and k.split(".")[1] in PRESET_SIZES]
        if sized and chosen != "custom":
            d["preset"], why = "custom", f"{chosen}'s sizes with {', '.join(self.sources.get(k, k) for k in sized)}"
        if self.loss_preset is not None:
            own = LOSS_PRESETS.get(self.written_loss.get("preset", "default"), LOSS_PRESETS["default"])
            kept = {k: v for k, v in self.written_loss.items() if k != "preset" and getattr(own, k, None) != v}
            given = {k.split(".", 1)[1]: v for k, v in self.values.items() if k.startswith("loss.")}
            d["loss"] = {**kept, **given, "preset": self.loss_preset}
        return TrainConfig.from_dict(d), why
