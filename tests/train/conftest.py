from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blendsync.featurize.writer import write_item
from blendsync.shared.featurize_file import FeaturizedFile
from blendsync.shared.store import FeatureStore

REPO = Path(__file__).resolve().parents[2]


def make_random_store(root: Path, lengths: list[int], channels: int = 5, seed: int = 0,
                      learnable: bool = False) -> tuple[FeatureStore, list[str]]:
    """A real Zarr store whose items hold random arrays of the given frame counts (T, 80/88/C).
    learnable: targets are a function of the mean over mel bins at the same frame."""
    rng = np.random.default_rng(seed)
    fs = FeatureStore(root)
    fs.init()
    keys = []
    names = [f"c{i}" for i in range(channels)]
    for i, T in enumerate(lengths):
        mel = rng.normal(size=(T, 80)).astype(np.float32)
        if learnable:
            # Speech-like: a slowly varying loudness shared by all bins, plus noise.
            loud = np.convolve(rng.normal(size=T + 8), np.hanning(9) / np.hanning(9).sum() * 3, "valid")
            mel = (mel * 0.3 + loud[:, None]).astype(np.float32)
        # Like loudness driving jawOpen: every channel follows the mean over mel bins.
        z = mel.mean(axis=1)
        gains = np.linspace(1.0, 3.0, channels)
        targets = (1 / (1 + np.exp(-gains[None, :] * z[:, None])) if learnable
                   else rng.uniform(size=(T, channels))).astype(np.float32)
        ff = FeaturizedFile(
            mel,
            rng.normal(size=(T, 88)).astype(np.float32),
            targets,
            {"frames": T, "audio_duration_s": T / 30},
        )
        key = f"k{i:03d}"
        attrs = {
            "feature_config": {"mel": {"n_mels": 80}, "fps": 30.0},
            "feature_config_hash": "test",
            "channels": names,
            "channel_set": {"name": "test", "channels": names, "mouth": names[:2], "expression": names[2:3]},
        }
        write_item(fs, key, ff, attrs)
        keys.append(key)
    return fs, keys
