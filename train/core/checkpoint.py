"""Checkpoints: one typed record of what a run saves (Checkpoint, with TrainingState for what
only --resume needs), and its file format.

On disk a checkpoint is a plain dict of tensors, numbers and strings (Checkpoint.to_state /
from_state; the key constants below), loaded with weights_only=True so loading never runs
pickled code, written to a temporary file and renamed into place. Every reader goes through
load_checkpoint, which checks the dict before anything uses it (checkpoint_problem), so a
malformed file is one message naming it instead of a KeyError or size mismatch later.

A checkpoint is untrusted input: it names its channels and never a file to read (an embedded
feature config with a channels_file is refused), its configs must hash to the hashes stored
beside them, its statistics must be finite with standard deviations above 0, and its weights
and statistics must match the checksum written at save time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from blendsync.shared.config import FeatureConfig
from blendsync.train.core.build import build_model
from blendsync.train.core.checkpoint_header import FEATURE_CONFIG, FEATURE_CONFIG_HASH
from blendsync.train.core.config import TrainConfig
from blendsync.train.core.model import BlendshapeModel
from blendsync.train.core.normalization import Normalizer, still_mask

if TYPE_CHECKING:
    from blendsync.train.core.data import TrainingData

log = logging.getLogger(__name__)

FORMAT = "blendsync-checkpoint-1"

# Keys of the on-disk dict (the feature config's with the reader that needs no torch).
MODEL, CONFIG = "model", "config_json"
NORMALIZER, CHANNELS, MOUTH, EXPRESSION = "normalizer", "channels", "mouth", "expression"
LIBRARY_VERSIONS, BEST_VAL, SINCE_BEST = "library_versions_json", "best_val", "validations_since_best"
CALIBRATION_CHECKSUM, LABELS_CHECKSUM = "calibration_checksum", "labels_checksum"
OPTIMIZER, SCHEDULER, RNG_CPU, RNG_CUDA = "optimizer", "scheduler", "rng_cpu_all", "rng_cuda_all"
PREV, WORLD, STEP, EPOCH, STEP_IN_EPOCH = "prev_all", "world_size", "step", "epoch", "step_in_epoch"
TRAINED_MODEL, AVERAGE = "trained_model", "weight_average"
STILL = "still_channels"
# Written at save time: the train config's hash, and a SHA-256 of the weights and statistics
# (content_checksum), so that a damaged or edited file is refused rather than predicting wrong
# curves. Checkpoints written before them load with a warning.
CONFIG_HASH, CHECKSUM = "config_hash", "content_sha256"

# What every use of a checkpoint reads (predict, evaluate, export, resume), with its type.
REQUIRED = {MODEL: dict, CONFIG: str, FEATURE_CONFIG: str, FEATURE_CONFIG_HASH: str, CHANNELS: list, NORMALIZER: dict}
# What --resume reads on top.
RESUME_STATE = {
    OPTIMIZER: dict,
    SCHEDULER: dict,
    RNG_CPU: torch.Tensor,
    PREV: torch.Tensor,
    STEP: int,
    EPOCH: int,
    STEP_IN_EPOCH: int,
}
NORMALIZER_KEYS = ("mel_mean", "mel_std", "emotion_mean", "emotion_std", "target_mean")
# Statistics the features are divided by (> 0); target_std is 0 for a channel that never moves.
DIVIDING_STATISTICS = ("mel_std", "emotion_std")


class CheckpointError(ValueError):
    pass


@dataclass(kw_only=True)
class TrainingState:
    """Where a run stands and what continues it exactly: optimiser and schedule state, every
    rank's RNG state and carried previous predictions (rng_cpu_all (world, n) uint8,
    prev_all (world, B, C) float32), and the stream position (epoch, batch in the epoch)."""

    optimizer: dict
    scheduler: dict
    rng_cpu_all: torch.Tensor
    rng_cuda_all: torch.Tensor | None
    prev_all: torch.Tensor
    world_size: int
    step: int
    epoch: int
    step_in_epoch: int
    # With optim.ema_decay: the model_state is the average, these the trained weights and the
    # average's own state (train.loop.weight_average).
    trained_model: dict | None = None
    average: dict | None = None

    def to_state(self) -> dict:
        return {
            OPTIMIZER: self.optimizer,
            SCHEDULER: self.scheduler,
            RNG_CPU: self.rng_cpu_all,
            RNG_CUDA: self.rng_cuda_all,
            PREV: self.prev_all,
            WORLD: self.world_size,
            STEP: self.step,
            EPOCH: self.epoch,
            STEP_IN_EPOCH: self.step_in_epoch,
            **({TRAINED_MODEL: self.trained_model, AVERAGE: self.average} if self.average is not None else {}),
        }

    @classmethod
    def from_state(cls, d: dict) -> TrainingState:
        return cls(
            optimizer=d[OPTIMIZER],
            scheduler=d[SCHEDULER],
            rng_cpu_all=d[RNG_CPU],
            rng_cuda_all=d.get(RNG_CUDA),
            prev_all=d[PREV],
            world_size=int(d.get(WORLD, 1)),
            step=int(d[STEP]),
            epoch=int(d[EPOCH]),
            step_in_epoch=int(d[STEP_IN_EPOCH]),
            trained_model=d.get(TRAINED_MODEL),
            average=d.get(AVERAGE),
        )


@dataclass(kw_only=True)
class Checkpoint:
    """A trained model and everything needed to use it on new audio (configs, statistics,
    channels), plus the validation it was kept by and, for --resume, its TrainingState."""

    model_state: dict[str, torch.Tensor]
    config: TrainConfig
    feature_config: FeatureConfig
    feature_config_hash: str
    normalizer: Normalizer
    channels: list[str]
    mouth: list[str]
    expression: list[str]
    library_versions: dict
    # {"metric", "value", "step", "calibrated_gain"} of the best validation so far (None: none ran)
    best_val: dict | None = None
    validations_since_best: int = 0
    training: TrainingState | None = None
    # Channels still in the training split (loss.still_max): out of the loss, predicted 0.
    still: list[str] = dataclasses.field(default_factory=list)

    @property
    def window(self) -> int:
        return self.config.stream.window

    @property
    def lookahead(self) -> int:
        return self.config.stream.lookahead

    @property
    def frames_per_window(self) -> int:
        return self.config.stream.frames_per_window

    @property
    def fps(self) -> float:
        return self.feature_config.fps

    @property
    def n_mels(self) -> int:
        return self.feature_config.n_mels

    @property
    def calibrated_gain(self) -> float | None:
        return (self.best_val or {}).get("calibrated_gain")

    def build_model(self, device: str | torch.device = "cpu") -> BlendshapeModel:
        """The model its config describes with its weights, in eval mode on device."""
        model = build_model(self.config, self.feature_config, len(self.channels))
        model.load_state_dict(self.model_state)
        model.set_still(self.still_mask)
        return model.to(device).eval()

    @property
    def still_mask(self) -> torch.Tensor:
        """(C,) bool: True for the still channels."""
        return still_mask(self.channels, self.still)

    def check_compatible(self, ds: TrainingData) -> None:
        """Refuse features or channels the model was not trained on; warn on library-version
        drift (the same config computed by other library versions)."""
        from blendsync.train.core.data import DataError

        if self.channels != list(ds.channels):  # before the feature hash, which also covers them: the clearer word
            only_store = [c for c in ds.channels if c not in set(self.channels)]
            only_ckpt = [c for c in self.channels if c not in set(ds.channels)]
            detail = (
                f"store only: {only_store[:4]}, checkpoint only: {only_ckpt[:4]}"
                if only_store or only_ckpt
                else "same names in another order"
            )
            raise DataError(
                f"the store's channel set ({len(ds.channels)} channels) differs from the checkpoint's "
                f"({len(self.channels)} channels): {detail}"
            )
        self.check_features(ds)

    def check_features(self, ds: TrainingData, *, channels_apart: bool = False) -> None:
        """Refuse features the model was not trained on; warn on library-version drift.
        channels_apart (fine-tuning, which maps channels by name): compare what the model
        reads only (FeatureConfig.input_hash), so another rig's store passes."""
        from blendsync.train.core.data import DataError

        if channels_apart:
            mine, theirs = self.feature_config.input_hash, ds.feature_config.input_hash
        else:
            mine, theirs = self.feature_config_hash, ds.feature_config_hash
        if mine != theirs:
            raise DataError(
                f"the store's feature config {theirs} differs from the checkpoint's "
                f"{mine}: featurize with the checkpoint's config"
                + (" (its target channels may differ)" if channels_apart else "")
            )
        if self.library_versions and self.library_versions != ds.library_versions:
            log.warning(
                "library versions differ from the checkpoint's: store %s, checkpoint %s",
                ds.library_versions,
                self.library_versions,
            )

    def to_state(self) -> dict:
        state = {
            "format": FORMAT,
            MODEL: self.model_state,
            CONFIG: self.config.to_json(),
            FEATURE_CONFIG: json.dumps(self.feature_config.to_dict(), sort_keys=True),
            FEATURE_CONFIG_HASH: self.feature_config_hash,
            NORMALIZER: self.normalizer.to_dict(),
            CHANNELS: list(self.channels),
            MOUTH: list(self.mouth),
            EXPRESSION: list(self.expression),
            LIBRARY_VERSIONS: json.dumps(self.library_versions, sort_keys=True),
            BEST_VAL: self.best_val,
            SINCE_BEST: self.validations_since_best,
            STILL: list(self.still),
        }
        if self.training is not None:
            state.update(self.training.to_state())
        return state

    @classmethod
    def from_state(cls, d: dict) -> Checkpoint:
        """From a dict checkpoint_problem has passed."""
        return cls(
            model_state=d[MODEL],
            config=TrainConfig.from_checkpoint_json(d[CONFIG]),
            feature_config=FeatureConfig.from_embedded(json.loads(d[FEATURE_CONFIG])),
            feature_config_hash=d[FEATURE_CONFIG_HASH],
            normalizer=Normalizer.from_dict(d[NORMALIZER]),
            channels=list(d[CHANNELS]),
            mouth=list(d.get(MOUTH, [])),
            expression=list(d.get(EXPRESSION, [])),
            library_versions=json.loads(d.get(LIBRARY_VERSIONS, "{}")),
            best_val=d.get(BEST_VAL),
            validations_since_best=int(d.get(SINCE_BEST, 0)),
            training=TrainingState.from_state(d) if resume_problem(d) is None else None,
            still=list(d.get(STILL, [])),
        )

    @classmethod
    def load(cls, path: str | Path, map_location="cpu") -> Checkpoint:
        return cls.from_state(load_checkpoint(path, map_location))

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.to_state())


def save_checkpoint(path: Path, state: dict) -> None:
    """Write state with its config hash and content checksum: serialised in memory, then
    written to a temporary file renamed into place (shared.files.write_atomically), so that a
    full disk or a read-only folder is an OSError naming the path and leaves nothing behind."""
    from blendsync.shared.files import write_atomically

    state = {"format": FORMAT, **state}
    state[CONFIG_HASH] = TrainConfig.from_checkpoint_json(state[CONFIG]).hash
    state[CHECKSUM] = content_checksum(state)
    state[CALIBRATION_CHECKSUM] = calibration_checksum(state)
    state[LABELS_CHECKSUM] = labels_checksum(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    write_atomically(path, buf.getbuffer())


def content_checksum(ckpt: dict) -> str:
    """SHA-256 of what turns audio into curves: every weight (name, dtype, shape, bytes, in
    name order), the statistics and the channel names."""
    h = hashlib.sha256()
    for name in sorted(ckpt[MODEL]):
        t = ckpt[MODEL][name]
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}:{type(t).__name__}".encode())
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(ckpt[NORMALIZER], sort_keys=True).encode())
    h.update(json.dumps(list(ckpt[CHANNELS])).encode())
    return h.hexdigest()


def calibration_checksum(ckpt: dict) -> str:
    """SHA-256 of the calibrated output gain (predict --gain calibrated applies it to every
    frame): a checksum of its own, so that checkpoints written before it still load."""
    best = ckpt.get(BEST_VAL)
    gain = best.get("calibrated_gain") if isinstance(best, dict) else None
    return hashlib.sha256(json.dumps(gain).encode()).hexdigest()


def labels_checksum(ckpt: dict) -> str:
    """SHA-256 of the channel lists beside the weights: the still channels (predicted as 0) and
    the mouth and expression groups (their loss weights). A checksum of its own, so that
    checkpoints written before it still load; a renamed key counts as a missing list."""
    lists = [ckpt.get(k) for k in (STILL, MOUTH, EXPRESSION)]
    return hashlib.sha256(json.dumps(lists).encode()).hexdigest()


def _calibration_problem(ckpt: dict) -> str | None:
    best = ckpt.get(BEST_VAL)
    if best is not None and not isinstance(best, dict):
        return f"{BEST_VAL} is {type(best).__name__}, not a record"
    gain = (best or {}).get("calibrated_gain")
    if gain is not None and (isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain)
                             or gain < 0):  # fmt: skip
        return f"its calibrated gain is {gain!r}, not a finite number >= 0"
    if CALIBRATION_CHECKSUM in ckpt and ckpt[CALIBRATION_CHECKSUM] != calibration_checksum(ckpt):
        return "its calibrated gain does not match the checksum written when it was saved (damaged or edited)"
    if LABELS_CHECKSUM in ckpt and ckpt[LABELS_CHECKSUM] != labels_checksum(ckpt):
        return (
            "its still, mouth or expression channel lists do not match the checksum written when it was saved "
            "(damaged or edited)"
        )
    return None


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The checked on-disk dict (Checkpoint.load gives the record)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, wrong file, pickled code refused
        reason = (str(e).strip().splitlines() or [""])[0][:200]  # torch's first line, not its advice
        raise CheckpointError(f"{p}: not a readable blendsync checkpoint ({type(e).__name__}: {reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{p}: not a blendsync checkpoint (format {found})")
    problem = checkpoint_problem(ckpt)
    if problem:
        raise CheckpointError(f"{p}: malformed checkpoint: {problem}")
    if CHECKSUM not in ckpt:
        log.warning("%s: written before checkpoints carried a checksum: its weights cannot be checked", p)
    if CONFIG_HASH not in ckpt:
        log.warning("%s: written before checkpoints carried their config's hash: its config cannot be checked", p)
    return ckpt


def first_difference(a, b) -> int | None:
    """The first index where two channel lists name different channels (None: none within the
    shorter)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def checkpoint_problem(ckpt: dict) -> str | None:
    """What is wrong with a loaded checkpoint dict, or None: missing or mistyped keys, an
    embedded config that does not parse or validate, statistics of the wrong length, model
    weights whose names or shapes are not those of the model its config describes."""
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        return f"missing {', '.join(missing)}"
    wrong = [f"{k} is {type(ckpt[k]).__name__}" for k, t in REQUIRED.items() if not isinstance(ckpt[k], t)]
    if wrong:
        return "; ".join(wrong)
    try:
        cfg = TrainConfig.from_checkpoint_json(ckpt[CONFIG])
    except (ValueError, TypeError, KeyError) as e:
        return f"its train config ({CONFIG}) is invalid: {e}"
    stored = ckpt.get(CONFIG_HASH)
    if stored is not None and stored != cfg.hash:
        return f"its train config hashes to {cfg.hash}, not to its stored {CONFIG_HASH} {stored} (edited or damaged)"
    try:
        fc = FeatureConfig.from_embedded(json.loads(ckpt[FEATURE_CONFIG]))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        return f"its feature config ({FEATURE_CONFIG}) is invalid: {e}"
    if fc.hash != ckpt[FEATURE_CONFIG_HASH]:
        return (
            f"its feature config hashes to {fc.hash}, not to its stored {FEATURE_CONFIG_HASH} "
            f"{ckpt[FEATURE_CONFIG_HASH]} (edited or damaged)"
        )
    channels = ckpt[CHANNELS]
    if not channels or not all(isinstance(c, str) for c in channels):
        return "channels must be a non-empty list of names"
    want = list(fc.channels.channels)
    if len(channels) != len(want):
        return f"it has {len(channels)} channels, its feature config ({fc.channels.name}) {len(want)}"
    i = first_difference(channels, want)
    if i is not None:
        n = sum(a != b for a, b in zip(channels, want))
        return (
            f"its channel {i} is {channels[i]!r} where its feature config ({fc.channels.name}) has {want[i]!r}"
            f"{f' ({n} channels differ)' if n > 1 else ''} (edited or damaged)"
        )
    still = ckpt.get(STILL, [])
    if not isinstance(still, list):
        return f"{STILL} is {type(still).__name__}, not a list of channel names"
    unknown = [c for c in still if c not in set(channels)]
    if unknown:
        return f"{STILL} names {len(unknown)} channels it does not have ({', '.join(map(str, unknown[:3]))})"
    problem = _normalizer_problem(ckpt[NORMALIZER], fc, len(channels))
    if problem is None:
        # Shapes only, on the meta device: a config edited to huge sizes (hashes recomputed) is
        # refused by its weights' shapes without allocating what it describes.
        with torch.device("meta"):
            problem = _weights_problem(ckpt[MODEL], build_model(cfg, fc, len(channels)))
    if problem is None and CHECKSUM in ckpt and ckpt[CHECKSUM] != content_checksum(ckpt):
        return "its weights or statistics do not match the checksum written when it was saved (damaged or edited)"
    return problem or _calibration_problem(ckpt)


def _normalizer_problem(norm: dict, fc: FeatureConfig, channels: int) -> str | None:
    want = {
        "mel_mean": fc.n_mels,
        "mel_std": fc.n_mels,
        "emotion_mean": fc.n_emotion,
        "emotion_std": fc.n_emotion,
        "target_mean": channels,
        "target_std": channels,
        "target_max": channels,
    }
    for k, n_want in want.items():
        if k not in norm:
            if k in NORMALIZER_KEYS:
                return f"normalizer has no {k}"
            continue  # target_std, target_max: not in older checkpoints
        values = norm[k]
        if not isinstance(values, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            return f"normalizer {k} is not a list of numbers"
        if len(values) != n_want:
            return f"normalizer {k} has {len(values)} values, expected {n_want}"
        # Checked as they are used, in float32: 1e308 is finite here and inf there, 1e-308 is 0.
        with np.errstate(over="ignore", under="ignore"):
            values = np.asarray(values, np.float64).astype(np.float32).tolist()
        if k in DIVIDING_STATISTICS:
            rule, sound = "finite and above 0", lambda v: math.isfinite(v) and v > 0
        elif k.endswith("_std"):
            rule, sound = "finite and not negative", lambda v: math.isfinite(v) and v >= 0
        else:
            rule, sound = "finite", math.isfinite
        bad = [i for i, v in enumerate(values) if not sound(v)]
        if bad:
            return (
                f"normalizer {k} has {len(bad)} values that are not {rule} (first at index {bad[0]}: {values[bad[0]]})"
            )
    return None


def _weights_problem(got: dict, model: torch.nn.Module) -> str | None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    lost = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if lost or extra:
        return (
            f"model weights do not match its config: {len(lost)} missing ({', '.join(lost[:3])}), "
            f"{len(extra)} unexpected ({', '.join(extra[:3])})"
        )
    shapes = [
        f"{k} {tuple(got[k].shape) if isinstance(got[k], torch.Tensor) else type(got[k]).__name__} "
        f"(expected {expected[k]})"
        for k in expected
        if not isinstance(got[k], torch.Tensor) or tuple(got[k].shape) != expected[k]
    ]
    if shapes:
        return f"model weights of the wrong shape: {'; '.join(shapes[:3])}"
    # A NaN or infinite weight makes every curve NaN: refused here, not found in the outputs.
    bad = [k for k in expected if got[k].is_floating_point() and not bool(torch.isfinite(got[k]).all())]
    return f"model weights hold NaN or infinite values: {', '.join(bad[:3])}" if bad else None


def resume_problem(ckpt: dict) -> str | None:
    """What a checkpoint lacks to continue training."""
    missing = [k for k in RESUME_STATE if k not in ckpt]
    if missing:
        return f"cannot resume from it: missing {', '.join(missing)}"
    wrong = [f"{k} is {type(ckpt[k]).__name__}" for k, t in RESUME_STATE.items() if not isinstance(ckpt[k], t)]
    return f"cannot resume from it: {'; '.join(wrong)}" if wrong else None
