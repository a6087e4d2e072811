#!/usr/bin/env python3
"""Learning quality on held-out takes: leave one take out over the five labelled custom-rig
takes, every variant at the same process CPU seconds.

The custom-rig speaker (FACEGOOD, 116 channels, 7.2 minutes with curves in five takes): each
fold trains on four takes and scores the fifth with the run's best.pt (best by validation
skill on that take, as `bstrain fit` keeps it), reporting per fold and as mean (min..max):

    skill      1 - MSE / MSE of the training-mean predictor (bstrain evaluate's)
    mean r     Pearson r per active channel, averaged
    amplitude  median over active channels of std(prediction) / std(capture): 1 = the
               actor's range of motion, 0 = a still face

Equal compute: each run has one torch thread and `--budget-cpu-s` of process CPU
(time.process_time(), charged from the fit's setup to each step's end: validation inside the
run counts, featurizing does not). A short probe measures the variant's CPU per step, and the
cosine schedule is sized to end at the budget (optim.max_steps), so no variant is scored in
the middle of its schedule. `--jobs` runs at once (2 on a 2-core machine: one core each).

    python benchmarks/bench_quality.py [--budget-cpu-s 300] [--quick] [--variants default,live]
                                       [--folds 0,1,2,3,4] [--seed 0] [--jobs 2]
                                       [--set KEY=VALUE ...] [--json results.json]

--quick: 75 CPU-s per run, for screening; only variants that look promising get the full
budget. --set applies a train config key to every variant (e.g. --set loss.amplitude=0.5).
Variants (VARIANTS below): default (today's `bstrain fit` defaults on the default features),
live (`--preset live` on the live features, as bsfeat extract --features live makes them),
ema and live-ema (the same with optim.ema_decay 0.98), distilled and live-distilled (students
of the fold's default run, which is then run first, on the four captured takes and the 19
audio-only takes of unlabeled/: bstrain fit --teacher; the teacher's training is not charged to
the student). --reuse FILE takes the rows of an earlier --json (same budget) instead of running
them again, with their runs in --runs (the teachers of distilled variants).

Features are computed once into --cache (default: a folder in the temp dir) and reused by
every later run of this script. Reads ../shared/data/custom_rig (or
BLENDSYNC_SHARED_DATA/custom_rig).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAKES = ("1114_2_01", "1114_2_02", "1114_2_03", "1114_3_15", "1114_3_16")
PROBE_STEPS = 12  # the first two are not timed (allocation, first-call costs)
VALIDATIONS = 8  # validations per run (best.pt is chosen among them)


@dataclass(frozen=True)
class Variant:
    """A way to train: the feature preset its store is made with, the model preset, and
    train config keys over the defaults."""

    features: str = "default"
    preset: str | None = None
    settings: dict = field(default_factory=dict)
    # The variant whose run on the same fold is the teacher (bstrain fit --teacher) of the
    # custom-rig speaker's 19 audio-only takes, trained on beside the fold's four captured takes.
    teacher: str | None = None
    # bsfeat extract --augment specs stored for the fold's training takes (manifest fold{i}-NAME).
    augment: tuple[str, ...] = ()
    # bstrain pretrain steps on the fold's training takes and the audio-only takes (manifest
    # fold{i}u) before the run, which starts from its last.pt (--init-from); not charged to it.
    pretrain_steps: int = 0
    # Captured takes trained on (how much data: the fold's first N training takes, in order
    # after the held-out one); 0: all four.
    train_takes: int = 0


# Speed perturbation (as speech recognisers use it), two pitches and a noise level.
AUDIO_VARIANTS = ("speed:0.9", "speed:1.1", "pitch:-2", "pitch:+2", "noise:20")

VARIANTS = {
    "default": Variant(),
    "live": Variant(features="live", preset="live"),
    # The weights' moving average validated and saved (train.loop.weight_average).
    "ema": Variant(settings={"optim.ema_decay": 0.98}),
    "live-ema": Variant(features="live", preset="live", settings={"optim.ema_decay": 0.98}),
    # Students of the fold's default run on all the speech: captured takes and audio-only ones.
    "distilled": Variant(teacher="default"),
    "live-distilled": Variant(features="live", preset="live", teacher="default"),
    # Each epoch walks a stored audio variant of a take instead of the take with probability 0.5.
    "augmented": Variant(settings={"augment.variant_p": 0.5}, augment=AUDIO_VARIANTS),
    "speed": Variant(settings={"augment.variant_p": 0.5}, augment=("speed:0.9", "speed:1.1")),
    # BENCHMARKS.md's one-take sweep winner (bench_sweep.py: 30 CPU-s trials on take 1114_3_15).
    "published-sweep": Variant(
        settings={
            "optim.lr": 4.96e-3,
            "optim.warmup_steps": 20,
            "loss.preset": "notes",
            "augment.emotion_dropout": 0.16,
            "stream.frames_per_window": 64,
            "model.dropout": 0.14,
        }
    ),  # fmt: skip
    "pretrained": Variant(pretrain_steps=200),
    # The winner of bench_sweep_folds.py (8 trials scored over the five folds at 40 steps a fold).
    "fold-sweep": Variant(
        settings={
            "optim.lr": 2.21e-3,
            "optim.warmup_steps": 0,
            "loss.preset": "mse",
            "augment.emotion_dropout": 0.25,
            "stream.frames_per_window": 64,
            "model.dropout": 0.063,
        }
    ),  # fmt: skip
    "live-augmented": Variant(
        features="live", preset="live", settings={"augment.variant_p": 0.5}, augment=AUDIO_VARIANTS
    ),
}
# How much data: 1..3 captured takes, alone or after pretraining on the rest of the speech (the
# audio-only takes and the fold's other captured takes, their curves unused). 4 takes: default
# and pretrained.
for _n in (1, 2, 3):
    VARIANTS[f"takes{_n}"] = Variant(train_takes=_n)
    VARIANTS[f"takes{_n}-pretrained"] = Variant(train_takes=_n, pretrain_steps=200)


def custom_rig() -> Path:
    return Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data")) / "custom_rig"


def training_takes(fold: int, n: int = 0) -> list[str]:
    """The fold's training takes (n: its first n, counting on from the held-out take)."""
    others = [TAKES[(fold + k) % len(TAKES)] for k in range(1, len(TAKES))]
    return others[: n or len(others)]


def take_minutes(takes: list[str]) -> float:
    import soundfile

    return sum(soundfile.info(str(custom_rig() / f"{t}.wav")).duration for t in takes) / 60


def make_store(
    cache: Path, features: str, augmented: dict[str, tuple[str, ...]] | None = None, subsets: tuple[int, ...] = ()
) -> Path:
    """One store per feature preset holding the five takes, with one manifest index per fold
    (fold{i}: take i is val, the others train; fold{i}u: and the audio-only takes;
    fold{i}-NAME: with the audio variants augmented[NAME] of the training takes; fold{i}-tN:
    take i and the first N training takes only, for N in subsets). A second call computes
    nothing."""
    from blendsync.featurize.audio_variants import parse_variants
    from blendsync.featurize.extract import extract
    from blendsync.shared.config import FEATURE_PRESETS, FeatureConfig

    d = custom_rig()
    base = FEATURE_PRESETS[features].to_dict()
    cfg = FeatureConfig.from_dict({**base, "targets": {"channels_file": str(d / "channel_names.txt")}})
    store = cache / f"rig-{features}.zarr"
    unlabelled = [f"{p},,,train,{p.stem}" for p in sorted((d / "unlabeled").glob("*.wav"))]
    for i in range(len(TAKES)):
        rows = [
            f"{d / f'{t}.wav'},{d / f'bs_value_{t}.npy'},30,{'val' if j == i else 'train'},{t}"
            for j, t in enumerate(TAKES)
        ]
        everything = set(TAKES)
        indexes = [(f"fold{i}", [], (), everything), (f"fold{i}u", unlabelled, (), everything)]
        indexes += [(f"fold{i}-{n}", [], parse_variants(a), everything) for n, a in (augmented or {}).items()]
        indexes += [(f"fold{i}-t{n}", [], (), {TAKES[i], *training_takes(i, n)}) for n in subsets]
        for name, extra, variants, takes in indexes:
            man = cache / f"{name}.csv"
            kept = [r for r, t in zip(rows, TAKES, strict=True) if t in takes]
            man.write_text("audio,targets,targets_fps,split,id\n" + "\n".join(kept + extra) + "\n")
            res = extract(man, store, cfg, executor="serial", index_name=name, augment=variants)
            assert res.ok, res
    return store


def train_config(variant: Variant, seed: int, extra: dict, max_steps: int):
    from blendsync.train.core.config import ConfigOverrides, TrainConfig

    values = {**variant.settings, **extra, "seed": seed, "optim.epochs": 100000}
    if max_steps:
        values["optim.max_steps"] = max_steps
        values["validation.every_steps"] = max(1, max_steps // VALIDATIONS)
    cfg, _ = ConfigOverrides(preset=variant.preset, values=values).resolve(TrainConfig(), "cpu")
    return cfg


def run_fold(job: dict) -> dict:
    """One fold of one variant, in its own process with one torch thread."""
    import torch

    torch.set_num_threads(1)
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from cpu_budget import CpuBudget

    from blendsync.train.loop.evaluation import evaluate_checkpoint
    from blendsync.train.loop.trainer import fit

    variant, store, out, fold = Variant(**job["variant"]), Path(job["store"]), Path(job["out"]), job["fold"]
    manifest = (
        f"fold{fold}u" if variant.teacher
        else f"fold{fold}-{job['name']}" if variant.augment
        else f"fold{fold}-t{variant.train_takes}" if variant.train_takes
        else f"fold{fold}"
    )  # fmt: skip
    teacher = job.get("teacher")
    init_from, pretrain_cpu = pretrained(job.get("pretrain"))
    # Probe: CPU seconds per optimiser step of this variant on this fold.
    marks: list[float] = []
    probe_cfg = train_config(variant, job["seed"], job["extra"], 1000)
    fit(store, cfg=probe_cfg, out=out / "probe", manifest=manifest, stop_after_steps=PROBE_STEPS,
        on_step=lambda rec: marks.append(time.process_time()) and False, teacher=teacher,
        init_from=init_from)  # fmt: skip
    per_step = (marks[-1] - marks[1]) / (len(marks) - 2)
    max_steps = max(VALIDATIONS, int(job["budget"] / per_step))
    cfg = train_config(variant, job["seed"], job["extra"], max_steps)
    budget = CpuBudget()
    t0 = time.perf_counter()
    r = fit(store, cfg=cfg, out=out / "run", manifest=manifest, on_step=budget.until(job["budget"] * 1.1),
            teacher=teacher, init_from=init_from)  # fmt: skip
    wall = time.perf_counter() - t0
    ev = evaluate_checkpoint(out / "run" / "checkpoints" / "best.pt", store, manifest=f"fold{fold}", split="val")
    m = ev["metrics"]
    return {
        "variant": job["name"],
        "fold": fold,
        "held_out": TAKES[fold],
        "train_minutes": round(job["train_minutes"], 2),
        "seed": job["seed"],
        "cpu_s": round(budget.used, 1),
        "wall_s": round(wall, 1),
        "cpu_s_per_step": round(per_step, 4),
        "steps": r.step,
        "max_steps": max_steps,
        "skill": m["skill"],
        # skill's baseline is the run's own training mean: data_size_rows compares runs trained on
        # different takes by mse against one baseline per fold.
        "mse": m["mse"],
        "mse_mean_predictor": m["mse_mean_predictor"],
        "mean_r": m["mean_r"],
        "amplitude_ratio": m["amplitude_ratio"],
        "active_channels": m["active_channels"],
        **({"pretrain_cpu_s": pretrain_cpu} if pretrain_cpu else {}),
    }


def pretrain_fold(job: dict) -> float:
    """bstrain pretrain on the fold's training takes and the audio-only takes (manifest
    fold{i}u), once per fold and step count, shared by every variant that starts from it.
    Returns its process CPU-s (not charged to the runs)."""
    import torch

    torch.set_num_threads(1)
    from blendsync.train.loop.pretrain import PretrainConfig, pretrain

    out, steps = Path(job["out"]), job["steps"]
    if (out / "cpu_s.json").exists():
        return json.loads((out / "cpu_s.json").read_text())
    c0 = time.process_time()
    cfg = train_config(Variant(), job["seed"], job["extra"], 0)
    settings = PretrainConfig(steps=steps, checkpoint_every=max(1, steps // 4))
    pretrain(Path(job["store"]), cfg=cfg, out=out, settings=settings, manifest=f"fold{job['fold']}u")
    cpu = round(time.process_time() - c0, 1)
    (out / "cpu_s.json").write_text(json.dumps(cpu))
    return cpu


def pretrained(folder: str | None):
    """(InitFrom of the fold's pretraining run's last.pt, its CPU-s), or (None, 0.0)."""
    if folder is None:
        return None, 0.0
    from blendsync.train.loop.finetune import InitFrom

    folder = Path(folder)
    return InitFrom.load(folder / "checkpoints" / "last.pt"), json.loads((folder / "cpu_s.json").read_text())


def summary(rows: list[dict], key: str) -> str:
    vals = [r[key] for r in rows if r[key] is not None]
    if not vals:
        return "n/a"
    return f"{statistics.mean(vals):.3f} ({min(vals):.3f}..{max(vals):.3f})"


def parse_settings(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep:
            raise SystemExit(f"--set {p!r}: expected KEY=VALUE")
        out[k.strip()] = yaml.safe_load(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-cpu-s", type=float, default=300.0)
    ap.add_argument("--quick", action="store_true", help="75 CPU-s per run (screening)")
    ap.add_argument("--variants", default="default,live")
    ap.add_argument("--folds", default="0,1,2,3,4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "blendsync-bench-quality")
    ap.add_argument("--runs", type=Path, default=None, help="Run folders (default: a new folder in --cache).")
    ap.add_argument("--reuse", type=Path, default=None, help="Take the rows of this earlier --json as run.")
    ap.add_argument("--json", type=Path, default=None, help="Write every fold's row here.")
    args = ap.parse_args()
    budget = 75.0 if args.quick else args.budget_cpu_s
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    teachers = [t for n in names if (t := VARIANTS[n].teacher) and t not in names]
    needed = list(dict.fromkeys(teachers + names))  # teachers first, each once
    folds = [int(f) for f in args.folds.split(",")]
    extra = parse_settings(args.settings)
    args.cache.mkdir(parents=True, exist_ok=True)
    stores = {}
    for f in dict.fromkeys(VARIANTS[n].features for n in needed):
        mine = [VARIANTS[n] for n in needed if VARIANTS[n].features == f]
        augmented = {n: VARIANTS[n].augment for n in needed if VARIANTS[n].features == f and VARIANTS[n].augment}
        subsets = tuple(sorted({v.train_takes for v in mine if v.train_takes}))
        t0 = time.perf_counter()
        stores[f] = make_store(args.cache, f, augmented, subsets)
        print(f"store {stores[f]} ({f} features) ready in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = reused_rows(args.reuse, budget, extra, needed, folds) if args.reuse else []
    done = {(r["variant"], r["fold"]) for r in rows}
    runs = args.runs or Path(tempfile.mkdtemp(prefix="bench-quality-", dir=args.cache))

    def job(n: str, f: int) -> dict:
        v = VARIANTS[n]
        teacher = None if v.teacher is None else str(runs / f"{v.teacher}-fold{f}" / "run" / "checkpoints" / "best.pt")
        pretrain = str(runs / f"pretrain{v.pretrain_steps}-fold{f}") if v.pretrain_steps else None
        return {"name": n, "variant": v.__dict__, "store": str(stores[v.features]), "fold": f,
                "out": str(runs / f"{n}-fold{f}"), "seed": args.seed, "budget": budget, "extra": extra,
                "teacher": teacher, "pretrain": pretrain,
                "train_minutes": take_minutes(training_takes(f, v.train_takes))}  # fmt: skip

    todo = [(n, f) for f in folds for n in needed if (n, f) not in done]
    pretraining = {
        (VARIANTS[n].pretrain_steps, f): {"out": str(runs / f"pretrain{VARIANTS[n].pretrain_steps}-fold{f}"),
            "steps": VARIANTS[n].pretrain_steps, "fold": f, "store": str(stores[VARIANTS[n].features]),
            "seed": args.seed, "extra": extra}
        for n, f in todo if VARIANTS[n].pretrain_steps
    }  # fmt: skip
    phases = [
        [job(n, f) for n, f in todo if not VARIANTS[n].teacher],
        [job(n, f) for n, f in todo if VARIANTS[n].teacher],
    ]
    print(f"{len(todo)} runs of {budget:g} CPU-s in {runs}, {args.jobs} at once, one torch thread each "
          f"({len(rows)} rows reused); extra settings {extra}")  # fmt: skip
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        for (steps, f), cpu in zip(pretraining, pool.map(pretrain_fold, pretraining.values()), strict=True):
            print(f"  pretrained {steps} steps for fold {f} in {cpu:.0f} CPU-s (not charged to the runs)", flush=True)
        for phase in phases:  # students after their teachers
            for row in pool.map(run_fold, phase):
                rows.append(row)
                print(
                    f"  {row['variant']:>14} fold {row['fold']} ({row['held_out']}): skill {row['skill']:+.3f}, "
                    f"mean r {row['mean_r']:.3f}, amplitude {row['amplitude_ratio']:.3f}; {row['steps']} steps, "
                    f"{row['cpu_s']:.0f} CPU-s, {row['wall_s']:.0f} s",
                    flush=True,
                )
    print_table(rows, needed, budget, args.seed, folds)
    if args.json:
        args.json.write_text(json.dumps({"budget_cpu_s": budget, "extra": extra, "rows": rows}, indent=1))


def reused_rows(path: Path, budget: float, extra: dict, names: list[str], folds: list[int]) -> list[dict]:
    earlier = json.loads(path.read_text())
    if earlier["budget_cpu_s"] != budget or earlier["extra"] != extra:
        raise SystemExit(f"--reuse {path}: its runs had {earlier['budget_cpu_s']:g} CPU-s and {earlier['extra']}")
    return [r for r in earlier["rows"] if r["variant"] in names and r["fold"] in folds]


def print_table(rows: list[dict], names: list[str], budget: float, seed: int, folds: list[int]) -> None:
    print(f"\nleave-one-take-out, {budget:g} CPU-s per run, seed {seed}: mean (min..max) over {len(folds)} folds")
    print("| variant | skill | mean r | amplitude ratio | steps |")
    print("|---|---|---|---|---|")
    base = [r for r in rows if r["variant"] == names[0]]
    for n in names:
        rs = [r for r in rows if r["variant"] == n]
        print(f"| {n} | {summary(rs, 'skill')} | {summary(rs, 'mean_r')} | {summary(rs, 'amplitude_ratio')} | "
              f"{statistics.mean(r['steps'] for r in rs):.0f} |")  # fmt: skip
        if n != names[0]:
            ratio = statistics.mean(r["skill"] for r in rs) / statistics.mean(r["skill"] for r in base)
            wins = sum(a["skill"] > b["skill"] for a in rs for b in base if a["fold"] == b["fold"])
            print(f"|   {n} / {names[0]} skill | {ratio:.2f}x, better on {wins} of {len(rs)} folds | | | |")


if __name__ == "__main__":
    main()
