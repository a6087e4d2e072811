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
