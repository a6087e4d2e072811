"""bstrain pretrain: self-supervised pretraining of both encoders on every item of a manifest,
captured takes and speech without curves alike, for bstrain fit --init-from.

Masked-frame prediction: spans of a window's frames are hidden from both streams at once
(set to the training mean, 0 once standardised), and each stream's encoder, with a linear
head, predicts the standardised frames it did not see: mel (M bins) from the mel encoding,
eGeMAPS (E = 88) from the emotion encoding. The loss is the mean squared error over the
hidden real frames. An encoder that fills a hidden syllable from its context has learnt what
speech sounds like around it, from audio that has no curves.

Every step's windows and masks are drawn from a generator seeded by (seed, step), so the run
is a function of its config and the step it stands at: a resumed run (pretrain_state.pt:
weights, heads, optimiser, schedule, torch's RNG) trains exactly what an uninterrupted one
would. checkpoints/last.pt and best.pt (the lowest masked loss on the validation split, or
last when there is none) are ordinary checkpoints of the whole model (its curve head as
built, at the captured takes' means) that fit --init-from starts from.

Shapes: windows mel (B, L, M), emotion (B, L, E), real (B, L) True = a frame of the item,
hidden (B, L) True = masked from the encoders.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from blendsync.shared.config import canonical_json
from blendsync.shared.files import write_atomically
from blendsync.shared.provenance import library_versions
from blendsync.shared.store import FeatureStore
from blendsync.train.core.build import build_model
from blendsync.train.core.checkpoint import Checkpoint
from blendsync.train.core.config import TrainConfig
from blendsync.train.core.data import DataError, FileRef, TrainingData, load_training_data, read_checked
from blendsync.train.core.normalization import Normalizer, compute_normalizer

log = logging.getLogger(__name__)

STATE_FILE = "pretrain_state.pt"


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """What pretraining does beyond the train config (whose model, window, batch streams,
    seed and optimiser settings it uses; optim.max_steps is ignored: steps is the length)."""

    steps: int = 200
    mask_fraction: float = 0.15  # share of a window's frames hidden
    span_frames: int = 10  # frames per hidden span
    checkpoint_every: int = 20  # steps between saves (and validations)

    def __post_init__(self) -> None:
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise ValueError(f"pretrain steps must be a whole number >= 1, got {self.steps!r}")
        if not 0.0 < self.mask_fraction < 1.0:
            raise ValueError(f"mask fraction must be in (0, 1), got {self.mask_fraction!r}")
        if not (isinstance(self.span_frames, int) and self.span_frames >= 1):
            raise ValueError(f"span frames must be a whole number >= 1, got {self.span_frames!r}")
        if not (isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 1):
            raise ValueError(f"checkpoint every must be a whole number >= 1, got {self.checkpoint_every!r}")

    def to_json(self) -> str:
        return canonical_json(dataclasses.asdict(self))


@dataclass(kw_only=True)
class PretrainResult:
    run_dir: Path
    step: int
    best_loss: float | None
    items: int
    frames: int
    interrupted: bool = False


class FrameHeads(nn.Module):
    """The stand-in outputs of pretraining: each stream's encoding (B, L, d) -> its frames."""

    def __init__(self, d: int, n_mels: int, n_emotion: int):
        super().__init__()
        self.mel = nn.Linear(d, n_mels)
        self.emotion = nn.Linear(d, n_emotion)


class FramePool:
    """Every item's standardised frames in memory, and seeded windows cut from them."""

    def __init__(self, store: FeatureStore, files: list[FileRef], norm: Normalizer):
        self.mel, self.emotion = [], []
        for f in files:
            item = read_checked(store, f)
            self.mel.append(((item.mel - norm.mel_mean) / norm.mel_std).astype(np.float32))
            self.emotion.append(((item.emotion - norm.emotion_mean) / norm.emotion_std).astype(np.float32))
        self.frames = np.array([len(m) for m in self.mel], dtype=np.int64)

    def windows(self, rng: np.random.Generator, B: int, L: int) -> dict[str, np.ndarray]:
        """B windows of L frames: items drawn by their length, starts uniform; an item
        shorter than L fills its window's start, the rest padding."""
        M, E = self.mel[0].shape[1], self.emotion[0].shape[1]
        out = {"mel": np.zeros((B, L, M), np.float32), "emotion": np.zeros((B, L, E), np.float32),
               "real": np.zeros((B, L), bool)}  # fmt: skip
        picks = rng.choice(len(self.mel), size=B, p=self.frames / self.frames.sum())
        for b, i in enumerate(picks):
            n = int(self.frames[i])
            a = int(rng.integers(0, max(1, n - L + 1)))
            k = min(L, n - a)
            out["mel"][b, :k] = self.mel[i][a : a + k]
            out["emotion"][b, :k] = self.emotion[i][a : a + k]
            out["real"][b, :k] = True
        return out


def hidden_spans(rng: np.random.Generator, real: np.ndarray, fraction: float, span: int) -> np.ndarray:
    """(B, L) bool: per window, ceil(fraction · L / span) spans of `span` frames at uniform
    starts, at least one real frame each window (a window's first frame when its spans all
    fell on padding)."""
    B, L = real.shape
    count = max(1, math.ceil(fraction * L / span))
    starts = rng.integers(0, max(1, L - span + 1), size=(B, count))
    pos = np.arange(L)
    hidden = ((pos[None, None, :] >= starts[..., None]) & (pos[None, None, :] < starts[..., None] + span)).any(1)
    hidden &= real
    empty = ~hidden.any(axis=1)
    hidden[empty, 0] = True
    return hidden


def masked_loss(model, heads: FrameHeads, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mean squared error of both streams' predictions of their hidden real frames."""
    hidden, real = batch["hidden"], batch["real"]
    pad = None if bool(real.all()) else ~real
    mel = batch["mel"].masked_fill(hidden[..., None], 0.0)
    emotion = batch["emotion"].masked_fill(hidden[..., None], 0.0)
    mel_pred = heads.mel(model.mel_stream(mel, pad))  # (B, L, M)
    emo_pred = heads.emotion(model.emotion_stream(emotion, pad))  # (B, L, E)
    w = hidden.to(mel_pred.dtype)[..., None]
    n = w.sum()
    mel_err = ((mel_pred - batch["mel"]) ** 2 * w).sum() / (n * mel_pred.shape[-1])
    emo_err = ((emo_pred - batch["emotion"]) ** 2 * w).sum() / (n * emo_pred.shape[-1])
    return mel_err + emo_err


def _tensors(arrays: dict[str, np.ndarray], dev: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(dev) for k, v in arrays.items()}


def pretrain(
    store: str | Path,
    *,
    cfg: TrainConfig,
    out: str | Path,
    settings: PretrainConfig = PretrainConfig(),
    manifest: str | None = None,
    resume: bool = False,
    stop_after_steps: int | None = None,
    on_step: Callable[[dict], None] | None = None,
    device: str = "auto",
) -> PretrainResult:
    """Pretrain cfg's model's encoders on every item of the manifest's training split (with
    and without curves); validation on its val split. resume: continue the run in `out`
    (its own config and settings). DataError for data it cannot use."""
    run = _setup(FeatureStore(store), cfg, Path(out), settings, manifest, resume, device)
    cfg, settings = run.cfg, run.settings
    run.model.train()
    run.heads.train()
    c0 = time.process_time()
    while run.step < settings.steps:
        rng = np.random.default_rng([cfg.seed, run.step])
        batch = run.pool.windows(rng, cfg.stream.batch_streams, cfg.stream.window)
        batch["hidden"] = hidden_spans(rng, batch["real"], settings.mask_fraction, settings.span_frames)
        loss = masked_loss(run.model, run.heads, _tensors(batch, run.dev))
        if not torch.isfinite(loss):
            raise ValueError(f"pretraining loss is {loss.item()} at step {run.step}: lower optim.lr")
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.params, cfg.optim.grad_clip)
        run.opt.step()
        run.sched.step()
        run.step += 1
        rec = {"step": run.step, "loss": float(loss.detach()), "lr": run.sched.get_last_lr()[0],
               "cpu_s": time.process_time() - c0}  # fmt: skip
        if run.step % settings.checkpoint_every == 0 or run.step == settings.steps:
            run.validate_and_save(rec)
        if on_step:
            on_step(rec)
        if stop_after_steps is not None and stop_after_steps <= run.step < settings.steps:
            return run.result(interrupted=True)
    return run.result()


def _setup(
    store: FeatureStore, cfg: TrainConfig, out: Path, settings: PretrainConfig, manifest, resume: bool, device: str
) -> _Run:
    """The run: a fresh one (its folder and config.json written), or the one in `out` as its
    last save left it."""
    from blendsync.train.loop.trainer import lr_lambda, resolve_device

    state = _load_state(out) if resume else None
    if state is not None:
        cfg, settings = TrainConfig.from_json(state["config"]), PretrainConfig(**state["settings"])
        manifest = state["manifest"]
    elif (out / STATE_FILE).exists():
        raise DataError(f"{out} holds a pretraining run: --resume it, or give another --out")
    dev = resolve_device(device)
    ds = load_training_data(store, manifest)
    labelled = ds.files("train")
    train_files = labelled + ds.unlabelled.get("train", [])
    norm = compute_normalizer(store, labelled)
    val_files = ds.splits.get("val", []) + ds.unlabelled.get("val", [])
    pool, val_pool = FramePool(store, train_files, norm), (FramePool(store, val_files, norm) if val_files else None)
    log.info("pretraining on %d items (%d frames; %d without curves), validating on %d", len(train_files),
             int(pool.frames.sum()), len(train_files) - len(labelled), len(val_files))  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, ds.feature_config, len(ds.channels))
    model.decoder.init_bias(torch.from_numpy(norm.target_mean))
    heads = FrameHeads(cfg.model.d_model, ds.feature_config.n_mels, ds.feature_config.n_emotion)
    model, heads = model.to(dev), heads.to(dev)
    params = [*model.mel_stream.parameters(), *model.emotion_stream.parameters(), *heads.parameters()]
    o = cfg.optim
    opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o.warmup_steps, settings.steps, o.min_lr_ratio))
    run = _Run(out=out, cfg=cfg, settings=settings, ds=ds, norm=norm, model=model, heads=heads, opt=opt,
               sched=sched, pool=pool, val_pool=val_pool, dev=dev, params=params, items=len(train_files))  # fmt: skip
    if state is not None:
        model.load_state_dict(state["model"])  # every tensor onto the model's device
        heads.load_state_dict(state["heads"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        run.step, run.best, run.history = state["step"], state["best"], state["history"]
        return run
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    doc = {"train_config": cfg.to_dict(), "pretrain": dataclasses.asdict(settings), "store": store.location,
           "manifest": ds.manifest, "items": len(train_files), "frames": int(pool.frames.sum())}  # fmt: skip
    write_atomically(out / "config.json", json.dumps(doc, indent=2))
    return run


@torch.no_grad()
def _validate(model, heads, pool: FramePool | None, cfg: TrainConfig, settings: PretrainConfig) -> float | None:
    """The masked loss on fixed validation windows (the same every time: seeded by the seed
    alone), in eval mode; None without a validation split."""
    if pool is None:
        return None
    model.eval()
    heads.eval()
    rng = np.random.default_rng([cfg.seed, 2**31])
    losses = []
    for _ in range(4):
        batch = pool.windows(rng, cfg.stream.batch_streams, cfg.stream.window)
        batch["hidden"] = hidden_spans(rng, batch["real"], settings.mask_fraction, settings.span_frames)
        losses.append(float(masked_loss(model, heads, _tensors(batch, next(heads.parameters()).device))))
    model.train()
    heads.train()
    return float(np.mean(losses))


@dataclass(kw_only=True)
class _Run:
    """A pretraining run as it stands: its parts, its position and what a save writes (the
    resume state, last.pt and, when best, best.pt)."""

    out: Path
    cfg: TrainConfig
    settings: PretrainConfig
    ds: TrainingData
    norm: Normalizer
    model: nn.Module
    heads: FrameHeads
    opt: torch.optim.Optimizer
    sched: object
    pool: FramePool
    val_pool: FramePool | None
    dev: torch.device
    params: list
    items: int
    step: int = 0
    best: float | None = None
    history: list = dataclasses.field(default_factory=list)

    def validate_and_save(self, rec: dict) -> None:
        """Validate (rec gets val_loss), record, and save; best by the validation's masked
        loss (the training batch's without a validation split)."""
        rec["val_loss"] = _validate(self.model, self.heads, self.val_pool, self.cfg, self.settings)
        value = rec["val_loss"] if rec["val_loss"] is not None else rec["loss"]
        is_best = self.best is None or value < self.best
        self.best = value if is_best else self.best
        self.history.append(rec)
        self.save(self.step, self.best, self.history, is_best)
        log.info("step %d: masked loss %.4f, validation %s", self.step, rec["loss"], rec["val_loss"])

    def result(self, interrupted: bool = False) -> PretrainResult:
        return PretrainResult(run_dir=self.out, step=self.step, best_loss=self.best, items=self.items,
                              frames=int(self.pool.frames.sum()), interrupted=interrupted)  # fmt: skip

    def save(self, step: int, best: float | None, history: list[dict], is_best: bool) -> None:
        import io

        ck = Checkpoint(
            model_state=self.model.state_dict(),
            config=self.cfg,
            feature_config=self.ds.feature_config,
            feature_config_hash=self.ds.feature_config_hash,
            normalizer=self.norm,
            channels=list(self.ds.channels),
            mouth=list(self.ds.mouth),
            expression=list(self.ds.expression),
            library_versions=library_versions(),
        )
        ck.save(self.out / "checkpoints" / "last.pt")
        if is_best:
            ck.save(self.out / "checkpoints" / "best.pt")
        state = {
            "config": self.cfg.to_json(),
            "settings": dataclasses.asdict(self.settings),
            "manifest": self.ds.manifest,
            "model": self.model.state_dict(),
            "heads": self.heads.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": torch.get_rng_state(),
            "step": step,
            "best": best,
            "history": history,
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        write_atomically(self.out / STATE_FILE, buf.getbuffer())  # last: what resume reads
        write_atomically(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def _load_state(out: Path) -> dict:
    path = out / STATE_FILE
    if not path.is_file():
        raise DataError(f"{out} holds no pretraining run to resume ({STATE_FILE} not found)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (a damaged file, said in one line)
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
