"""bstrain compare's pictures: validation skill against CPU seconds and against steps (a line
per run), and for a sweep Optuna's parameter importances and optimisation history; and one
self-contained HTML page (the table and the PNGs inlined, nothing fetched)."""

from __future__ import annotations

import base64
import html
import logging
import warnings
from pathlib import Path

from blendsync.shared.files import write_atomically, written_atomically
from blendsync.train.core.plots import _plt
from blendsync.train.sweep.compare import RunSummary, as_csv, cell

log = logging.getLogger(__name__)


def write_plots(runs: list[RunSummary], folder: Path, metric: str = "skill") -> list[Path]:
    """The PNGs this set of runs allows (a sweep's need two finished trials), their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for x, label in (("cpu_s", "CPU seconds"), ("step", "optimiser steps")):
        if any(c.get(x) is not None and c.get(metric) is not None for r in runs for c in r.curve):
            path = folder / f"{metric}_vs_{'cpu' if x == 'cpu_s' else 'steps'}.png"
            _curves(runs, x, label, metric, path)
            written.append(path)
    sweeps = list(dict.fromkeys(r.sweep for r in runs if r.sweep is not None))
    names = [s.name for s in sweeps]
    for i, sweep in enumerate(sweeps):
        written += _sweep_plots(sweep, folder, sweep.name if names.count(sweep.name) == 1 else f"{sweep.name}-{i}")
    return written


def _curves(runs: list[RunSummary], x: str, label: str, metric: str, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for r in runs:
        pts = [(c[x], c[metric]) for c in r.curve if c.get(x) is not None and c.get(metric) is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", ms=3, lw=1, label=r.name)
    ax.set_xlabel(label)
    ax.set_ylabel(f"validation {metric}")
    ax.grid(alpha=0.3)
    if len(runs) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    with written_atomically(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _sweep_plots(sweep: Path, folder: Path, name: str) -> list[Path]:
    import optuna

    from blendsync.train.sweep.study import load_sweep
    from blendsync.train.sweep.trial import open_storage, storage_problem

    try:
        _, meta = load_sweep(sweep)
    except (OSError, ValueError, KeyError, TypeError) as e:  # the table does not need it; the plots do
        log.warning("%s: no study plots: its sweep record cannot be read (%s)", sweep, e)
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=meta["study"], storage=open_storage(meta["storage"]))
    except Exception as e:  # noqa: BLE001 (an unreachable database costs the sweep's plots, not the table)
        log.warning(
            "%s: no study plots: its study cannot be read from %s (%s)", sweep, meta["storage"], storage_problem(e)
        )
        return []
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    written = []
    plots = {"history": optuna.visualization.matplotlib.plot_optimization_history}
    if len(complete) >= 2 and len({str(t.params) for t in complete}) >= 2:
        plots["importances"] = optuna.visualization.matplotlib.plot_param_importances
    else:
        log.warning("%s: parameter importances need two finished trials with different parameters", sweep)
    plt = _plt()
    for kind, plot in plots.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as e:
                log.warning("%s: no %s plot: %s", sweep, kind, e)
                continue
        fig = ax.figure
        fig.set_size_inches(8, 4.8)
        fig.tight_layout()
        path = folder / f"{name}-{kind}.png"
        with written_atomically(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        written.append(path)
    return written


def write_html(path: Path, columns: list[str], rows: list[dict], pngs: list[Path], title: str) -> None:
    """One page: the table, then every plot inlined as a data URI."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(row[c]))}</td>" for c in columns) + "</tr>" for row in rows)
    images = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{html.escape(p.stem)}</figcaption></figure>'
        for p in pngs
    )
    csv_link = base64.b64encode(as_csv(columns, rows).encode()).decode()
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-variant-numeric: tabular-nums; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; white-space: nowrap; }}
th {{ background: #f3f3f3; }} td:first-child, td:nth-child(2) {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em 1em 0 0; }} img {{ max-width: 800px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(rows)} run(s); figures at each run's best validation; the config keys that differ between the runs follow
them. <a download="compare.csv" href="data:text/csv;base64,{csv_link}">CSV</a></p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{images}
</body></html>
"""
    write_atomically(path, page)
