"""Curves for speech without a capture, from a teacher model (bstrain fit --teacher CKPT).

A user has hours of the actor's recorded speech and minutes of it captured. A trained model
(the teacher: an offline model, typically, for a live student) animates every audio-only item
of the training split once; the student then trains on those curves beside the captured takes.
The teacher's curves are computed once per item and kept in the store under the teacher's
content checksum (teachers/<id>/<item key>.npy), so every later run with the same teacher
reads them and a different teacher computes its own.

A teacher whose features are the store's animates the stored features; one of other features
(an offline teacher for a live student) decodes the item's audio file again, checked against
the audio checksum the item was made from.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from blendsync.shared.store import FeatureStore, ItemAttrs
from blendsync.train.core.checkpoint import Checkpoint, CheckpointError, first_difference

log = logging.getLogger(__name__)

TEACHERS_DIR = "teachers"


class TeacherError(ValueError):
    """A teacher that cannot label these items (its path or the item named)."""


@dataclass(frozen=True)
class TeacherCurves:
    """targets: {item key: (frames, C) float32}; computed/reused: how many items of each."""

    teacher_id: str
    targets: dict[str, np.ndarray]
    computed: int
    reused: int


def teacher_id(path: str | Path) -> str:
    """The teacher's identity: the checksum of its weights, statistics and channels as written
    (the same file copied elsewhere is the same teacher)."""
    from blendsync.train.core.checkpoint import CHECKSUM, load_checkpoint

    ck = load_checkpoint(path)
    if CHECKSUM not in ck:
        raise TeacherError(f"{path}: written before checkpoints carried a checksum: it cannot key its curves")
    return str(ck[CHECKSUM])[:16]


def teacher_curves(
    store: FeatureStore, keys: list[str], path: str | Path, *, channels: list[str], fps: float
) -> TeacherCurves:
    """The teacher's curves for the items `keys` (audio-only items of the store), each as long
    as the item's frames, cached in the store."""
    path = Path(path)
    try:
        tid = teacher_id(path)
        ck = Checkpoint.load(path)
    except CheckpointError as e:
        raise TeacherError(f"--teacher {e}") from None
    _check_outputs(ck, path, channels, fps)
    # Building the teacher's model draws initial weights from torch's RNG: the student's run
    # must not depend on whether the curves were already in the store.
    with torch.random.fork_rng(devices=[]):
        out, computed = _curves_of(store, keys, ck, tid, len(channels))
    log.info(
        "teacher %s (%s): curves of %d audio-only item(s), %d computed, %d read from the store",
        path, tid, len(keys), computed, len(keys) - computed,
    )  # fmt: skip
    return TeacherCurves(teacher_id=tid, targets=out, computed=computed, reused=len(keys) - computed)


def _curves_of(store: FeatureStore, keys: list[str], ck: Checkpoint, tid: str, channels: int):
    from blendsync.train.inference.predict import Predictor

    pred = None
    out, computed = {}, 0
    for key in keys:
        rel = f"{TEACHERS_DIR}/{tid}/{key}.npy"
        attrs = store.item_attrs(key)
        cached = _read_cached(store, rel, attrs.frames, channels)
        if cached is not None:
            out[key] = cached
            continue
        if pred is None:
            pred = Predictor.from_checkpoint(ck)
        curves = _fit_length(_animate(store, pred, ck, attrs), attrs.frames)
        buf = io.BytesIO()
        np.save(buf, curves, allow_pickle=False)
        store.write_bytes(rel, buf.getvalue())
        out[key], computed = curves, computed + 1
    return out, computed


def _check_outputs(ck: Checkpoint, path: Path, channels: list[str], fps: float) -> None:
    if list(ck.channels) != list(channels):
        differ = first_difference(ck.channels, channels)
        where = f"first apart at {differ}: {ck.channels[differ]!r} / {channels[differ]!r}" if differ is not None else ""
        raise TeacherError(
            f"--teacher {path}: it predicts {len(ck.channels)} channels, the store's takes have {len(channels)}"
            f"{f' ({where})' if where else ''}: a teacher must predict the student's channels, in its order"
        )
    if ck.feature_config.fps != fps:
        raise TeacherError(f"--teacher {path}: its frames are {ck.feature_config.fps:g} a second, the store's {fps:g}")


def _read_cached(store: FeatureStore, rel: str, frames: int, channels: int) -> np.ndarray | None:
    data = store.read_bytes(rel)
    if data is None:
        return None
    try:
        a = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        a = None
    if a is None or a.shape != (frames, channels) or a.dtype != np.float32 or not np.isfinite(a).all():
        log.warning("%s: damaged teacher curves in the store: computed again", rel)
        return None
    return a


def _animate(store: FeatureStore, pred, ck: Checkpoint, attrs: ItemAttrs) -> np.ndarray:
    """The teacher's smoothed curves (T', C) for one item: from its stored features when they
    are the teacher's, else from its audio file."""
    if attrs.feature_config_hash == ck.feature_config_hash:
        item = store.read_item(attrs.key)
        return pred.smooth(pred.current(item.mel, item.emotion))
    source = attrs.doc.get("source") or {}
    audio = source.get("audio") or ""
    if not audio or not Path(audio).is_file():
        raise TeacherError(
            f"item {attrs.key} ({source.get('id') or 'no id'}): the teacher's features are not the store's, and "
            f"its audio file {audio or '(none recorded)'} is not there to featurize again"
        )
    digest = hashlib.sha256(Path(audio).read_bytes()).hexdigest()
    if attrs.audio_sha256 and digest != attrs.audio_sha256:
        raise TeacherError(f"item {attrs.key}: its audio file {audio} has changed since it was featurized")
    return pred.animate(audio)["curves"]


def _fit_length(curves: np.ndarray, frames: int) -> np.ndarray:
    """The teacher's frames on the item's grid: cut, or the last frame held (a frame at most
    apart where two feature configs round a file's end differently)."""
    curves = np.asarray(curves, np.float32)
    if curves.shape[0] >= frames:
        return np.ascontiguousarray(curves[:frames])
    pad = np.repeat(curves[-1:], frames - curves.shape[0], axis=0)
    return np.concatenate([curves, pad])
