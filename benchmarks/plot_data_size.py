#!/usr/bin/env python3
"""How much data: skill and amplitude against minutes of captured takes, with and without the
rest of the speaker's speech, drawn from bench_quality.py's --json rows.

bench_quality's variants takes1..takes3 train on the fold's first 1..3 captured takes, default
on all four; takesN-pretrained and pretrained start from encoders pretrained (bstrain pretrain)
on the fold's four captured takes' audio and the 19 audio-only takes. Every row is one fold
(the held-out take scored by the run's best.pt at the same CPU budget).

    python benchmarks/plot_data_size.py rows.json [more.json ...] --out docs/img/how-much-data.png

Skill here is against one baseline per fold, the mean of the fold's four captured takes (the
default run's mean predictor on the held-out take): bstrain evaluate's skill compares a run
with its own training mean, which a run on one take has far from the held-out take's, so its
skill would look better for knowing less. Rows without mse (older --json files) are evaluated
again from their run's best.pt in --runs. Prints the table (mean (min..max) over folds) and
writes the plot: means joined by lines, each fold a dot.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_quality import VARIANTS, take_minutes, training_takes  # noqa: E402

KEYS = ("mse", "mse_mean_predictor", "skill", "mean_r", "amplitude_ratio")

SERIES = {False: "captured takes only", True: "+ pretraining on the rest of the speech"}


def amount_of_data(name: str) -> bool:
    """A variant of the data-size series: default features and settings, captured takes only or
    pretrained on the rest."""
    v = VARIANTS.get(name)
    return v is not None and not (v.settings or v.augment or v.teacher or v.features != "default")


def with_mse(rows: list[dict], runs: Path, store: Path) -> list[dict]:
    """Rows with mse and mse_mean_predictor, evaluating their run's best.pt again where missing."""
    from blendsync.train.loop.evaluation import evaluate_checkpoint

    out = []
    for r in rows:
        if "mse" not in r:
            ckpt = runs / f"{r['variant']}-fold{r['fold']}" / "run" / "checkpoints" / "best.pt"
            m = evaluate_checkpoint(ckpt, store, manifest=f"fold{r['fold']}", split="val")["metrics"]
            if abs(m["skill"] - r["skill"]) > 1e-4:
                raise SystemExit(f"{ckpt}: skill {m['skill']:.4f} now, {r['skill']:.4f} in the rows: another run?")
            r = {**r, **{k: m[k] for k in KEYS}}
        out.append(r)
    return out


def points(rows: list[dict]) -> dict[tuple[bool, int], list[dict]]:
    """(pretrained?, takes) -> the folds' rows of that amount of data, each with skill against the
    fold's four-take mean (common_skill)."""
    base = {r["fold"]: r["mse_mean_predictor"] for r in rows if r["variant"] == "default"}
    out: dict[tuple[bool, int], dict[int, dict]] = {}
    for r in rows:
        v = VARIANTS.get(r["variant"])
        if not amount_of_data(r["variant"]) or r["fold"] not in base:
            continue
        takes = v.train_takes or 4
        minutes = r.get("train_minutes") or take_minutes(training_takes(r["fold"], v.train_takes))
        common = 1 - r["mse"] / base[r["fold"]]
        out.setdefault((bool(v.pretrain_steps), takes), {})[r["fold"]] = {
            **r,
            "train_minutes": minutes,
            "common_skill": common,
        }
    return {k: [f[i] for i in sorted(f)] for k, f in sorted(out.items())}


def span(vals: list[float]) -> str:
    return f"{statistics.mean(vals):.3f} ({min(vals):.3f}..{max(vals):.3f})"


def table(pts: dict[tuple[bool, int], list[dict]]) -> str:
    lines = [
        "| captured takes | minutes (folds' mean) | pretrained on the rest | skill (the fold's 4-take mean as "
        "baseline) | amplitude ratio | mean r | skill (own training mean, as evaluate) | folds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (pre, n), rs in pts.items():
        minutes = statistics.mean(r["train_minutes"] for r in rs)
        lines.append(
            f"| {n} | {minutes:.1f} | {'yes' if pre else 'no'} | {span([r['common_skill'] for r in rs])} | "
            f"{span([r['amplitude_ratio'] for r in rs])} | {span([r['mean_r'] for r in rs])} | "
            f"{span([r['skill'] for r in rs])} | {len(rs)} |"
        )
    return "\n".join(lines)


def plot(pts: dict[tuple[bool, int], list[dict]], out: Path, budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    for ax, key, label in ((axes[0], "common_skill", "skill (vs the fold's 4-take mean)"),
                           (axes[1], "amplitude_ratio", "amplitude ratio (1 = the actor's motion)")):  # fmt: skip
        for pre, colour in ((False, "tab:blue"), (True, "tab:orange")):
            series = [(n, rs) for (p, n), rs in pts.items() if p == pre]
            if not series:
                continue
            xs = [statistics.mean(r["train_minutes"] for r in rs) for _, rs in series]
            ax.plot(xs, [statistics.mean(r[key] for r in rs) for _, rs in series], "-o", color=colour,
                    label=SERIES[pre])  # fmt: skip
            for _, rs in series:
                ax.plot([r["train_minutes"] for r in rs], [r[key] for r in rs], ".", color=colour, alpha=0.35)
        ax.set_xlabel("minutes of captured takes trained on")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Custom-rig speaker, leave one take out, {budget:g} CPU-s a run (dots: folds)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="+", type=Path, help="bench_quality.py --json files (same budget).")
    ap.add_argument("--out", type=Path, default=Path("how-much-data.png"))
    cache = Path(tempfile.gettempdir()) / "blendsync-bench-quality"
    ap.add_argument("--cache", type=Path, default=cache, help="bench_quality's --cache (its store).")
    ap.add_argument("--runs", type=Path, default=None, help="bench_quality's --runs (for rows without mse).")
    args = ap.parse_args()
    runs = [json.loads(p.read_text()) for p in args.json]
    budgets = {r["budget_cpu_s"] for r in runs}
    if len(budgets) != 1 or any(r["extra"] for r in runs):
        raise SystemExit(f"the files' runs differ: budgets {sorted(budgets)}, settings {[r['extra'] for r in runs]}")
    rows = [row for r in runs for row in r["rows"] if amount_of_data(row["variant"])]
    if any("mse" not in r for r in rows):
        if args.runs is None:
            raise SystemExit("rows without mse: give --runs, the folder their runs are in")
        rows = with_mse(rows, args.runs, args.cache / "rig-default.zarr")
    pts = points(rows)
    print(table(pts))
    plot(pts, args.out, budgets.pop())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
