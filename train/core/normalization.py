"""Training-split statistics for standardising mel and emotion channels (and the target
means that initialise the output head), in one streaming pass over whole files, cached in
the run folder keyed by store, manifest, split and the items themselves."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from blendsync.shared.files import write_atomically

if TYPE_CHECKING:  # the store (zarr) only where statistics are computed: predict never needs it
    from blendsync.shared.store import FeatureStore
    from blendsync.train.core.data import FileRef

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Normalizer:
    """Per-channel standardisation from training-split statistics: (x - mean) / std; the
    targets' mean (the output head's starting point), spread (the loss's per-channel scale,
    loss.scale) and largest value (which channels never move, loss.still_max); the last two
    are None in checkpoints written before them."""

    mel_mean: np.ndarray
    mel_std: np.ndarray
    emotion_mean: np.ndarray
    emotion_std: np.ndarray
    target_mean: np.ndarray
    target_std: np.ndarray | None = None
    target_max: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {k: np.asarray(v, dtype=np.float64).tolist() for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(
            **{
                k: np.asarray(d[k], dtype=np.float32)
                for k in (
                    "mel_mean",
                    "mel_std",
                    "emotion_mean",
                    "emotion_std",
                    "target_mean",
                    "target_std",
                    "target_max",
                )
                if k in d
            }
        )

    def is_finite(self) -> bool:
        return all(np.isfinite(v).all() for v in self.__dict__.values() if v is not None)


def still_channels(norm: Normalizer, channels: list[str], still_max: float) -> list[str]:
    """The channels no training frame lifts above still_max (none when still_max is 0 or the
    statistics predate target_max)."""
    if not still_max or norm.target_max is None:
        return []
    return [c for c, top in zip(channels, norm.target_max) if top <= still_max]


def still_mask(channels: list[str], still: list[str] | tuple) -> torch.Tensor:
    """(C,) bool, True for the still channels among channels."""
    names = set(still)
    return torch.tensor([c in names for c in channels], dtype=torch.bool)


# Channels with a smaller spread (constant in the training data) are left unscaled.
MIN_STD = 1e-6


def compute_normalizer(store: FeatureStore, files: list[FileRef]) -> Normalizer:
    from blendsync.shared.store import ItemError
    from blendsync.train.core.data import check_finite, with_row

    sums: dict[str, np.ndarray] = {}
    sq: dict[str, np.ndarray] = {}
    top = None
    n = 0
    # read_items checks every item; a damaged one is named with its manifest row.
    items = store.read_items([f.key for f in files])
    for f in files:
        try:
            item = check_finite(next(items))
        except ItemError as e:  # read_items yields in order: this is f's item
            raise with_row(e, f) from None
        arrays = {"mel": item.mel, "emotion": item.emotion, "target": item.targets}
        for name, a in arrays.items():
            a = a[f.start : f.start + f.frames].astype(np.float64)
            sums[name] = sums.get(name, 0) + a.sum(axis=0)
            sq[name] = sq.get(name, 0) + (a * a).sum(axis=0)
            if name == "target" and len(a):
                top = a.max(axis=0) if top is None else np.maximum(top, a.max(axis=0))
        n += item.mel[f.start : f.start + f.frames].shape[0]

    def mean_std(name):
        mean = sums[name] / n
        std = np.sqrt(np.maximum(sq[name] / n - mean**2, 0.0))
        return mean.astype(np.float32), np.where(std < MIN_STD, 1.0, std).astype(np.float32)

    mm, ms = mean_std("mel")
    em, es = mean_std("emotion")
    tm = (sums["target"] / n).astype(np.float32)
    ts = np.sqrt(np.maximum(sq["target"] / n - (sums["target"] / n) ** 2, 0.0)).astype(np.float32)
    return Normalizer(
        mel_mean=mm,
        mel_std=ms,
        emotion_mean=em,
        emotion_std=es,
        target_mean=tm,
        target_std=ts,
        target_max=np.asarray(top, np.float32),
    )


def stats_cache_key(store: FeatureStore, manifest: str, split: str, files: list[FileRef]) -> str:
    doc = {
        "version": 3,
        "store": store.location,
        "manifest": manifest,
        "split": split,
        "keys": [f.key for f in files],
        "ranges": [[f.start, f.frames] for f in files],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def load_or_compute(run_dir: Path, store: FeatureStore, manifest: str, split: str, files: list[FileRef]) -> Normalizer:
    """Statistics from run_dir/norm_stats-<key>.json, else one pass and write them there."""
    key = stats_cache_key(store, manifest, split, files)
    path = run_dir / f"norm_stats-{key}.json"
    if path.is_file():
        try:
            cached = Normalizer.from_dict(json.loads(path.read_text()))
            if cached.is_finite():
                return cached
        except (ValueError, KeyError, TypeError):
            pass
        log.warning("%s: cached statistics are unreadable or not finite: computing them again", path)
    log.info("computing normalisation statistics over %d %s files", len(files), split)
    norm = compute_normalizer(store, files)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(norm.to_dict()))
    return norm
