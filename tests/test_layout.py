"""The package's rooms and which way imports go between them, read from the source, so that a
stray import or an overfull folder fails here rather than in a review.

    shared  <-  featurize
    shared  <-  train.core  <-  train.inference  <-  train.serve
                                                 <-  train.loop (a teacher animates speech)
                (train.cli over all of train)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Folder -> the import name it installs as (pyproject's package-dir).
PACKAGES = {"shared": "blendsync.shared", "featurize": "blendsync.featurize", "train": "blendsync.train"}
# Each package -> what it must never import (at any depth of any of its modules).
FORBIDDEN = {
    "blendsync.shared": ("blendsync.train", "blendsync.featurize"),
    "blendsync.featurize": ("blendsync.train",),
    "blendsync.train": ("blendsync.featurize",),
    "blendsync.train.core": ("blendsync.train.loop", "blendsync.train.inference", "blendsync.train.cli"),
    "blendsync.train.loop": ("blendsync.train.cli", "blendsync.train.serve"),
    "blendsync.train.inference": ("blendsync.train.loop", "blendsync.train.cli", "blendsync.train.serve"),
    "blendsync.train.serve": ("blendsync.train.loop", "blendsync.train.cli"),
}
MAX_MODULES_PER_FOLDER = 15


def modules() -> dict[str, Path]:
    """Every module of the package by its import name."""
    out = {}
    for folder, name in PACKAGES.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join((name, *parts))] = path
    return out


def imported(path: Path) -> set[str]:
    """The blendsync modules a file imports, at any depth."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("blendsync"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("blendsync")}
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_one_way(package):
    bad = {
        f"{name}: {m}"
        for name, path in modules().items()
        if name == package or name.startswith(package + ".")
        for m in imported(path)
        if m.startswith(FORBIDDEN[package])
    }
    assert bad == set()


def test_no_folder_holds_more_than_15_modules():
    crowded = {}
    for folder in PACKAGES:
        for d in [REPO / folder, *(p for p in (REPO / folder).rglob("*") if p.is_dir() and p.name != "__pycache__")]:
            n = len([p for p in d.glob("*.py") if p.name != "__init__.py"])
            if n > MAX_MODULES_PER_FOLDER:
                crowded[str(d.relative_to(REPO))] = n
    assert crowded == {}


def test_no_import_cycles():
    """Imports inside functions count too: two modules that need each other are one module, or
    a third above both is missing."""
    mods = modules()
    graph = {name: {m for m in imported(path) if m in mods and m != name} for name, path in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:  # trail: the path here, node last
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_rules_see_every_room():
    """The checks above walk real folders: a renamed room would otherwise pass them vacuously."""
    names = set(modules())
    for package in FORBIDDEN:
        assert package in names
    assert {
        "blendsync.train.core.checkpoint",
        "blendsync.train.loop.trainer",
        "blendsync.train.inference.predict",
    } <= names


def test_records_of_more_than_four_fields_are_built_by_keyword():
    """A record of many fields built by position breaks silently when a field is added or two
    are swapped: every dataclass of the package with more than 4 fields is keyword-only."""
    import dataclasses
    import importlib
    import inspect

    positional = {}
    for name in modules():
        if name.endswith("__main__"):
            continue
        for obj in vars(importlib.import_module(name)).values():
            if (
                inspect.isclass(obj)
                and dataclasses.is_dataclass(obj)
                and obj.__module__ == name
                and len(dataclasses.fields(obj)) > 4
            ):
                free = [f.name for f in dataclasses.fields(obj) if not f.kw_only]
                if free:
                    positional[f"{name}.{obj.__name__}"] = free
    assert positional == {}
