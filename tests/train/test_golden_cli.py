"""A tiny `bstrain fit` through the command line logs the losses recorded in
golden/cli_reference.json (regenerate with golden/make_cli_reference.py)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch

GOLDEN = Path(__file__).with_name("golden")


def _close(got, want, path=""):
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for k in want:
            _close(got[k], want[k], f"{path}/{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-7), (path, got, want)
    else:
        assert got == want, (path, got, want)


def test_a_tiny_cli_run_logs_the_golden_losses():
    spec = importlib.util.spec_from_file_location("make_cli_reference", GOLDEN / "make_cli_reference.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    want = json.loads((GOLDEN / "cli_reference.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the golden values were written
    try:
        _close(ref.cli_run(), want["fit"])
    finally:
        torch.set_num_threads(threads)
