"""The code's format and lint (ruff, configured in pyproject.toml), checked like any test so
that a fresh clone's suite fails on code that would not pass review."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True)


def test_ruff_lint_passes():
    r = _ruff("check", "--output-format", "concise", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_leaves_every_file_as_it_is():
    r = _ruff("format", "--check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


MAX_FUNCTION_LINES = 80


def test_no_function_of_the_package_is_over_80_lines():
    """A function past a screen does several jobs: its parts get names of their own. Counted
    from its def to its last line (its decorators, a click command's options, apart)."""
    import ast

    long = {}
    for folder in ("shared", "featurize", "train"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long[f"{path.relative_to(REPO)}:{node.lineno} {node.name}"] = lines
    assert long == {}
