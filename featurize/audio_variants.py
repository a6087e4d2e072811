"""Audio augmentation variants (bsfeat extract --augment SPEC): a take played faster or
slower, pitched up or down, under noise or in a room, featurized once into an item of its own.

Feature-level augmentation (train.loop.augment) cannot make a voice faster or higher; these
can, and featurizing is the expensive part: each variant of each take is computed once,
stored under a key derived from its original item's key and the variant (variant_key), and
reused by every later run. A SPEC is one or more steps joined by commas, applied in order:

    speed:F    play F times as fast (0.5..2, not 1): duration / F and pitch x F, as speed
               perturbation does; the curves are time-scaled with the audio
    pitch:N    shift the pitch by N semitones (-12..12, not 0), duration kept (librosa's
               phase vocoder)
    noise:DB   add white noise DB dB below the take's RMS level (SNR -5..60)
    reverb:S   convolve with a synthetic room response of reverberation time S seconds
               (RT60 0.05..3): exponentially decaying noise after a direct path

Noise and rooms are drawn from a generator seeded by the variant's key, so a variant is the
same wherever and whenever it is computed. Shapes: samples (N,) float32 at the feature
config's rate in, (N',) float32 out (N' = N / F for speed, else N).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from blendsync.shared.config import canonical_json

# Bumped when a step computes other samples from the same input: variants made before are
# not reused.
AUGMENT_CODE_VERSION = 1

# kind: (lowest, highest, the value that leaves the audio unchanged, what the value is)
STEP_RANGES: dict[str, tuple[float, float, float | None, str]] = {
    "speed": (0.5, 2.0, 1.0, "a speed factor"),
    "pitch": (-12.0, 12.0, 0.0, "semitones"),
    "noise": (-5.0, 60.0, None, "a signal-to-noise ratio in dB"),
    "reverb": (0.05, 3.0, None, "a reverberation time (RT60) in seconds"),
}


class AugmentError(ValueError):
    """An --augment SPEC that cannot be used, said in one line naming it."""


@dataclass(frozen=True)
class AugmentStep:
    kind: str
    value: float

    @property
    def name(self) -> str:
        v = f"{self.value:+g}" if self.kind == "pitch" else f"{self.value:g}"
        return f"{self.kind}:{v}"


@dataclass(frozen=True)
class AudioVariant:
    """One variant: its steps, applied in order."""

    steps: tuple[AugmentStep, ...]

    @classmethod
    def parse(cls, spec: str) -> AudioVariant:
        """'speed:0.9' or 'pitch:+2,noise:20'; AugmentError naming the spec otherwise."""
        steps = []
        for part in str(spec).split(","):
            kind, sep, value = part.strip().partition(":")
            kind = kind.strip().lower()
            if kind not in STEP_RANGES:
                raise AugmentError(
                    f"--augment {spec!r}: unknown step {part.strip()!r} (steps: "
                    f"{', '.join(k + ':VALUE' for k in STEP_RANGES)})"
                )
            lo, hi, same, what = STEP_RANGES[kind]
            try:
                v = float(value.strip()) if sep else math.nan
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                raise AugmentError(f"--augment {spec!r}: {kind} needs {what} after the colon, e.g. {kind}:{hi:g}")
            if not lo <= v <= hi:
                raise AugmentError(f"--augment {spec!r}: {kind} {v:g} is outside {lo:g}..{hi:g} ({what})")
            if same is not None and v == same:
                raise AugmentError(f"--augment {spec!r}: {kind}:{v:g} leaves the audio as it is")
            steps.append(AugmentStep(kind, v))
        return cls(tuple(steps))

    @property
    def name(self) -> str:
        return ",".join(s.name for s in self.steps)

    @property
    def speed(self) -> float:
        """How many times faster than captured the variant plays (the curves' time scale)."""
        return math.prod(s.value for s in self.steps if s.kind == "speed")

    def to_doc(self) -> list[list]:
        return [[s.kind, s.value] for s in self.steps]

    def apply(self, samples: np.ndarray, sample_rate: int, seed: str) -> np.ndarray:
        """(N,) float32 -> (N',) float32; seed: the text noise and rooms are drawn from (the
        variant's key)."""
        x = np.ascontiguousarray(samples, dtype=np.float32)
        rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:16], 16))
        for s in self.steps:
            x = _STEPS[s.kind](x, sample_rate, s.value, rng).astype(np.float32, copy=False)
        return x


def variant_key(item_key: str, variant: AudioVariant) -> str:
    """The key of `variant` of the item `item_key` (whose key already holds the audio and
    target bytes, the feature config and the library versions)."""
    doc = {"item": item_key, "augment": variant.to_doc(), "augment_code": AUGMENT_CODE_VERSION}
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()[:32]


def parse_variants(specs: list[str] | tuple[str, ...]) -> tuple[AudioVariant, ...]:
    """Every spec parsed, each variant once (in the order first given)."""
    out: dict[str, AudioVariant] = {}
    for spec in specs:
        v = AudioVariant.parse(spec)
        out.setdefault(v.name, v)
    return tuple(out.values())


def _speed(x: np.ndarray, sr: int, factor: float, rng: np.random.Generator) -> np.ndarray:
    import soxr

    # Read as if recorded at sr·factor, brought back to sr: N / factor samples.
    return soxr.resample(x, sr * factor, sr, quality="HQ")


def _pitch(x: np.ndarray, sr: int, semitones: float, rng: np.random.Generator) -> np.ndarray:
    import librosa

    return librosa.effects.pitch_shift(x, sr=sr, n_steps=semitones)


def _noise(x: np.ndarray, sr: int, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    if rms == 0.0:  # silence has no level to be below
        return x
    return x + rng.standard_normal(x.shape[0]).astype(np.float32) * np.float32(rms * 10.0 ** (-snr_db / 20.0))


def _reverb(x: np.ndarray, sr: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import fftconvolve

    n = max(2, int(round(rt60 * sr)))
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-math.log(1000.0) * t / rt60)  # -60 dB at rt60
    tail *= 1.0 / max(np.sqrt(np.sum(tail**2)), 1e-12)  # the tail's energy equals the direct path's
    response = tail
    response[0] = 1.0
    y = fftconvolve(x.astype(np.float64), response)[: x.shape[0]]
    rms_in = np.sqrt(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    rms_out = np.sqrt(np.mean(y**2)) if y.size else 0.0
    return y * (rms_in / rms_out) if rms_out > 0 else y  # the take's level kept


_STEPS = {"speed": _speed, "pitch": _pitch, "noise": _noise, "reverb": _reverb}
