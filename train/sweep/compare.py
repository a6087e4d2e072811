"""bstrain compare: runs side by side, from what their folders hold (config.json, metrics.jsonl,
a sweep trial's trial.json), as one table whose columns are the validation figures at each
run's best validation, its cost, and the config keys that differ between the runs.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blendsync.train.core.config import VALIDATION_METRICS
from blendsync.train.sweep.study import SWEEP_FILE, trial_folders
from blendsync.train.sweep.trial import TRIAL_FILE

FIGURES = ("skill", "mean_r", "amplitude_ratio", "val_loss", "best_step", "steps", "cpu_s", "wall_s")
SORTS = ("skill", "mean_r", "val_loss", "cpu_s", "none")


class CompareError(ValueError):
    """A path that is neither a run folder nor a sweep folder."""


@dataclass(kw_only=True)
class RunSummary:
    name: str
    path: Path
    config: dict  # the run's train config (config.json's train_config)
    state: str  # complete | pruned | fail | running (a sweep trial's), or "run"
    figures: dict  # FIGURES -> value or None
    curve: list[dict] = field(default_factory=list)  # [{"step", "cpu_s", "skill", ...}] per validation
    sweep: Path | None = None


def collect(paths: list[str | Path], problems: list[str] | None = None) -> list[RunSummary]:
    """Run folders as given; a sweep folder stands for its trials, by number. problems: where
    a run whose files cannot be read is named (one line each) while the others are listed;
    None: the first such run raises CompareError."""
    runs = []
    for p in dict.fromkeys(Path(x).resolve() for x in paths):  # a folder given twice is listed once
        p = next(Path(x) for x in paths if Path(x).resolve() == p)
        if (p / SWEEP_FILE).is_file():
            trials = list(trial_folders(p))
            if not trials:
                raise CompareError(f"{p}: a sweep without trial runs yet")
            runs += _summaries([(t, f"{p.name}/{t.name}") for t in trials], p, problems)
        elif (p / "config.json").is_file():
            runs += _summaries([(p, str(p))], None, problems)
        else:
            raise CompareError(f"{p}: not a run folder (no config.json) or a sweep folder (no {SWEEP_FILE})")
    if not runs:
        raise CompareError("no run could be read: " + "; ".join(problems or []))
    return runs


def _summaries(folders: list[tuple[Path, str]], sweep: Path | None, problems: list[str] | None) -> list[RunSummary]:
    out = []
    for folder, name in folders:
        try:
            out.append(summarize(folder, name=name, sweep=sweep))
        except CompareError as e:
            if problems is None:
                raise
            problems.append(str(e))
    return out


def summarize(run_dir: Path, *, name: str, sweep: Path | None = None) -> RunSummary:
    trial = _json(run_dir / TRIAL_FILE) if (run_dir / TRIAL_FILE).is_file() else None
    folds = _fold_runs(run_dir) if trial is not None else []
    if folds:
        return _across_folds(folds, trial, name, run_dir, sweep)
    if not (run_dir / "config.json").is_file() and trial is not None:  # a trial that failed before training
        config = {"sweep_settings": trial.get("settings", {})}
    else:
        config = _json(run_dir / "config.json").get("train_config")
        if not isinstance(config, dict):
            raise CompareError(f"{run_dir}/config.json: holds no train_config")
    records = _records(run_dir / "metrics.jsonl")
    vals = [r for r in records if r.get("kind") == "val"]
    metric = config.get("validation", {}).get("metric", "skill")
    best = _best(vals, metric)
    m = best.get("metrics", {}) if best else {}
    last = records[-1] if records else {}
    figures = {
        "skill": _num(m.get("skill")),
        "mean_r": _num(m.get("mean_r")),
        "amplitude_ratio": _num(m.get("amplitude_ratio")),
        "val_loss": _num(best.get("loss")) if best else None,
        "best_step": _num(best.get("step")) if best else None,
        "steps": max((_num(r.get("step")) or 0 for r in records), default=0),
        "cpu_s": _num(last.get("cpu_s")),
        "wall_s": _num(last.get("wall_s")),
    }
    curve = [
        {"step": r["step"], "cpu_s": _num(r.get("cpu_s")), "loss": _num(r.get("loss")),
         **{k: _num(v) for k, v in r.get("metrics", {}).items()}}
        for r in vals
        if _num(r.get("step")) is not None
    ]  # fmt: skip
    state = trial["state"] if trial else ("run" if records else "empty")
    return RunSummary(name=name, path=run_dir, config=config, state=state, figures=figures, curve=curve, sweep=sweep)


def _fold_runs(run_dir: Path) -> list[Path]:
    """A cross-validated trial's fold run folders (fold0, fold1, ...), in fold order."""
    found = [p for p in run_dir.glob("fold*") if p.name[4:].isdigit() and (p / "config.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[4:]))


def _across_folds(folds: list[Path], trial: dict, name: str, run_dir: Path, sweep: Path | None) -> RunSummary:
    """A cross-validated trial as one row: each figure the mean of its folds' (at each fold's
    best), steps summed, CPU and wall seconds the trial's; the curve is the first fold's."""
    parts = [summarize(f, name=f"{name}/{f.name}") for f in folds]
    figures = {}
    for k in ("skill", "mean_r", "amplitude_ratio", "val_loss"):
        vals = [p.figures[k] for p in parts]
        figures[k] = None if any(v is None for v in vals) else sum(vals) / len(vals)
    figures |= {
        "best_step": None,
        "steps": sum(p.figures["steps"] or 0 for p in parts),
        "cpu_s": _num(trial.get("cpu_s")),
        "wall_s": _num(trial.get("wall_s")),
    }
    return RunSummary(name=name, path=run_dir, config=parts[0].config, state=trial.get("state", "run"),
                      figures=figures, curve=parts[0].curve, sweep=sweep)  # fmt: skip


def _json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise CompareError(f"{path}: unreadable ({e})") from None
    except RecursionError:
        raise CompareError(f"{path}: unreadable (nested too deeply)") from None
    if not isinstance(d, dict):
        raise CompareError(f"{path}: not a JSON object")
    return d


def _records(path: Path) -> list[dict]:
    """The JSON objects of a metrics.jsonl, one a line: a line cut by a kill mid-write, or one
    that is not an object, is passed over; a file that is not text is refused (CompareError)."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CompareError(f"{path}: unreadable ({e})") from None
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # a line cut by a kill mid-write, or no record
            continue
        if isinstance(record, dict) and isinstance(record.get("metrics", {}), dict):
            out.append(record)
    return out


def _num(v: Any) -> float | int | None:
    """A figure from a run's files: a finite number, or None (whatever else a line holds)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return v


def _best(vals: list[dict], metric: str) -> dict | None:
    """The validation best.pt kept: the first best value of the run's metric."""
    best, best_v = None, None
    sign = 1 if VALIDATION_METRICS.get(metric, "max") == "max" else -1
    for r in vals:
        v = _num(r.get("loss") if metric == "loss" else r.get("metrics", {}).get(metric))
        if v is not None and (best_v is None or sign * v > sign * best_v):
            best, best_v = r, v
    return best


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def differing_keys(runs: list[RunSummary]) -> list[str]:
    """Config keys whose values are not the same in every run (a key one run lacks counts)."""
    flats = [flatten(r.config) for r in runs]
    keys = sorted(set().union(*flats)) if flats else []
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]


def table(runs: list[RunSummary], sort: str = "none") -> tuple[list[str], list[dict]]:
    """(column names, one row per run): run, state, FIGURES, then the differing keys."""
    keys = differing_keys(runs)
    rows = []
    for r in runs:
        flat = flatten(r.config)
        # _run: the summary itself (names may repeat: the same folder twice, two sweeps' 0000)
        rows.append({"run": r.name, "state": r.state, **r.figures, **{k: flat.get(k) for k in keys}, "_run": r})
    if sort != "none":
        better_high = sort in ("skill", "mean_r")
        present = [x for x in rows if x[sort] is not None]
        missing = [x for x in rows if x[sort] is None]
        rows = sorted(present, key=lambda x: x[sort], reverse=better_high) + missing
    return ["run", "state", *FIGURES, *keys], rows


def as_text(columns: list[str], rows: list[dict]) -> str:
    cells = [columns] + [[cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def as_csv(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({c: "" if row[c] is None else row[c] for c in columns})
    return buf.getvalue()


def as_json(columns: list[str], rows: list[dict]) -> str:
    return json.dumps(
        {
            "columns": columns,
            "differing_keys": columns[2 + len(FIGURES) :],
            "runs": [
                {**{c: row[c] for c in columns}, "path": str(row["_run"].path), "curve": row["_run"].curve}
                for row in rows
            ],
        },
        indent=2,
    )


def cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)
