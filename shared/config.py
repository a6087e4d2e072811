"""Feature configuration: frozen dataclasses, a canonical serialisation and its hash.

The *feature-config hash* covers only what changes the meaning of stored arrays (rates,
bins, windows, context, channel set). Runtime knobs (workers, tolerance for rejecting a
row) are left out, so changing them never invalidates a store; trainers and predictors
compare this hash to refuse features they were not trained on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from blendsync.shared import settings
from blendsync.shared.channels import ARKIT, ChannelSet, read_channel_file
from blendsync.shared.settings import documented, integer, nonnegative, one_of, positive, real, section
from blendsync.shared.streams.resample import RESAMPLERS

HASH_LEN = 16


def canonical_json(obj: Any) -> str:
    """One text per value: sorted keys, no whitespace, floats as repr, tuples as lists."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def short_hash(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:HASH_LEN]


SUPPORTED_FEATURE_SETS = ("eGeMAPSv02",)
BEFORE_FIRST_CONTEXT = ("first", "fill")


@dataclass(frozen=True, kw_only=True)
class MelConfig:
    """Log-mel spectrogram (librosa), rows every hop_s with centred frames."""

    n_mels: int = integer(80, minimum=1, maximum=1024, doc="Mel bins.")
    n_fft: int = integer(512, minimum=1, maximum=65536, doc="FFT size, in samples.")
    win_s: float = positive(0.025, maximum=1.0, doc="Analysis window (Hann), in seconds; at most n_fft samples.")
    hop_s: float = positive(
        0.010,
        maximum=1.0,
        doc="Hop between rows, in seconds: a whole number of samples. The rows are put on the frame grid by time.",
    )
    fmin: float = nonnegative(0.0, doc="Lowest frequency of the mel bank, Hz.")
    fmax: float = positive(
        8000.0, maximum=96000.0, doc="Highest frequency of the mel bank, Hz (at most sample_rate / 2)."
    )
    log_floor: float = positive(1e-6, doc="log(mel_power + log_floor): keeps digital silence finite.")


@dataclass(frozen=True, kw_only=True)
class EmotionConfig:
    """openSMILE functionals over a context window that ends at each frame."""

    feature_set: str = one_of(
        "eGeMAPSv02", lambda: SUPPORTED_FEATURE_SETS, doc="openSMILE feature set (its 88 functionals)."
    )
    context_s: float = positive(
        1.0, maximum=60.0, doc="Seconds of audio each frame's functionals describe, ending at the frame."
    )
    hop_s: float = positive(
        0.010, maximum=1.0, doc="Row step of the one-pass extraction: a multiple of openSMILE's 10 ms LLD hop."
    )
    nonfinite_fill: float = real(
        0.0,
        doc="Replaces non-finite functionals (e.g. F0 statistics over an unvoiced "
        "context); counted in each item's attrs.",
    )
    delay_s: float = nonnegative(
        0.0,
        maximum=10.0,
        doc="Frame k takes the functionals of the context ending delay_s before its instant. A live stream then "
        "needs no audio after a frame's instant for its emotion row (openSMILE's own right context falls inside "
        "the delay); the live feature config sets 0.15. Part of the hash only when not 0.",
    )
    before_first_context: str = one_of(
        "first",
        lambda: BEFORE_FIRST_CONTEXT,
        doc="Frames before the first full context: first (they take the first context's row, which exists only "
        "once a full context of audio has arrived) or fill (they take nonfinite_fill, so that a live stream "
        "animates its first second at once). Part of the hash only when not first.",
    )


@dataclass(frozen=True)
class TargetConfig:
    channels: ChannelSet = documented(
        ARKIT,
        rule="arkit52, a list of names, or channels_file",
        doc=(
            "The target channels: arkit52 (the 52 ARKit curves in the Live Link Face app's order) or a list of names. "
            "For a custom rig leave it out and give channels_file: a text file with one name per line (an optional "
            "count first), relative to this config; then mouth: [names] and expression: [names] (beside channels_file, "
            "under targets) name the loss groups, and channel_set_name names the set (default: the file's stem)."
        ),
    )
    jitter_tolerance: float = nonnegative(
        0.25,
        doc=(
            "Live Link Face rows whose intervals jitter by more than this fraction of the median interval are "
            "re-spaced uniformly at the median rate."
        ),
    )
    max_mismatch_s: float = nonnegative(
        0.25,
        doc=(
            "Largest audio/target duration difference that is trimmed; beyond it a row is rejected. Runtime only: it "
            "decides acceptance, not the values of an accepted item, so it is not part of the feature-config hash."
        ),
    )


_UNHASHED = {("targets", "max_mismatch_s")}
# Settings added after stores and checkpoints were written: hashed only when they differ from
# these defaults, so every earlier feature-config hash still stands.
_HASHED_UNLESS_DEFAULT = {
    ("emotion", "delay_s"): 0.0,
    ("emotion", "before_first_context"): "first",
    (None, "resampler"): "soxr-vhq",
}


@dataclass(frozen=True, kw_only=True)
class FeatureConfig:
    sample_rate: int = integer(
        16000,
        minimum=8000,
        maximum=192000,
        doc="Audio is decoded, mixed to mono and resampled to this rate (by resampler).",
    )
    resampler: str = one_of(
        "soxr-vhq",
        lambda: RESAMPLERS,
        doc="How audio at another rate is brought to sample_rate: soxr-vhq (soxr's very-high-quality filter; a "
        "stream of it holds samples back in bursts of up to 84 ms at 44.1 kHz, 110 ms at 8 kHz) or sinc-4ms (a "
        "windowed sinc reaching 4 ms to either side, flat to 7.8 kHz at 16 kHz: a stream of it holds back a "
        "constant 4 ms; the live feature config's). Audio at sample_rate is taken as it is. Part of the hash only "
        "when not soxr-vhq.",
    )
    fps: float = positive(30.0, maximum=240.0, doc="Frame rate of the frame grid: frame k is the instant k / fps.")
    mel: MelConfig = section(MelConfig, doc="The log-mel stream (80 bins by default).")
    emotion: EmotionConfig = section(EmotionConfig, doc="The eGeMAPS stream (88 openSMILE functionals).")
    targets: TargetConfig = section(TargetConfig, doc="The target curves.")

    def __post_init__(self) -> None:
        # fps=30 and fps=30.0 are one config and must hash alike.
        object.__setattr__(self, "fps", float(self.fps))
        object.__setattr__(self, "sample_rate", int(self.sample_rate))
        problems = settings.problems(self)
        if problems:  # relations between values only make sense once each value is sound
            raise ValueError("invalid feature config: " + "; ".join(problems))
        hop = self.mel.hop_s * self.sample_rate
        if abs(hop - round(hop)) > 1e-6 or round(hop) <= 0:
            problems.append(f"mel.hop_s * sample_rate must be a whole number of samples, got {hop}")
        win = self.mel.win_s * self.sample_rate
        if round(win) > self.mel.n_fft or round(win) <= 0:
            problems.append(f"mel.win_s ({round(win)} samples) must be in 1..n_fft ({self.mel.n_fft})")
        if not 0 <= self.mel.fmin < self.mel.fmax <= self.sample_rate / 2:
            problems.append(f"mel needs 0 <= fmin < fmax <= sample_rate/2, got {self.mel.fmin}, {self.mel.fmax}")
        steps = self.emotion.hop_s / 0.01
        if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
            problems.append(f"emotion.hop_s must be a multiple of openSMILE's 10 ms LLD hop, got {self.emotion.hop_s}")
        if problems:
            raise ValueError("invalid feature config: " + "; ".join(problems))

    @property
    def n_mels(self) -> int:
        return self.mel.n_mels

    @property
    def n_emotion(self) -> int:
        return 88

    @property
    def channels(self) -> ChannelSet:
        return self.targets.channels

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["targets"]["channels"] = self.targets.channels.to_dict()
        return plain(d)

    def hashed_dict(self) -> dict:
        d = self.to_dict()
        for part, key in _UNHASHED:
            d[part].pop(key, None)
        for (part, key), default in _HASHED_UNLESS_DEFAULT.items():
            section = d if part is None else d[part]
            if section.get(key) == default:
                section.pop(key)
        return d

    @property
    def hash(self) -> str:
        """The feature-config hash: identity of what the stored arrays mean."""
        return short_hash(self.hashed_dict())

    @property
    def input_hash(self) -> str:
        """The hash of what the model reads (rates, mel, emotion), the target channels apart:
        a model fine-tuned onto another rig needs the same inputs, not the same outputs."""
        d = self.hashed_dict()
        d.pop("targets")
        return short_hash(d)

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_commented_yaml(self, header: str = "") -> str:
        """Every setting with its description (bsfeat write-default-config); the 52 ARKit
        channels by their set's name."""
        d = self.to_dict()
        if self.targets.channels == ARKIT:
            d["targets"]["channels"] = ARKIT.name
        return settings.commented_yaml(self, d, header)

    @classmethod
    def from_dict(cls, d: dict, *, base_dir: Path | None = None) -> FeatureConfig:
        d = dict(d or {})
        _check_keys(d, {"sample_rate", "resampler", "fps", "mel", "emotion", "targets"}, "config")
        mel = dict(d.pop("mel", None) or {})
        emo = dict(d.pop("emotion", None) or {})
        tgt = dict(d.pop("targets", None) or {})
        _check_keys(mel, {f.name for f in dataclasses.fields(MelConfig)}, "mel")
        _check_keys(emo, {f.name for f in dataclasses.fields(EmotionConfig)}, "emotion")
        _check_keys(
            tgt,
            {
                "channels",
                "channels_file",
                "channel_set_name",
                "mouth",
                "expression",
                "jitter_tolerance",
                "max_mismatch_s",
            },
            "targets",
        )
        channels = _channel_set_from(tgt, base_dir)
        return cls(
            sample_rate=number("sample_rate", d.get("sample_rate", 16000), int),
            resampler=d.get("resampler", "soxr-vhq"),
            fps=number("fps", d.get("fps", 30.0), float),
            mel=MelConfig(**{k: _num(MelConfig, k, v, "mel") for k, v in mel.items()}),
            emotion=EmotionConfig(**{k: _num(EmotionConfig, k, v, "emotion") for k, v in emo.items()}),
            targets=TargetConfig(
                channels=channels,
                jitter_tolerance=number("targets.jitter_tolerance", tgt.get("jitter_tolerance", 0.25), float),
                max_mismatch_s=number("targets.max_mismatch_s", tgt.get("max_mismatch_s", 0.25), float),
            ),
        )

    @classmethod
    def from_embedded(cls, d: dict) -> FeatureConfig:
        """A config carried inside a store's items or a checkpoint: it names its channels and
        never a file to read (a crafted one could otherwise read any local file into a
        command's outputs), so targets.channels_file is refused."""
        targets = (d or {}).get("targets") or {}
        if isinstance(targets, dict) and "channels_file" in targets:
            raise ValueError(
                f"an embedded feature config names its channels, never a file to read "
                f"(targets.channels_file: {str(targets['channels_file'])[:200]!r})"
            )
        return cls.from_dict(d)

    @classmethod
    def from_json(cls, text: str) -> FeatureConfig:
        """A config written by to_json (embedded: no file is read)."""
        return cls.from_embedded(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> FeatureConfig:
        """Read a YAML or JSON config file; paths inside it are relative to the file."""
        p = Path(path)
        data = read_config_file(p)
        try:
            return cls.from_dict(data, base_dir=p.parent)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{p}: {e}") from None


# Named feature configs (bsfeat extract --features NAME). live: the emotion row of frame k is
# the context ending 0.15 s before it and the first second is filled, so that a live stream's
# features of frame k need no audio after k / fps but the mel window's (shared.streams.live).
FEATURE_PRESETS: dict[str, FeatureConfig] = {
    "default": FeatureConfig(),
    "live": FeatureConfig(resampler="sinc-4ms", emotion=EmotionConfig(delay_s=0.15, before_first_context="fill")),
}


def read_config_file(path: Path) -> dict:
    """A YAML/JSON mapping from a config file, with errors that name the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML/JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply to be a config") from None
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data or {}


def plain(obj: Any) -> Any:
    """Dataclass-dict values as JSON types: tuples become lists, recursively."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def _num(cls: type, key: str, value: Any, where: str = "") -> Any:
    """A config value of cls's numeric field as its type; ValueError naming the key otherwise."""
    typ = {f.name: f.type for f in dataclasses.fields(cls)}[key]
    if typ in ("int", int):
        return number(f"{where}.{key}" if where else key, value, int)
    if typ in ("float", float):
        return number(f"{where}.{key}" if where else key, value, float)
    return value


def number(key: str, value: Any, kind: type) -> Any:
    """value as an int or float; a ValueError naming key for text, booleans, lists and
    fractions where a whole number is due."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float, str))
    if not bad:
        try:
            x = float(value)
            bad = kind is int and (not math.isfinite(x) or x != int(x))
        except ValueError:
            bad = True
    if bad:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{key} must be {what}, got {value!r}")
    return int(float(value)) if kind is int else float(value)


def _check_keys(d: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {unknown}; allowed: {sorted(allowed)}")


def _channel_set_from(tgt: dict, base_dir: Path | None) -> ChannelSet:
    chans = tgt.get("channels")
    chfile = tgt.get("channels_file")
    if chans is not None and chfile is not None:
        raise ValueError("targets: give either channels or channels_file, not both")
    if chfile is not None:
        p = Path(chfile)
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        names = read_channel_file(p)
        name = tgt.get("channel_set_name") or p.stem
    elif chans is None or chans == "arkit52":
        if any(k in tgt for k in ("mouth", "expression", "channel_set_name")):
            raise ValueError("targets: mouth/expression/channel_set_name need a custom channel list")
        return ARKIT
    elif isinstance(chans, dict):
        return ChannelSet.from_dict(chans)
    elif isinstance(chans, list):
        names = tuple(str(c) for c in chans)
        name = tgt.get("channel_set_name") or f"custom{len(names)}"
    else:
        raise ValueError(f"targets.channels must be 'arkit52' or a list of names, got {chans!r}")
    return ChannelSet(
        name=str(name),
        channels=names,
        mouth=tuple(tgt.get("mouth", ())),
        expression=tuple(tgt.get("expression", ())),
    )
