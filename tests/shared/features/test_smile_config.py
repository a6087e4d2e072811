"""The feature set's config without the components no functional row depends on
(shared.features.smile_config). That its rows are the opensmile package's, bit for bit, is
tested in test_smile.py (Functionals runs the trimmed config)."""

from __future__ import annotations

import os
import subprocess
import sys

from blendsync.shared.features.smile import FUNCTIONALS_LEVEL, Functionals
from blendsync.shared.features.smile_config import INSTANCE, data_flow, included_files, unread_components
from tests.helpers import REPO


def _instances(files: list[str]) -> set[str]:
    names = set()
    for path in files:
        with open(path) as f:
            names |= {m.group(1) for line in f if (m := INSTANCE.match(line))}
    return names


def test_the_components_eGeMAPS_replaces_are_dropped_and_the_rest_is_closed():
    f = Functionals("eGeMAPSv02", 1.0, 0.01)
    files = included_files(f.package_config_path)
    assert len(files) == 5  # eGeMAPSv02.conf, GeMAPSv01b's and its own descriptors and functionals
    unread = unread_components(files, FUNCTIONALS_LEVEL)
    # GeMAPSv01b's voiced / unvoiced spectral functionals (eGeMAPSv02 has its own), and the
    # descriptors' concatenation for the lld sink level.
    assert {"gemapsv01b_functionalsMVRVoiced", "gemapsv01b_functionalsMeanSpectralUV", "lldconcat"} <= unread
    assert not {"funcconcat", "gemapsv01b_functionalsF0", "egemapsv02_leq"} & unread

    trimmed = included_files(f.config_path)
    kept = _instances(trimmed)
    assert kept == _instances(files) - unread
    reads, writes = data_flow(trimmed)
    written = {"wave"} | {level for c in kept for level in writes.get(c, ())}
    for component in kept:
        assert reads.get(component, set()) <= written, component
    assert any(FUNCTIONALS_LEVEL in writes.get(c, ()) for c in kept)


def test_the_written_configs_are_removed_when_the_process_ends(tmp_path):
    code = (
        "from blendsync.shared.features.smile import Functionals\n"
        "from blendsync.shared.features.smile_config import scratch_dir\n"
        "import os\n"
        "f = Functionals('eGeMAPSv02', 1.0, 0.01)\n"
        "assert os.path.exists(f.config_path) and os.path.exists(f.frame_mode_conf)\n"
        "print(scratch_dir())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    folder = out.stdout.strip()
    assert folder and not os.path.exists(folder)
