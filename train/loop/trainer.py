"""bstrain fit as a library call: fit() and the Trainer it runs.

fit() resolves the device, the processes and the final train config once, and hands them to
a Trainer. The Trainer's setup is one method per component (data and statistics, streams,
model, optimiser and schedule, position, outputs), each given the checkpoint to restore
(None for a fresh run). One optimiser step is train.step.train_step; train_epoch loops over
an epoch's batches and fit over epochs; validation and its metrics are train.evaluation's.
Where training stands in the data (epoch, batch, carried predictions) is the stream
cursor's (streaming.StreamCursor), and what is saved is a checkpoint.Checkpoint record.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from blendsync.shared.files import write_atomically
from blendsync.shared.provenance import library_versions
from blendsync.shared.store import FeatureStore
from blendsync.train.core import plots
from blendsync.train.core.build import build_model
from blendsync.train.core.checkpoint import Checkpoint, CheckpointError, TrainingState, load_checkpoint, resume_problem
from blendsync.train.core.config import LOSS_TERMS, VALIDATION_METRICS, ConfigOverrides, TrainConfig
from blendsync.train.core.data import (
    DataError,
    FileRef,
    TrainingData,
    check_shared_audio,
    hold_out_tails,
    load_training_data,
    variant_ranges,
)
from blendsync.train.core.normalization import load_or_compute, still_channels, still_mask
from blendsync.train.core.output_gain import calibrate_gain
from blendsync.train.core.windows import n_blocks, prev_offset
from blendsync.train.loop.augment import FeatureAugmenter
from blendsync.train.loop.diagnostics import grad_report, normalize_stream_grads, warn_on
from blendsync.train.loop.distributed import Dist
from blendsync.train.loop.distributed import setup as setup_dist
from blendsync.train.loop.distributed import teardown as teardown_dist
from blendsync.train.loop.evaluation import loss_channels, split_metrics, validation_pass
from blendsync.train.loop.finetune import InitFrom, fine_tune_config, starting_statistics, transfer_weights
from blendsync.train.loop.step import LossMeter, NonFiniteGuard, carry, to_device, train_step
from blendsync.train.loop.streaming import StreamCursor, WindowStream
from blendsync.train.loop.teacher import TeacherCurves, teacher_curves
from blendsync.train.loop.weight_average import WeightAverage

log = logging.getLogger(__name__)

LOG_EVERY = 10
# Epochs longer than this refresh the PNG plots as they end; shorter runs plot once at the end.
PLOT_EVERY_EPOCH_AFTER_S = 30.0


class RunExistsError(ValueError):
    """--out already holds a run, and this is not --resume."""


@dataclass(kw_only=True)
class FitResult:
    run_dir: Path
    step: int
    epoch: int
    # {"metric", "value", "step", "calibrated_gain"} of best.pt (None: no validation ran)
    best: dict | None
    history: list[dict] = field(default_factory=list)
    interrupted: bool = False
    # Ended by validation.patience
    stopped_early: bool = False
    # Ended by on_validation's wish (a sweep pruning the run)
    stopped_by_hook: bool = False


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    return d


def cap_streams(cfg: TrainConfig, files, world: int) -> TrainConfig:
    """B no larger than the windows an epoch has per process: rows beyond them would idle at
    every step (computed, masked, wasted), which is never what a larger B was asked for."""
    s = cfg.stream
    windows = sum(n_blocks(f.frames, s.frames_per_window, s.stride) for f in files)
    per_rank = max(1, -(-windows // world))
    if s.batch_streams <= per_rank:
        return cfg
    log.warning(
        "%d streams (stream.batch_streams) but an epoch has only %d windows%s: using %d streams, since "
        "the other rows would idle at every step",
        s.batch_streams,
        windows,
        f" for {world} processes" if world > 1 else "",
        per_rank,
    )
    return cfg.replace(stream={"batch_streams": per_rank})


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _schedule_length(stream, epochs: int, max_steps: int) -> int:
    """Optimiser steps the run takes: its epochs' steps, up to max_steps (0: no limit).
    Epochs are planned only until max_steps is reached: a run sized by max_steps with many
    epochs would otherwise plan every one of them before its first step."""
    total = 0
    for e in range(epochs):
        total += stream.steps(e)
        if max_steps and total >= max_steps:
            return max_steps
    return total


def fit(
    store_path: str | Path,
    *,
    cfg: TrainConfig,
    out: str | Path,
    manifest: str | None = None,
    overrides: ConfigOverrides | None = None,
    device: str = "auto",
    resume: bool = False,
    stop_after_steps: int | None = None,
    on_step: Callable[[dict], bool | None] | None = None,
    allow_shared_audio: bool = False,
    init_from: InitFrom | None = None,
    on_validation: Callable[[dict], bool | None] | None = None,
    teacher: str | Path | None = None,
) -> FitResult:
    """Train on a store.

    overrides: choices over cfg (preset, epochs, B, ...), resolved once with the device into
    the run's config (ConfigOverrides.resolve; a resumed run keeps its own). stop_after_steps
    ends the run right after that step, as an interruption would, with last.pt saved (for
    time-boxed jobs and resume tests). allow_shared_audio: train
    even when the same audio is in the training and a validation/test split (refused by
    default). on_step(record) is called after every step (rank 0); in a single-process run it
    may return True to end the run there the same way (e.g. on a time or CPU budget).
    on_validation(record) is called with every validation record (rank 0, single process),
    after best.pt and last.pt are saved; True ends the run there (a sweep pruning it). With
    on_validation given, a run on_step ends is validated at its last step first (once), so that
    the training since the last validation is scored.
    init_from: start from another run's weights (finetune.py; not with resume).
    teacher: a checkpoint whose curves of the manifest's audio-only training items are trained
    on beside the captured takes (teacher.py; a resumed run keeps its own teacher).
    Every metrics.jsonl record carries cpu_s and wall_s: this process's CPU seconds and the
    wall seconds of the run so far (a resumed run adds to those of its checkpoint).
    """
    run_dir = Path(out)
    store = FeatureStore(store_path)
    dist, dev = setup_dist(resolve_device(device))
    try:
        trainer = Trainer.create(
            run_dir,
            store,
            dist,
            dev,
            cfg=cfg,
            manifest=manifest,
            overrides=overrides or ConfigOverrides(),
            resume=resume,
            allow_shared_audio=allow_shared_audio,
            init_from=init_from,
            teacher=teacher,
        )
        result = trainer.fit(stop_after_steps=stop_after_steps, on_step=on_step, on_validation=on_validation)
    except BaseException:
        teardown_dist(dist, together=False)
        raise
    teardown_dist(dist)
    return result


class Trainer:
    """One training run (one process of it under torchrun)."""

    @classmethod
    def create(
        cls,
        run_dir: Path,
        store: FeatureStore,
        dist: Dist,
        dev: torch.device,
        *,
        cfg: TrainConfig,
        manifest: str | None,
        overrides: ConfigOverrides,
        resume: bool,
        allow_shared_audio: bool,
        init_from: InitFrom | None = None,
        teacher: str | Path | None = None,
    ) -> Trainer:
        """The final config (the checkpoint's on --resume, else cfg with the overrides
        resolved, with init_from's model when fine-tuning), the dataset, and the checkpoint
        to continue from."""
        if not dist.main:
            logging.getLogger("blendsync").setLevel(logging.WARNING)
        ckpt = None
        if resume:
            ckpt = _load_resume_checkpoint(run_dir, store)
            cfg, why = ckpt.config, "from the checkpoint"
            teacher = _resumed_teacher(run_dir, teacher)
        else:
            if (run_dir / "checkpoints" / "last.pt").exists():
                raise RunExistsError(f"{run_dir} already holds a run: continue it with --resume, or pick another --out")
            cfg, why = overrides.resolve(cfg, dev.type)
            if init_from is not None:
                cfg, why = fine_tune_config(cfg, init_from, overrides), f"from {init_from.path}"
        log.info(
            "preset %s (%s) on %s: d_model %d, heads %d, layers %d+%d, %d streams, %d frames per window%s",
            cfg.preset,
            why,
            dev,
            cfg.model.d_model,
            cfg.model.heads,
            cfg.model.mel_layers,
            cfg.model.emotion_layers,
            cfg.stream.batch_streams,
            cfg.stream.frames_per_window,
            f" per process, {dist.world} processes" if dist.active else "",
        )
        if ckpt is not None and ckpt.training.world_size != dist.world:
            raise DataError(
                f"{run_dir} was trained with {ckpt.training.world_size} processes; resume it with "
                f"the same number (got {dist.world})"
            )
        ds = load_training_data(store, manifest)
        check_shared_audio(ds, allow_shared_audio)
        if ckpt is not None:
            ckpt.check_compatible(ds)
        if init_from is not None:
            init_from.checkpoint.check_features(ds, channels_apart=True)
        return cls(run_dir, store, dist, dev, cfg, ds, ckpt, init_from, None if teacher is None else Path(teacher))

    def __init__(
        self,
        run_dir: Path,
        store: FeatureStore,
        dist: Dist,
        dev: torch.device,
        cfg: TrainConfig,
        ds: TrainingData,
        ckpt: Checkpoint | None,
        init_from: InitFrom | None = None,
        teacher: Path | None = None,
    ):
        self.started = (time.process_time(), time.perf_counter())  # the run's clocks: _setup_outputs
        self.run_dir, self.store, self.dist, self.dev, self.ds = run_dir, store, dist, dev, ds
        self.init_from, self.teacher = init_from, teacher
        self.main = dist.main
        self.amp = dev.type == "cuda"
        self.cfg = self._setup_data(cfg, fresh=ckpt is None)
        torch.manual_seed(self.cfg.seed)
        if self.amp:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        run_dir.mkdir(parents=True, exist_ok=True)
        self._setup_statistics(ckpt)
        self._setup_teacher()
        self._setup_streams()
        self._setup_model(ckpt)
        self._setup_optimizer(ckpt)
        self._setup_average(ckpt)
        self._setup_position(ckpt)
        self._setup_outputs(ckpt)

    # -- setup ---------------------------------------------------------------------------------
    def _setup_data(self, cfg: TrainConfig, fresh: bool) -> TrainConfig:
        """Training and validation ranges (a held-out tail of every training take when the
        manifest has no validation split); a fresh run's B capped to the windows there are."""
        ds, v = self.ds, cfg.validation
        self.train_files = ds.files("train")
        self.val_files = ds.splits.get("val") or []
        if not self.val_files and v.holdout_tail > 0:
            self.train_files, self.val_files = hold_out_tails(self.train_files, v.holdout_tail)
            log.info(
                "manifest %r has no validation split: validating on the last %g%% of every training take "
                "(%d frames, not trained on)",
                ds.manifest,
                100 * v.holdout_tail,
                sum(f.frames for f in self.val_files),
            )
        if not self.val_files:
            log.warning(
                "manifest %r has no validation split and validation.holdout_tail is 0: no validation "
                "metrics, best = last",
                ds.manifest,
            )
        self.has_val = bool(self.val_files)
        if fresh:
            cfg = cap_streams(cfg, self.train_files, self.dist.world)
        if cfg.stream.stride > 1:
            K = cfg.stream.frames_per_window
            log.warning(
                "training at stride %d: smoothing_alpha is learned at a lag of %d frames%s, "
                "but validation and predict run at stride 1",
                cfg.stream.stride,
                prev_offset(K, cfg.stream.stride),
                f" between blocks (1 frame inside each block of {K})" if K > 1 else "",
            )
        return cfg

    def _setup_statistics(self, ckpt: Checkpoint | None) -> None:
        """The training split's statistics: the checkpoint's, or computed once (rank 0) and
        cached in the run folder for the other ranks."""
        if ckpt is not None:
            self.norm, self.still = ckpt.normalizer, list(ckpt.still)
            return
        if self.main:
            self.norm = load_or_compute(self.run_dir, self.store, self.ds.manifest, "train", self.train_files)
        self.dist.barrier()
        if not self.main:
            self.norm = load_or_compute(self.run_dir, self.store, self.ds.manifest, "train", self.train_files)
        if self.init_from is not None:
            self.norm = starting_statistics(self.norm, self.init_from)
        self.still = still_channels(self.norm, list(self.ds.channels), self.cfg.loss.still_max)
        if self.still:
            log.info(
                "%d of %d channels never exceed %g in the training split: left out of the loss and predicted "
                "as 0 (loss.still_max): %s",
                len(self.still),
                len(self.ds.channels),
                self.cfg.loss.still_max,
                ", ".join(self.still),
            )

    def _setup_teacher(self) -> None:
        """The teacher's curves of the audio-only training items (rank 0 computes those not yet
        in the store, the others read them); statistics stay the captured takes'."""
        self.teacher_files: list[FileRef] = []
        self.teacher_curves: TeacherCurves | None = None
        if self.teacher is None:
            return
        files = self.ds.unlabelled.get("train", [])
        if not files:
            raise DataError(
                f"--teacher {self.teacher}: manifest {self.ds.manifest!r} has no audio-only training rows "
                "(rows with an empty targets cell) for it to animate"
            )
        keys = [f.key for f in files]
        fps = self.ds.feature_config.fps
        if self.main:
            self.teacher_curves = teacher_curves(self.store, keys, self.teacher, channels=self.ds.channels, fps=fps)
        self.dist.barrier()
        if not self.main:
            self.teacher_curves = teacher_curves(self.store, keys, self.teacher, channels=self.ds.channels, fps=fps)
        self.teacher_files = files
        log.info(
            "training on %d captured take(s) (%d frames) and %d audio-only item(s) animated by the teacher (%d frames)",
            len(self.train_files),
            sum(f.frames for f in self.train_files),
            len(files),
            sum(f.frames for f in files),
        )

    def _setup_streams(self) -> None:
        s, dist = self.cfg.stream, self.dist
        common = dict(
            window=s.window,
            lookahead=s.lookahead,
            streams=s.batch_streams,
            block=s.frames_per_window,
            pad_value=s.pad_value,
            prefetch=s.prefetch_files,
            seed=self.cfg.seed,
        )
        self.train_stream = WindowStream(
            self.store,
            self.train_files + self.teacher_files,
            self.norm,
            teacher_targets=self.teacher_curves.targets if self.teacher_curves is not None else None,
            variants=variant_ranges(self.ds, self.train_files) if self.cfg.augment.variant_p > 0 else None,
            variant_p=self.cfg.augment.variant_p,
            stride=s.stride,
            shuffle=True,
            split=s.split_files,
            rank=dist.rank,
            world=dist.world,
            jitter=s.phase_jitter,
            **common,
        )
        self.val_stream = (
            WindowStream(self.store, self.val_files, self.norm, stride=1, shuffle=False, split=False, **common)
            if self.has_val and self.main
            else None
        )
        self._log_variants()

    def _log_variants(self) -> None:
        n = sum(len(v) for v in self.train_stream.variants.values())
        if self.cfg.augment.variant_p > 0 and not n:
            log.warning(
                "augment.variant_p is %g but manifest %r has no stored audio variants: training on the takes as "
                "captured (make them with bsfeat extract --augment SPEC)",
                self.cfg.augment.variant_p,
                self.ds.manifest,
            )
        elif n:
            log.info(
                "%d audio variant(s) of %d training take(s): each epoch walks a variant instead of a take with "
                "probability %g",
                n,
                len(self.train_stream.variants),
                self.cfg.augment.variant_p,
            )

    def _setup_model(self, ckpt: Checkpoint | None) -> None:
        ds, dev = self.ds, self.dev
        self.model = build_model(self.cfg, ds.feature_config, len(ds.channels)).to(dev)
        self.model.decoder.init_bias(torch.from_numpy(self.norm.target_mean).to(dev))
        if ckpt is not None:
            self.model.load_state_dict(ckpt.model_state)
        elif self.init_from is not None:
            self.channel_match = transfer_weights(self.model, self.init_from, list(ds.channels))
            m = self.channel_match
            log.info(
                "starting from %s: %d channels matched by name, %d new (starting at their training means)%s, "
                "%d dropped%s",
                self.init_from.path,
                len(m.matched),
                len(m.new),
                f": {', '.join(m.new)}" if m.new else "",
                len(m.dropped),
                f": {', '.join(m.dropped)}" if m.dropped else "",
            )
            if not m.matched:
                log.warning(
                    "%s shares no channel with this store (%d of its channels, %d here): only the shared trunk "
                    "(encoders and cross-attention) is carried over; every output channel starts untrained",
                    self.init_from.path,
                    len(m.dropped),
                    len(m.new),
                )
        self.model.set_still(still_mask(ds.channels, self.still).to(dev))
        self.net = self.model
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
            self.net = DistributedDataParallel(self.model, device_ids=[dev.index] if dev.type == "cuda" else None)
        if self.cfg.compile:
            self.net = torch.compile(self.net)
        self.masks = loss_channels(ds, self.norm, self.cfg, dev, self.still)
        self.augment = FeatureAugmenter(self.cfg.augment, self.norm.mel_std, dev) if self.cfg.augment.active else None

    def _setup_average(self, ckpt: Checkpoint | None) -> None:
        """optim.ema_decay: the average of the weights (validated and saved); on resume the
        trained weights come from the training state and the average from the model state."""
        self.average = WeightAverage(self.model, self.cfg.optim.ema_decay) if self.cfg.optim.ema_decay else None
        if ckpt is None or self.average is None:
            return
        t = ckpt.training
        if t.average is None or t.trained_model is None:
            raise CheckpointError(
                f"{self.run_dir / 'checkpoints' / 'last.pt'}: cannot resume from it: its config averages the "
                "weights (optim.ema_decay) but it holds no trained weights beside the average"
            )
        self.average.load(ckpt.model_state, t.average)
        self.model.load_state_dict(t.trained_model)

    @property
    def scored_model(self) -> torch.nn.Module:
        """What is validated and saved: the weight average when there is one."""
        return self.average.average if self.average is not None else self.model

    def _setup_optimizer(self, ckpt: Checkpoint | None) -> None:
        o = self.cfg.optim
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas)
        )
        self.total_steps = _schedule_length(self.train_stream, o.epochs, o.max_steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_lambda(o.warmup_steps, self.total_steps, o.min_lr_ratio)
        )
        if ckpt is None:
            return
        try:
            self.opt.load_state_dict(ckpt.training.optimizer)
            self.sched.load_state_dict(ckpt.training.scheduler)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(
                f"{self.run_dir / 'checkpoints' / 'last.pt'}: cannot resume from it: its optimiser "
                f"or schedule state does not fit the model ({type(e).__name__}: {e})"
            ) from None

    def _setup_position(self, ckpt: Checkpoint | None) -> None:
        """Step, stream cursor, RNG state and the best validation so far."""
        prev = torch.zeros(self.cfg.stream.batch_streams, len(self.ds.channels), device=self.dev)
        self.cursor = StreamCursor(self.train_stream, prev)
        self.step, self.best, self.since_best = 0, None, 0
        if ckpt is None:
            return
        t, rank = ckpt.training, self.dist.rank
        torch.set_rng_state(t.rng_cpu_all[rank].clone())  # its own storage, or it crashes
        if self.dev.type == "cuda" and t.rng_cuda_all is not None:
            torch.cuda.set_rng_state(t.rng_cuda_all[rank].clone())
        self.step = t.step
        self.cursor.load_state_dict({"epoch": t.epoch, "step_in_epoch": t.step_in_epoch, "prev": t.prev_all[rank]})
        self.best, self.since_best = ckpt.best_val, ckpt.validations_since_best
        log.info("resumed %s at step %d (epoch %d, batch %d)", self.run_dir, self.step, t.epoch, t.step_in_epoch)

    def _setup_outputs(self, ckpt: Checkpoint | None) -> None:
        """config.json (fresh runs), metrics.jsonl and its history, TensorBoard, checkpoints/."""
        from torch.utils.tensorboard import SummaryWriter

        self.ck_dir = self.run_dir / "checkpoints"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if ckpt is None and self.main:
            self._write_run_config()
            if self.metrics_path.exists():  # a run that never saved a checkpoint
                kept = self.run_dir / f"metrics.before-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
                self.metrics_path.rename(kept)
                log.warning(
                    "%s held the records of a run without a checkpoint: moved to %s", self.metrics_path, kept.name
                )
        self.history = _read_history(self.metrics_path)
        upto = [r for r in self.history if r.get("step", 0) <= self.step and "cpu_s" in r]
        before = upto[-1] if upto else {"cpu_s": 0.0, "wall_s": 0.0}  # the checkpoint's run so far
        self.clock_zero = (self.started[0] - before["cpu_s"], self.started[1] - before["wall_s"])
        self.on_validation: Callable[[dict], bool | None] | None = None
        self.stopped_by_hook = False
        self.tb = SummaryWriter(str(self.run_dir / "tb")) if self.main else _NoWriter()
        self.meter = LossMeter()
        self.guard = NonFiniteGuard()
        self.grad_history: dict[str, list[float]] = {}
        self.last_logged: dict = {}
        self.val_plot: dict = {}
        self.last_val_step = -1
        self.stopped = False

    def _write_run_config(self) -> None:
        ds, cfg = self.ds, self.cfg
        write_atomically(
            self.run_dir / "config.json",
            json.dumps(
                {
                    "train_config": cfg.to_dict(),
                    "train_config_hash": cfg.hash,
                    "feature_config": ds.feature_config.to_dict(),
                    "feature_config_hash": ds.feature_config_hash,
                    "store": self.store.location,
                    "manifest": ds.manifest,
                    "device": str(self.dev),
                    "channels": ds.channels,
                    "train_files": len(self.train_files),
                    "val_files": len(self.val_files),
                    "processes": self.dist.world,
                    "still_channels": self.still,
                    # Stored audio variants the training takes can be walked as (augment.variant_p).
                    "train_variants": sum(len(v) for v in self.train_stream.variants.values()),
                    "teacher": None
                    if self.teacher_curves is None
                    else {
                        "checkpoint": str(self.teacher.resolve()),
                        "id": self.teacher_curves.teacher_id,
                        "files": len(self.teacher_files),
                        "frames": sum(f.frames for f in self.teacher_files),
                    },
                    "init_from": None
                    if self.init_from is None
                    else {
                        "checkpoint": str(self.init_from.path),
                        "keep_normalization": self.init_from.keep_normalization,
                        "channels": self.channel_match.to_dict(),
                    },
                    "validation": {
                        "files": [{"id": f.id, "start": f.start, "frames": f.frames} for f in self.val_files],
                        "held_out_tail": not ds.splits.get("val") and self.has_val,
                    },
                },
                indent=2,
            ),
        )

    # -- the loop ------------------------------------------------------------------------------
    def fit(
        self,
        stop_after_steps: int | None = None,
        on_step: Callable[[dict], bool | None] | None = None,
        on_validation: Callable[[dict], bool | None] | None = None,
    ) -> FitResult:
        self.on_validation = on_validation if not self.dist.active else None
        try:
            while not self._run_over():
                if self.train_epoch(stop_after_steps, on_step) == "interrupted":
                    if self.on_validation is not None and self.has_val and self.last_val_step != self.step:
                        self.validate_and_save(self.cursor.epoch)  # scored where the budget ended it
                    else:
                        self._save("last.pt", self.checkpoint())
                    return FitResult(
                        run_dir=self.run_dir,
                        step=self.step,
                        epoch=self.cursor.epoch,
                        best=self.best,
                        history=self.history,
                        interrupted=True,
                        stopped_by_hook=self.stopped_by_hook,
                    )
                if self.stopped:
                    break
                self._end_epoch()
            if self.main:
                self._plot()
        except KeyboardInterrupt:
            if not self.dist.active:  # under torchrun every rank is interrupted: no collective can run
                self._save("last.pt", self.checkpoint())
                log.warning(
                    "interrupted after step %d: saved %s; continue with --resume", self.step, self.ck_dir / "last.pt"
                )
            raise
        finally:
            self.tb.close()
        return FitResult(
            run_dir=self.run_dir,
            step=self.step,
            epoch=self.cursor.epoch,
            best=self.best,
            history=self.history,
            stopped_early=self.stopped and not self.stopped_by_hook,
            stopped_by_hook=self.stopped_by_hook,
        )

    def _max_steps_reached(self) -> bool:
        return bool(self.cfg.optim.max_steps and self.step >= self.cfg.optim.max_steps)

    def _run_over(self) -> bool:
        return self.cursor.epoch >= self.cfg.optim.epochs or self._max_steps_reached() or self.stopped

    def train_epoch(self, stop_after_steps: int | None, on_step) -> str:
        """The rest of the cursor's epoch, one train_step per batch. Returns "interrupted"
        (stop_after_steps or on_step asked), "stopped" (patience or max_steps) or "ended"."""
        cfg, v = self.cfg, self.cfg.validation
        self.epoch_t0, windows, frames = time.perf_counter(), 0, 0
        for batch in self.cursor.batches():
            db = to_device(batch, self.dev)
            self.opt.zero_grad(set_to_none=True)
            loss, terms, pred = train_step(self.net, db, self.cursor.prev, cfg, self.masks, self.amp, self.augment)
            self.guard.add(self.step + 1, loss, self._batch_files(batch))
            if cfg.diagnostics.normalize_stream_grads:
                normalize_stream_grads(self.model)
            self._diagnose(db)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.opt.step()
            self.sched.step()
            if self.average is not None:
                self.average.update()
            self.step += 1
            self.cursor.advance(carry(self.cursor.prev, pred, db.t))
            windows += int(batch["active"].sum())
            frames += db.frames
            rates = self._rates(windows, frames)
            self.meter.add(loss, terms)
            if self.dev.type == "cpu" or self.step % LOG_EVERY == 0:
                self.guard.check()
            if self.main and (self.step % LOG_EVERY == 0 or self.step == 1):
                self._record_train(rates)
            asked_stop = self._ask(on_step, rates)
            if cfg.checkpoint.every_steps and self.step % cfg.checkpoint.every_steps == 0:
                ck = self.checkpoint()
                self._save(f"step_{self.step}.pt", ck)
                self._save("last.pt", ck)
            if self.has_val and v.every_steps and self.step % v.every_steps == 0:
                self.stopped = self.validate_and_save(self.cursor.epoch)
            if asked_stop or (stop_after_steps is not None and self.step >= stop_after_steps):
                return "interrupted"
            if self.stopped or self._max_steps_reached():
                return "stopped"
        return "ended"

    def _end_epoch(self) -> None:
        """After an epoch (or a max_steps cut inside one): move the cursor on when the epoch is
        done, validate or save, and refresh the plots after a long epoch."""
        trained_epoch = self.cursor.epoch
        if self.cursor.epoch_done:
            self.cursor.next_epoch()
        run_end = self.cursor.epoch >= self.cfg.optim.epochs or self._max_steps_reached()
        v = self.cfg.validation
        if self.has_val and (not v.every_steps or (run_end and self.last_val_step != self.step)):
            self.stopped = self.validate_and_save(trained_epoch)
        else:
            ck = self.checkpoint()
            if not self.has_val:  # nothing to choose by: best = last
                self._save("best.pt", ck)
            self._save("last.pt", ck)
        if self.main and time.perf_counter() - self.epoch_t0 > PLOT_EVERY_EPOCH_AFTER_S:
            self._plot()

    def _batch_files(self, batch: dict) -> list[str]:
        files = self.train_stream.files
        return list(dict.fromkeys(files[f].id or files[f].key for f in batch["file"][batch["active"]]))

    def _clocks(self) -> dict:
        """The run's CPU seconds (this process, every thread) and wall seconds so far."""
        return {
            "cpu_s": round(time.process_time() - self.clock_zero[0], 3),
            "wall_s": round(time.perf_counter() - self.clock_zero[1], 3),
        }

    def _rates(self, windows: int, frames: int) -> dict:
        elapsed = max(time.perf_counter() - self.epoch_t0, 1e-9)
        return {"windows_per_s": windows / elapsed, "frames_per_s": frames / elapsed}

    def _diagnose(self, db) -> None:
        every = self.cfg.diagnostics.every_steps
        if not (self.main and every and self.step % every == 0):
            return
        rep = grad_report(self.model)
        warn_on(rep, self.step, alpha_in_use=db.alpha_in_use, history=self.grad_history)
        log.info(
            "step %d grads: total %.3g, smoothing_alpha %.3g, mel/emotion balance %s",
            self.step,
            rep["total_norm"],
            rep["smoothing_alpha_grad"] or 0.0,
            f"{rep['stream_balance']:.3g}" if rep["stream_balance"] is not None else "n/a",
        )
        log.debug("step %d grad norms: %s", self.step, rep["norms"])
        self.tb.add_scalar("grad/total_norm", rep["total_norm"], self.step)
        if rep["stream_balance"] is not None:
            self.tb.add_scalar("grad/stream_balance", rep["stream_balance"], self.step)

    def _record_train(self, rates: dict) -> None:
        """A train record: the means of the losses since the last one (the only reads of
        device values on the step path, every LOG_EVERY steps)."""
        rec = {
            "kind": "train",
            "step": self.step,
            "epoch": self.cursor.epoch,
            **self.meter.pop(),
            "lr": self.sched.get_last_lr()[0],
            "alpha": torch.sigmoid(self.model.smoothing_alpha).item(),
            **rates,
            **self._clocks(),
        }
        _append(self.metrics_path, rec)
        self.history.append(rec)
        self.last_logged = rec
        for k in ("loss", *LOSS_TERMS, "lr", "alpha"):
            self.tb.add_scalar(f"train/{k}", rec[k], self.step)

    def _ask(self, on_step, rates: dict) -> bool:
        """on_step's wish to end the run here (single process only: ranks cannot agree)."""
        if not (on_step and self.main):
            return False
        return (
            bool(
                on_step(
                    {
                        "step": self.step,
                        "epoch": self.cursor.epoch,
                        "total_steps": self.total_steps,
                        "loss": self.last_logged.get("loss"),
                        **rates,
                    }
                )
            )
            and not self.dist.active
        )

    # -- validation and checkpoints ------------------------------------------------------------
    def validate_and_save(self, trained_epoch: int) -> bool:
        """Validate (rank 0), save last.pt, and best.pt when the metric improved; a
        collective. True when validation.patience has run out."""
        v = self.cfg.validation
        improved = False
        if self.main:
            value, gain = self._validate(trained_epoch)
            if self.best is None or _better(value, self.best["value"], v.metric):
                self.best = {"metric": v.metric, "value": value, "step": self.step, "calibrated_gain": gain}
                self.since_best, improved = 0, True
            else:
                self.since_best += 1
        self.dist.barrier()  # the others wait while rank 0 validates
        ck = self.checkpoint()
        if improved:
            self._save("best.pt", ck)
        self._save("last.pt", ck)
        self.last_val_step = self.step
        out_of_patience = self.main and bool(v.patience) and self.since_best >= v.patience
        if self.main and self.on_validation is not None and self.on_validation(self.history[-1]):
            log.info("step %d: ended by the validation hook (pruned)", self.step)
            self.stopped_by_hook = True
            return True
        if self.dist.active:
            out_of_patience = bool(self.dist.gather(torch.tensor([int(out_of_patience)]))[0, 0])
        if out_of_patience and self.main:
            log.info(
                "no better validation %s in %d validations (best %s at step %d): stopping",
                v.metric,
                self.since_best,
                _fmt(self.best["value"]),
                self.best["step"],
            )
        return out_of_patience

    def _validate(self, epoch: int) -> tuple[float | None, float | None]:
        """One validation pass, recorded; returns (the value of validation.metric, the output
        gain with the lowest error on these frames: output_gain.calibrate_gain)."""
        ds, step = self.ds, self.step
        terms, preds, targs = validation_pass(
            self.scored_model, self.val_stream, self.val_files, self.cfg, self.masks, self.dev, self.amp, ds.channels
        )
        m = split_metrics(preds, targs, self.norm, ds, self.still)
        gain = calibrate_gain(
            np.concatenate([preds[i] for i in sorted(preds)]),
            np.concatenate([targs[i] for i in sorted(targs)]),
            self.norm.target_mean,
        )
        rec = {
            "kind": "val", "step": step, "epoch": epoch, **terms, "metrics": m, "calibrated_gain": gain,
            **self._clocks(),
        }  # fmt: skip
        _append(self.metrics_path, rec)
        self.history.append(rec)
        for k in ("loss", *LOSS_TERMS):
            self.tb.add_scalar(f"val/{k}", terms[k], step)
        self.tb.add_scalar("val/mse_all", m["mse"], step)
        for k in ("skill", "mean_r", "amplitude_ratio"):
            if m[k] is not None:
                self.tb.add_scalar(f"val/{k}", m[k], step)
        log.info(
            "step %d (epoch %d) validation: loss %.4f, mse %.5f, skill %s, mean r %s, amplitude ratio %s "
            "(%d active channels), calibrated gain %s",
            step,
            epoch,
            terms["loss"],
            m["mse"],
            _fmt(m["skill"]),
            _fmt(m["mean_r"]),
            _fmt(m["amplitude_ratio"]),
            m["active_channels"],
            _fmt(gain),
        )
        self.val_plot.update(
            pred=preds[0],
            target=targs[0],
            metrics=m,
            title=f"validation {self.val_files[0].id or 'file 0'} (step {step}): skill "
            f"{_fmt(m['skill'])}, mean r {_fmt(m['mean_r'])}, amplitude ratio "
            f"{_fmt(m['amplitude_ratio'])}",
        )
        return (terms["loss"] if self.cfg.validation.metric == "loss" else m[self.cfg.validation.metric]), gain

    def checkpoint(self) -> Checkpoint:
        """This run as it stands; a collective (every rank's RNG state and carried
        predictions). Never of weights a non-finite loss has touched."""
        self.guard.check()
        dist, ds = self.dist, self.ds
        rng_cuda = dist.gather(torch.cuda.get_rng_state()) if self.dev.type == "cuda" else None
        position = self.cursor.state_dict()
        training = TrainingState(
            optimizer=self.opt.state_dict(),
            scheduler=self.sched.state_dict(),
            rng_cpu_all=dist.gather(torch.get_rng_state()),
            rng_cuda_all=rng_cuda,
            prev_all=dist.gather(position["prev"]),
            world_size=dist.world,
            step=self.step,
            epoch=position["epoch"],
            step_in_epoch=position["step_in_epoch"],
            trained_model=self.model.state_dict() if self.average is not None else None,
            average=self.average.state_dict() if self.average is not None else None,
        )
        return Checkpoint(
            model_state=self.scored_model.state_dict(),
            config=self.cfg,
            feature_config=ds.feature_config,
            feature_config_hash=ds.feature_config_hash,
            normalizer=self.norm,
            channels=list(ds.channels),
            mouth=list(ds.mouth),
            expression=list(ds.expression),
            library_versions=library_versions(),
            best_val=self.best,
            validations_since_best=self.since_best,
            training=training,
            still=list(self.still),
        )

    def _save(self, name: str, ck: Checkpoint) -> None:
        if self.main:
            ck.save(self.ck_dir / name)

    def _plot(self) -> None:
        plots.plot_losses(self.history, self.run_dir / "loss_curves.png")
        w = self.model.dual_stream_attention
        plots.plot_stream_weights(
            w.mel_weights.detach().cpu().numpy(),
            w.emotion_weights.detach().cpu().numpy(),
            self.ds.channels,
            self.run_dir / "stream_weights.png",
        )
        if self.val_plot:
            plots.plot_curves(
                self.val_plot["pred"],
                self.val_plot["target"],
                self.ds.channels,
                self.ds.feature_config.fps,
                self.val_plot["title"],
                self.run_dir / "val_curves.png",
            )


def _resumed_teacher(run_dir: Path, given: str | Path | None) -> Path | None:
    """A resumed run's teacher: the one it was started with (its curves are in the store)."""
    try:
        recorded = (json.loads((run_dir / "config.json").read_text()).get("teacher") or {}).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if given is not None and (recorded is None or Path(given).resolve() != Path(recorded)):
        was = "without a teacher" if recorded is None else f"with the teacher {recorded}"
        raise DataError(f"{run_dir} was started {was}: resume it without --teacher")
    return None if recorded is None else Path(recorded)


def _load_resume_checkpoint(run_dir: Path, store: FeatureStore) -> Checkpoint:
    last = run_dir / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    problem = resume_problem(state)
    if problem:
        raise CheckpointError(f"{last}: {problem}")
    try:
        was = json.loads((run_dir / "config.json").read_text()).get("store")
    except (OSError, ValueError):
        was = None
    if was is not None and was != store.location:
        log.warning("resuming on store %s; this run was trained on %s (same feature config)", store.location, was)
    return Checkpoint.from_state(state)


def _better(value: float | None, best: float | None, metric: str) -> bool:
    if value is None:
        return False
    if best is None:
        return True
    return value > best if VALIDATION_METRICS[metric] == "max" else value < best


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


class _NoWriter:
    """TensorBoard stand-in for ranks other than 0, which write nothing."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _append(path: Path, rec: dict) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
    except OSError as e:  # a full disk fails the write or the close, whose errors name no file
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = ["fit", "FitResult", "Trainer", "RunExistsError", "CheckpointError", "DataError"]
