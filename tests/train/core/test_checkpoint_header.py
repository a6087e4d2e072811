"""A checkpoint's feature config read ahead without torch."""

from __future__ import annotations

import subprocess
import sys

from blendsync.train.core.checkpoint import Checkpoint
from blendsync.train.core.checkpoint_header import peek_feature_config
from tests.helpers import REPO


def test_the_feature_config_read_ahead_is_the_checkpoints(checkpoint):
    assert peek_feature_config(checkpoint) == Checkpoint.load(checkpoint).feature_config


def test_reading_ahead_imports_no_torch_and_runs_nothing_of_the_file(checkpoint):
    code = (
        "import sys\n"
        "from blendsync.train.core.checkpoint_header import peek_feature_config\n"
        f"assert peek_feature_config({str(checkpoint)!r}) is not None\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_anything_else_reads_ahead_as_nothing(checkpoint, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    assert peek_feature_config(junk) is None
    assert peek_feature_config(tmp_path / "missing.pt") is None
    cut = tmp_path / "cut.pt"
    cut.write_bytes(checkpoint.read_bytes()[:4000])
    assert peek_feature_config(cut) is None
