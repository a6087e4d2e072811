"""bstrain fit as a library call: the training loop around one step function.

The step (train_step) is kept apart from the loop; the loop owns streaming, the carried
previous predictions, the schedule, diagnostics, validation, checkpoints and outputs.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from blendsync.shared.provenance import library_versions
from blendsync.shared.store import FeatureStore
from blendsync.train import plots
from blendsync.train.checkpoint import CheckpointError, load_checkpoint, resume_problem, save_checkpoint
from blendsync.train.config import LOSS_TERMS, VALIDATION_METRICS, TrainConfig
from blendsync.train.data import Dataset, DataError, check_shared_audio, hold_out_tails, load_dataset
from blendsync.train.diagnostics import grad_report, normalize_stream_grads, warn_on
from blendsync.train.distributed import Dist
from blendsync.train.distributed import setup as setup_dist
from blendsync.train.distributed import teardown as teardown_dist
from blendsync.train.losses import channel_scale, loss_terms, total_loss
from blendsync.train.metrics import regression_metrics
from blendsync.train.model import build_model
from blendsync.train.output_gain import calibrate_gain
from blendsync.train.normalization import load_or_compute
from blendsync.train.step import LossMeter, NonFiniteGuard, carry, forward_rows, to_device, train_step
from blendsync.train.streaming import Normalizer, WindowStream
from blendsync.train.windows import n_blocks, prev_offset

log = logging.getLogger(__name__)

LOG_EVERY = 10
# Epochs longer than this refresh the PNG plots as they end; shorter runs plot once at the end.
PLOT_EVERY_EPOCH_AFTER_S = 30.0
TERMS = LOSS_TERMS


@dataclass
class FitResult:
    run_dir: Path
    step: int
    epoch: int
    # {"metric", "value", "step"} of best.pt (None: no validation ran)
    best: dict | None
    history: list[dict] = field(default_factory=list)
    interrupted: bool = False
    # Ended by validation.patience
    stopped_early: bool = False


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    return d


def resolve_preset(cfg: TrainConfig, preset: str | None, device: torch.device) -> tuple[TrainConfig, str]:
    chosen = preset or cfg.preset
    why = "from --preset" if preset else "from the config"
    if chosen == "auto":
        chosen = "full" if device.type == "cuda" else "small"
        why = f"auto: {device.type}"
    if chosen == "custom":
        return cfg, "model sizes from the config"
    return cfg.with_preset(chosen), why


def loss_channels(ds: Dataset, norm: Normalizer, cfg: TrainConfig, device) -> tuple:
    """(mouth (C,) bool, expression (C,) bool, scale (C,) float or None): the per-channel
    inputs of loss_terms after its per-frame arguments."""
    mouth = torch.tensor([c in set(ds.mouth) for c in ds.channels], device=device)
    expr = torch.tensor([c in set(ds.expression) for c in ds.channels], device=device)
    if cfg.loss.scale != "none" and norm.target_std is None:
        raise DataError("this checkpoint's statistics have no target spread: score or resume it with "
                        "loss.scale: none")
    scale = channel_scale(cfg.loss, norm.target_std) if cfg.loss.scale != "none" else None
    return mouth, expr, (None if scale is None else torch.from_numpy(scale).to(device))


def cap_streams(cfg: TrainConfig, files, world: int) -> TrainConfig:
    """B no larger than the windows an epoch has per process: rows beyond them would idle at
    every step (computed, masked, wasted), which is never what a larger B was asked for."""
    s = cfg.stream
    windows = sum(n_blocks(f.frames, s.frames_per_window, s.stride) for f in files)
    per_rank = max(1, -(-windows // world))
    if s.batch_streams <= per_rank:
        return cfg
    log.warning("%d streams (stream.batch_streams) but an epoch has only %d windows%s: using %d streams, since "
                "the other rows would idle at every step", s.batch_streams, windows,
                f" for {world} processes" if world > 1 else "", per_rank)
    return cfg.replace(stream={"batch_streams": per_rank})


def lr_lambda(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


@torch.no_grad()
def evaluate(model, stream: WindowStream, ds_files, cfg: TrainConfig, masks, device, amp: bool,
             channels: list[str]) -> tuple[dict, dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Every frame of every file at stride 1 with carried state. Returns (loss terms averaged
    over target frames, predictions per file (T, C), targets per file (T, C))."""
    was_training = model.training
    model.eval()
    preds = {i: np.zeros((f.frames, len(channels)), np.float32) for i, f in enumerate(ds_files)}
    targs = {i: np.zeros((f.frames, len(channels)), np.float32) for i, f in enumerate(ds_files)}
    sums = {k: 0.0 for k in (*TERMS, "loss")}
    n = 0
    prev = torch.zeros(stream.streams, len(channels), device=device)
    for batch in stream.epoch(0):
        db = to_device(batch, device)
        b = db.t
        pred = forward_rows(model, db, prev, amp)
        terms = loss_terms(pred, b["target"], prev, b["prev_target"], b["valid"], b["has_prev"], *masks)
        values = torch.stack([terms[k] for k in TERMS] + [total_loss(terms, cfg.loss)]).cpu().tolist()
        for k, v in zip((*TERMS, "loss"), values):
            sums[k] += v * db.frames
        n += db.frames
        prev = carry(prev, pred, b)
        p = pred.cpu().numpy()
        for i in np.flatnonzero(batch["active"]):
            f, k, real = int(batch["file"][i]), int(batch["frame"][i]), batch["valid"][i]
            n_real = int(real.sum())
            preds[f][k : k + n_real] = p[i, :n_real]
            targs[f][k : k + n_real] = batch["target"][i, :n_real]
    model.train(was_training)
    return {k: v / max(n, 1) for k, v in sums.items()}, preds, targs


def fit(store_path: str | Path, *, cfg: TrainConfig, out: str | Path, manifest: str | None = None,
        preset: str | None = None, device: str = "auto", resume: bool = False,
        batch_streams: int | None = None, stop_at_step: int | None = None,
        on_step: Callable[[dict], bool | None] | None = None, allow_shared_audio: bool = False) -> FitResult:
    """Train on a store.

    preset None: the config's (auto = full on a GPU, small on a CPU); batch_streams overrides
    the preset's B. stop_at_step ends the run right after that step, as an interruption
    would, with last.pt saved (for time-boxed jobs and resume tests). on_step(record) is
    called after every step (rank 0); in a single-process run it may return True to end the
    run there the same way (e.g. on a time or CPU budget).
    """
    run_dir = Path(out)
    store = FeatureStore(store_path)
    dist_, dev = setup_dist(resolve_device(device))
    try:
        res = _fit(run_dir, store, dist_, dev, cfg=cfg, manifest=manifest, preset=preset, resume=resume,
                   batch_streams=batch_streams, stop_at_step=stop_at_step, on_step=on_step,
                   allow_shared_audio=allow_shared_audio)
    except BaseException:
        teardown_dist(dist_, together=False)
        raise
    teardown_dist(dist_)
    return res


def _fit(run_dir: Path, store: FeatureStore, dist_: Dist, dev: torch.device, *, cfg: TrainConfig,
         manifest, preset, resume, batch_streams, stop_at_step, on_step, allow_shared_audio) -> FitResult:
    main = dist_.main
    if not main:
        logging.getLogger("blendsync").setLevel(logging.WARNING)
    ckpt = None
    if resume:
        last = run_dir / "checkpoints" / "last.pt"
        ckpt = load_checkpoint(last)
        problem = resume_problem(ckpt)
        if problem:
            raise CheckpointError(f"{last}: {problem}")
        cfg = TrainConfig.from_checkpoint_json(ckpt["config_json"])
        why = "from the checkpoint"
        try:
            was = json.loads((run_dir / "config.json").read_text()).get("store")
        except (OSError, ValueError):
            was = None
        if was is not None and was != store.location:
            log.warning("resuming on store %s; this run was trained on %s (same feature config)", store.location, was)
    else:
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise DataError(f"{run_dir} already holds a run: continue it with --resume, or pick another --out")
        cfg, why = resolve_preset(cfg, preset, dev)
        if batch_streams is not None:
            cfg = cfg.replace(stream={"batch_streams": batch_streams})
    log.info("preset %s (%s) on %s: d_model %d, heads %d, layers %d+%d, %d streams, %d frames per window%s",
             cfg.preset, why, dev, cfg.model.d_model, cfg.model.heads, cfg.model.mel_layers,
             cfg.model.emotion_layers, cfg.stream.batch_streams, cfg.stream.frames_per_window,
             f" per process, {dist_.world} processes" if dist_.active else "")
    if ckpt is not None and int(ckpt.get("world_size", 1)) != dist_.world:
        raise DataError(f"{run_dir} was trained with {ckpt.get('world_size', 1)} processes; resume it with "
                        f"the same number (got {dist_.world})")
    ds = load_dataset(store, manifest)
    check_shared_audio(ds, allow_shared_audio)
    if ckpt is not None:
        check_compatible(ckpt, ds)
    train_files = ds.files("train")
    val_files = ds.splits.get("val") or []
    v = cfg.validation
    if not val_files and v.holdout_tail > 0:
        train_files, val_files = hold_out_tails(train_files, v.holdout_tail)
        log.info("manifest %r has no validation split: validating on the last %g%% of every training take "
                 "(%d frames, not trained on)", ds.manifest, 100 * v.holdout_tail, sum(f.frames for f in val_files))
    if not val_files:
        log.warning("manifest %r has no validation split and validation.holdout_tail is 0: no validation "
                    "metrics, best = last", ds.manifest)
    has_val = bool(val_files)
    if ckpt is None:
        cfg = cap_streams(cfg, train_files, dist_.world)
    if cfg.stream.stride > 1:
        K = cfg.stream.frames_per_window
        log.warning("training at stride %d: smoothing_alpha is learned at a lag of %d frames%s, "
                    "but validation and predict run at stride 1", cfg.stream.stride,
                    prev_offset(K, cfg.stream.stride),
                    f" between blocks (1 frame inside each block of {K})" if K > 1 else "")
    torch.manual_seed(cfg.seed)
    amp = dev.type == "cuda"
    if amp:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    run_dir.mkdir(parents=True, exist_ok=True)
    if ckpt is not None:
        norm = Normalizer.from_dict(ckpt["normalizer"])
    else:
        if main:
            norm = load_or_compute(run_dir, store, ds.manifest, "train", train_files)
        dist_.barrier()  # the others read the statistics rank 0 cached
        if not main:
            norm = load_or_compute(run_dir, store, ds.manifest, "train", train_files)
    s = cfg.stream
    common = dict(window=s.window, lookahead=s.lookahead, streams=s.batch_streams, block=s.frames_per_window,
                  pad_value=s.pad_value, prefetch=s.prefetch_files, seed=cfg.seed)
    train_stream = WindowStream(store, train_files, norm, stride=s.stride, shuffle=True, split=s.split_files,
                                rank=dist_.rank, world=dist_.world, jitter=s.phase_jitter, **common)
    val_stream = (WindowStream(store, val_files, norm, stride=1, shuffle=False, split=False,
                               **common)
                  if val_files and main else None)

    model = build_model(cfg, ds.feature_config["mel"]["n_mels"], len(ds.channels)).to(dev)
    model.decoder.init_bias(torch.from_numpy(norm.target_mean).to(dev))
    net = model
    if dist_.active:
        from torch.nn.parallel import DistributedDataParallel

        # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
    per_epoch = [train_stream.steps(e) for e in range(o.epochs)]
    total = sum(per_epoch)
    if o.max_steps:
        total = min(total, o.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o.warmup_steps, total, o.min_lr_ratio))
    masks = loss_channels(ds, norm, cfg, dev)
    prev = torch.zeros(s.batch_streams, len(ds.channels), device=dev)
    step, epoch, start_in_epoch, best, since_best = 0, 0, 0, None, 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        try:
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{run_dir / 'checkpoints' / 'last.pt'}: cannot resume from it: its optimiser or "
                                  f"schedule state does not fit the model ({type(e).__name__}: {e})") from None
        torch.set_rng_state(ckpt["rng_cpu_all"][dist_.rank].clone())  # its own storage, or it crashes
        if dev.type == "cuda" and ckpt.get("rng_cuda_all") is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda_all"][dist_.rank].clone())
        step, epoch, start_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["step_in_epoch"]
        prev = ckpt["prev_all"][dist_.rank].to(dev)
        best = ckpt.get("best_val")
        since_best = int(ckpt.get("validations_since_best", 0))
        log.info("resumed %s at step %d (epoch %d, batch %d)", run_dir, step, epoch, start_in_epoch)
    elif main:
        (run_dir / "config.json").write_text(json.dumps({
            "train_config": cfg.to_dict(), "train_config_hash": cfg.hash,
            "feature_config": ds.feature_config, "feature_config_hash": ds.feature_config_hash,
            "store": store.location, "manifest": ds.manifest, "device": str(dev),
            "channels": ds.channels, "train_files": len(train_files), "val_files": len(val_files),
            "processes": dist_.world,
            "validation": {"files": [{"id": f.id, "start": f.start, "frames": f.frames} for f in val_files],
                           "held_out_tail": not ds.splits.get("val") and has_val},
        }, indent=2))

    guard = NonFiniteGuard()

    def state(ep: int, in_ep: int) -> dict:
        """The checkpoint; a collective (every rank's RNG and carried predictions). Never of
        weights a non-finite loss has touched."""
        guard.check()
        rng_cuda = dist_.gather(torch.cuda.get_rng_state()) if dev.type == "cuda" else None
        return {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng_cpu_all": dist_.gather(torch.get_rng_state()), "rng_cuda_all": rng_cuda,
            "world_size": dist_.world, "prev_all": dist_.gather(prev.detach()),
            "step": step, "epoch": ep, "step_in_epoch": in_ep,
            "normalizer": norm.to_dict(), "config_json": cfg.to_json(),
            "feature_config_json": json.dumps(ds.feature_config, sort_keys=True),
            "feature_config_hash": ds.feature_config_hash,
            "library_versions_json": json.dumps(library_versions(), sort_keys=True),
            "channels": list(ds.channels), "mouth": list(ds.mouth), "expression": list(ds.expression),
            "window": s.window, "lookahead": s.lookahead, "frames_per_window": s.frames_per_window,
            "fps": float(ds.feature_config["fps"]),
            "best_val": best, "validations_since_best": since_best,
        }

    ck_dir = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.jsonl"
    if ckpt is None and main and metrics_path.exists():  # a run that never saved a checkpoint
        kept = run_dir / f"metrics.before-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        metrics_path.rename(kept)
        log.warning("%s held the records of a run without a checkpoint: moved to %s", metrics_path, kept.name)
    history = _read_history(metrics_path)
    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(str(run_dir / "tb")) if main else _NoWriter()
    save = save_checkpoint if main else (lambda path, st: None)
    model.train()
    acc = LossMeter()
    last_logged: dict = {}
    val_plot: dict = {}
    last_val_step = -1
    stopped = False
    grad_history: dict[str, list[float]] = {}

    def validate_and_save(ep: int, in_ep: int, trained_epoch: int) -> bool:
        """Validate (rank 0), save last.pt, and best.pt when the metric improved; a
        collective. True when validation.patience has run out."""
        nonlocal best, since_best, last_val_step
        if main:
            value, gain = _validate(model, val_stream, val_files, cfg, masks, dev, amp, ds, norm, step, trained_epoch,
                                    metrics_path, history, tb, val_plot)
            if best is None or _better(value, best["value"], v.metric):
                best, since_best = {"metric": v.metric, "value": value, "step": step, "calibrated_gain": gain}, 0
                improved = True
            else:
                since_best += 1
                improved = False
        dist_.barrier()  # the others wait while rank 0 validates
        st = state(ep, in_ep)
        if main and improved:
            save(ck_dir / "best.pt", st)
        save(ck_dir / "last.pt", st)
        last_val_step = step
        out_of_patience = main and bool(v.patience) and since_best >= v.patience
        if dist_.active:
            out_of_patience = bool(dist_.gather(torch.tensor([int(out_of_patience)]))[0, 0])
        if out_of_patience and main:
            log.info("no better validation %s in %d validations (best %s at step %d): stopping", v.metric,
                     since_best, _fmt(best["value"]), best["step"])
        return out_of_patience

    # The last consistent position (epoch, batch in epoch, carried state), for Ctrl-C.
    completed = (epoch, start_in_epoch, prev)
    try:
        while epoch < o.epochs and not (o.max_steps and step >= o.max_steps) and not stopped:
            t0, windows, frames = time.perf_counter(), 0, 0
            i = start_in_epoch - 1
            for i, batch in enumerate(train_stream.epoch(epoch, start_in_epoch), start=start_in_epoch):
                db = to_device(batch, dev)
                opt.zero_grad(set_to_none=True)
                loss, terms, pred = train_step(net, db, prev, cfg, masks, amp)
                guard.add(step + 1, loss, list(dict.fromkeys(
                    train_stream.files[f].id or train_stream.files[f].key for f in batch["file"][batch["active"]])))
                if cfg.diagnostics.normalize_stream_grads:
                    normalize_stream_grads(model)
                if main and cfg.diagnostics.every_steps and step % cfg.diagnostics.every_steps == 0:
                    rep = grad_report(model)
                    warn_on(rep, step, alpha_in_use=db.alpha_in_use, history=grad_history)
                    log.info("step %d grads: total %.3g, smoothing_alpha %.3g, mel/emotion balance %s",
                             step, rep["total_norm"], rep["smoothing_alpha_grad"] or 0.0,
                             f"{rep['stream_balance']:.3g}" if rep["stream_balance"] is not None else "n/a")
                    log.debug("step %d grad norms: %s", step, rep["norms"])
                    tb.add_scalar("grad/total_norm", rep["total_norm"], step)
                    if rep["stream_balance"] is not None:
                        tb.add_scalar("grad/stream_balance", rep["stream_balance"], step)
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
                opt.step()
                sched.step()
                prev = carry(prev, pred, db.t)
                step += 1
                completed = (epoch, i + 1, prev)
                windows += int(batch["active"].sum())
                frames += db.frames
                elapsed = max(time.perf_counter() - t0, 1e-9)
                acc.add(loss, terms)
                if dev.type == "cpu" or step % LOG_EVERY == 0:
                    guard.check()
                if main and (step % LOG_EVERY == 0 or step == 1):
                    # The only reads of device values on the step path: every LOG_EVERY steps.
                    # Logged losses are means over the steps since the last record (rank 0's).
                    rec = {"kind": "train", "step": step, "epoch": epoch, **acc.pop(),
                           "lr": sched.get_last_lr()[0], "alpha": torch.sigmoid(model.smoothing_alpha).item(),
                           "windows_per_s": windows / elapsed, "frames_per_s": frames / elapsed}
                    _append(metrics_path, rec)
                    history.append(rec)
                    last_logged = rec
                    for k in ("loss", *TERMS, "lr", "alpha"):
                        tb.add_scalar(f"train/{k}", rec[k], step)
                asked_stop = False
                if on_step and main:
                    asked_stop = bool(on_step({
                        "step": step, "epoch": epoch, "total_steps": total, "loss": last_logged.get("loss"),
                        "frames_per_s": frames / elapsed, "windows_per_s": windows / elapsed,
                    })) and not dist_.active
                if cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0:
                    st = state(epoch, i + 1)
                    save(ck_dir / f"step_{step}.pt", st)
                    save(ck_dir / "last.pt", st)
                if has_val and v.every_steps and step % v.every_steps == 0:
                    stopped = validate_and_save(epoch, i + 1, epoch)
                if asked_stop or (stop_at_step is not None and step >= stop_at_step):
                    save(ck_dir / "last.pt", state(epoch, i + 1))
                    return FitResult(run_dir, step, epoch, best, history, interrupted=True)
                if stopped or (o.max_steps and step >= o.max_steps):
                    break
            if stopped:
                break
            finished_epoch = not (o.max_steps and step >= o.max_steps) or i + 1 >= per_epoch[epoch]
            epoch_done = epoch
            epoch, start_in_epoch = (epoch + 1, 0) if finished_epoch else (epoch, i + 1)
            prev = torch.zeros_like(prev) if finished_epoch else prev
            run_end = epoch >= o.epochs or bool(o.max_steps and step >= o.max_steps)
            if has_val and (not v.every_steps or (run_end and last_val_step != step)):
                stopped = validate_and_save(epoch, start_in_epoch, epoch_done)
            else:
                st = state(epoch, start_in_epoch)
                if not has_val:  # nothing to choose by: best = last
                    save(ck_dir / "best.pt", st)
                save(ck_dir / "last.pt", st)
            if main and time.perf_counter() - t0 > PLOT_EVERY_EPOCH_AFTER_S:
                _plot_run(model, history, ds, run_dir, val_plot)
        if main:
            _plot_run(model, history, ds, run_dir, val_plot)
    except KeyboardInterrupt:
        if not dist_.active:  # under torchrun every rank is interrupted: no collective can run
            ep, in_ep, prev = completed
            save(ck_dir / "last.pt", state(ep, in_ep))
            log.warning("interrupted after step %d: saved %s; continue with --resume", step, ck_dir / "last.pt")
        raise
    finally:
        tb.close()
    return FitResult(run_dir, step, epoch, best, history, stopped_early=stopped)


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


def _plot_run(model, history, ds, run_dir: Path, val_plot: dict) -> None:
    plots.plot_losses(history, run_dir / "loss_curves.png")
    w = model.dual_stream_attention
    plots.plot_stream_weights(w.mel_weights.detach().cpu().numpy(), w.emotion_weights.detach().cpu().numpy(),
                              ds.channels, run_dir / "stream_weights.png")
    if val_plot:
        plots.plot_curves(val_plot["pred"], val_plot["target"], ds.channels, float(ds.feature_config["fps"]),
                          val_plot["title"], run_dir / "val_curves.png")


def _validate(model, val_stream, val_files, cfg, masks, dev, amp, ds, norm, step, epoch,
              metrics_path, history, tb, val_plot: dict) -> tuple[float | None, float | None]:
    """One validation pass, recorded; returns (the value of validation.metric, the output
    gain with the lowest error on these frames: output_gain.calibrate_gain)."""
    terms, preds, targs = evaluate(model, val_stream, val_files, cfg, masks, dev, amp, ds.channels)
    m = split_metrics(preds, targs, norm, ds)
    gain = calibrate_gain(np.concatenate([preds[i] for i in sorted(preds)]),
                          np.concatenate([targs[i] for i in sorted(targs)]), norm.target_mean)
    rec = {"kind": "val", "step": step, "epoch": epoch, **terms, "metrics": m, "calibrated_gain": gain}
    _append(metrics_path, rec)
    history.append(rec)
    for k in ("loss", *TERMS):
        tb.add_scalar(f"val/{k}", terms[k], step)
    tb.add_scalar("val/mse_all", m["mse"], step)
    for k in ("skill", "mean_r", "amplitude_ratio"):
        if m[k] is not None:
            tb.add_scalar(f"val/{k}", m[k], step)
    log.info("step %d (epoch %d) validation: loss %.4f, mse %.5f, skill %s, mean r %s, amplitude ratio %s "
             "(%d active channels), calibrated gain %s", step, epoch, terms["loss"], m["mse"], _fmt(m["skill"]),
             _fmt(m["mean_r"]), _fmt(m["amplitude_ratio"]), m["active_channels"], _fmt(gain))
    val_plot.update(pred=preds[0], target=targs[0], metrics=m,
                    title=f"validation {val_files[0].id or 'file 0'} (step {step}): skill {_fmt(m['skill'])}, "
                          f"mean r {_fmt(m['mean_r'])}, amplitude ratio {_fmt(m['amplitude_ratio'])}")
    return (terms["loss"] if cfg.validation.metric == "loss" else m[cfg.validation.metric]), gain


def split_metrics(preds: dict[int, np.ndarray], targs: dict[int, np.ndarray], norm: Normalizer,
                  ds: Dataset) -> dict:
    """regression_metrics over every frame of a split, with the channel set's groups."""
    grouped = set(ds.mouth) | set(ds.expression)
    groups = {"mouth": ds.mouth, "expression": ds.expression,
              "other": [c for c in ds.channels if c not in grouped]}
    P = np.concatenate([preds[i] for i in sorted(preds)])
    T = np.concatenate([targs[i] for i in sorted(targs)])
    return regression_metrics(P, T, norm.target_mean, ds.channels, groups)


def check_compatible(ckpt: dict, ds: Dataset) -> None:
    """Refuse features the checkpoint was not trained on; warn on library-version drift."""
    if ckpt["feature_config_hash"] != ds.feature_config_hash:
        raise DataError(
            f"the store's feature config {ds.feature_config_hash} differs from the checkpoint's "
            f"{ckpt['feature_config_hash']}: featurize with the checkpoint's config"
        )
    if list(ckpt["channels"]) != list(ds.channels):
        theirs, ours = list(ckpt["channels"]), list(ds.channels)
        only_store = [c for c in ours if c not in set(theirs)]
        only_ckpt = [c for c in theirs if c not in set(ours)]
        detail = (f"store only: {only_store[:4]}, checkpoint only: {only_ckpt[:4]}" if only_store or only_ckpt
                  else "same names in another order")
        raise DataError(f"the store's channel set ({len(ours)} channels) differs from the checkpoint's "
                        f"({len(theirs)} channels): {detail}")
    theirs = json.loads(ckpt.get("library_versions_json", "{}"))
    if theirs and theirs != ds.library_versions:
        log.warning("library versions differ from the checkpoint's: store %s, checkpoint %s",
                    ds.library_versions, theirs)


def _append(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = ["fit", "FitResult", "evaluate", "CheckpointError", "DataError"]
