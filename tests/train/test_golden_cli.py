"""A tiny `bstrain fit` through the command line logs the losses recorded in
golden/cli_reference.json (regenerate with golden/make_cli_reference.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

from tests.helpers import assert_close_nested

GOLDEN = Path(__file__).with_name("golden")


def test_a_tiny_cli_run_logs_the_golden_losses():
    spec = importlib.util.spec_from_file_location("make_cli_reference", GOLDEN / "make_cli_reference.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    want = json.loads((GOLDEN / "cli_reference.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the golden values were written
    try:
        assert_close_nested(ref.cli_run(), want["fit"], "fit")
    finally:
        torch.set_num_threads(threads)
