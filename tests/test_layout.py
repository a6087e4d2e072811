"""Which way imports go: shared <- featurize, shared <- train; inference does not import the
trainer. Read from the source, so a stray import fails here rather than in a review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Modules a trained model is used through: they load checkpoints and run the model only.
INFERENCE = ("predict", "export", "chunked", "livelink", "preview")
TRAINING_ONLY = ("trainer", "evaluation", "streaming", "step", "losses", "diagnostics", "distributed")


def imported(path: Path) -> set[str]:
    """Every blendsync module a file imports, at any depth of the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("blendsync"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("blendsync")}
    return out


@pytest.mark.parametrize("folder,forbidden", [("shared", ("blendsync.train", "blendsync.featurize")),
                                              ("featurize", ("blendsync.train",)),
                                              ("train", ("blendsync.featurize",))])
def test_imports_go_one_way(folder, forbidden):
    bad = {f"{p.name}: {m}" for p in (REPO / folder).glob("*.py") for m in imported(p) if m.startswith(forbidden)}
    assert bad == set()


def test_inference_modules_do_not_import_the_training_loop():
    bad = {f"{name}: {m}" for name in INFERENCE for m in imported(REPO / "train" / f"{name}.py")
           if m.removeprefix("blendsync.train.").split(".")[0] in TRAINING_ONLY}
    assert bad == set()
