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


RUN = (
    "import numpy as np\n"
    "from blendsync.shared.features.smile import Functionals\n"
    "from blendsync.shared.features.smile_config import cache_root\n"
    "f = Functionals('eGeMAPSv02', 1.0, 0.01)\n"
    "y = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1\n"
    "R = len(f.run(y, 16000).index)\n"
    "assert len(f.run(y, 16000, np.arange(0, 400, 3)).index) == len(range(0, R, 3))\n"
    "print(cache_root())\n"
)


def _run(tmp_path) -> str:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", RUN], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_processes_share_one_config_copy_and_leave_nothing_else(tmp_path):
    """Dask's worker processes end without exit handlers: what a run writes is either shared
    by every process (named by its content) or removed when the run ends."""
    first, second = _run(tmp_path), _run(tmp_path)
    assert first == second == str(tmp_path / f"blendsync-opensmile-{os.getuid()}")
    assert os.listdir(tmp_path) == [os.path.basename(first)]
    names = os.listdir(first)
    trees = [n for n in names if n.startswith("config-")]
    assert len(trees) == 1  # one copy of the config tree
    assert all(n.endswith(".conf.inc") for n in names if n not in trees)  # the frame mode and sink files


def test_a_folder_others_can_write_to_is_not_used(tmp_path):
    shared = tmp_path / f"blendsync-opensmile-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    used = _run(tmp_path)
    assert used != str(shared) and not os.listdir(shared)
    assert not os.path.exists(used)  # the process's own, removed at its exit
