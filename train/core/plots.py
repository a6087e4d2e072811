"""PNG plots of a run: loss curves, predicted vs target curves on a validation file, and the
learned per-channel stream weights. Matplotlib with the Agg backend (no display)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from blendsync.shared.files import written_atomically

PREFERRED = ("jawOpen", "mouthFunnel", "eyeBlinkLeft", "browInnerUp")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(history: list[dict], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    train = [h for h in history if h.get("kind") == "train"]
    val = [h for h in history if h.get("kind") == "val"]
    if train:
        ax.plot([h["step"] for h in train], [h["loss"] for h in train], label="train loss", lw=1)
    if val:
        ax.plot([h["step"] for h in val], [h["loss"] for h in val], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with written_atomically(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def curve_channels(channels: list[str], target: np.ndarray) -> list[str]:
    """The ARKit channels animators look at first, else the 4 most active channels."""
    chosen = [c for c in PREFERRED if c in channels]
    if chosen:
        return chosen
    order = np.argsort(-target.std(axis=0))[:4]
    return [channels[i] for i in order]


def plot_file_names(ids: list[str], suffix: str = ".png") -> dict[str, str]:
    """One file name per take id, all different: the id with every character other than
    letters, digits, '.', '-' and '_' as '_' (spk1/take1 -> spk1_take1.png), and -2, -3, ...
    where two ids still meet (spk1/take1 and spk1_take1), so that no plot overwrites another."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for fid in ids:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", str(fid)).strip(".") or "take"
        name, n = stem + suffix, 1
        while name.lower() in taken:  # case-insensitive file systems too
            n += 1
            name = f"{stem}-{n}{suffix}"
        taken.add(name.lower())
        out[fid] = name
    return out


def plot_curves(pred: np.ndarray, target: np.ndarray, channels: list[str], fps: float, title: str, path: Path) -> None:
    """pred, target (T, C) of one validation file. Each panel gives the channel's Pearson r and
    amplitude ratio (std of the prediction over std of the target) on this file, so a
    prediction that follows the target but hardly moves is plain to see."""
    from blendsync.train.core.metrics import motion_metrics

    plt = _plt()
    names = curve_channels(channels, target)
    mm = motion_metrics(pred, target)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.0 * len(names)), sharex=True, squeeze=False)
    t = np.arange(pred.shape[0]) / fps
    for ax, name in zip(axes[:, 0], names):
        i = channels.index(name)
        ax.plot(t, target[:, i], label="target", lw=1.2)
        ax.plot(t, pred[:, i], label="predicted", lw=1.2)
        ax.set_ylabel(name)
        ax.set_ylim(-0.02, 1.02)
        r, a = mm["r"][i], mm["amplitude"][i]
        ax.text(
            0.01,
            0.95,
            f"r {r:.2f}, amplitude ratio {a:.2f}" if np.isfinite(r) and np.isfinite(a) else "flat target or prediction",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            bbox=dict(facecolor="white", alpha=0.7, lw=0),
        )
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right")
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    with written_atomically(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_stream_weights(mel_w: np.ndarray, emo_w: np.ndarray, channels: list[str], path: Path) -> None:
    plt = _plt()
    x = np.arange(len(channels))
    fig, ax = plt.subplots(figsize=(max(8, 0.18 * len(channels)), 4.5))
    ax.bar(x - 0.2, mel_w, 0.4, label="mel_weights")
    ax.bar(x + 0.2, emo_w, 0.4, label="emotion_weights")
    ax.set_xticks(x)
    ax.set_xticklabels(channels, rotation=90, fontsize=6)
    ax.set_ylabel("weight")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    with written_atomically(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
