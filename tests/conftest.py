"""Fixtures every suite may use: the real test data in ../shared/data, the example store,
synthetic audio, object stores, read-only and small file systems (helpers: tests/helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from blendsync.shared.cluster import THREAD_ENV
from tests.helpers import REPO, S3_CREDENTIALS, SHARED_DATA, speechlike


@pytest.fixture(autouse=True)
def _cli_logging_ends_with_its_test():
    """The CLIs point the root logger at the stderr of their moment (logging.basicConfig);
    under capsys that stream closes with the test, and a later test's library log line would
    hit it ("--- Logging error ---"). Drop such handlers when a test ends."""
    import logging

    yield
    root = logging.getLogger()
    for h in root.handlers[:]:
        if type(h) is logging.StreamHandler:
            root.removeHandler(h)


def pytest_addoption(parser):
    parser.addoption(
        "--shuffle-seed",
        type=int,
        default=None,
        help="Run the test modules in an order drawn from this seed, and each module's tests too (CI runs the "
        "suite once so), so that a test passing only after or before another cannot pass unseen.",
    )


def pytest_collection_modifyitems(config, items):
    seed = config.getoption("--shuffle-seed")
    if seed is None:
        return
    import random

    rng = random.Random(seed)
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    order = list(modules)
    rng.shuffle(order)
    items[:] = [item for name in order for item in rng.sample(modules[name], len(modules[name]))]


def pytest_report_header(config):
    seed = config.getoption("--shuffle-seed")
    return None if seed is None else f"test order shuffled with seed {seed}"


# What changes the numbers a process computes: its thread counts (BLAS, OpenMP, torch) and the
# hash seed. A test that changes them (distributed's nanny writes its workers' settings into
# the environment of the process starting them) must not change the tests after it, nor the
# processes they start.
_PROCESS_SETTINGS = (
    *THREAD_ENV,
    "PYTHONHASHSEED",
    "MALLOC_TRIM_THRESHOLD_",
)


@pytest.fixture(autouse=True)
def _process_settings_end_with_their_test():
    import sys

    env = {k: os.environ.get(k) for k in _PROCESS_SETTINGS}
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    yield
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def example_store(tmp_path_factory) -> Path:
    """The shipped example manifest featurized once per test session."""
    from blendsync.featurize.extract import extract
    from blendsync.shared.config import FeatureConfig

    store = tmp_path_factory.mktemp("example") / "features.zarr"
    r = extract(REPO / "data_manifest.csv", store, FeatureConfig(), executor="serial")
    assert r.ok
    return store


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (set BLENDSYNC_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def make_audio(tmp_path):
    """make_audio(name, duration_s, sr=16000, channels=1, fmt=None) -> path of a speech-like file."""

    def _make(
        name: str, duration_s: float, sr: int = 16000, channels: int = 1, seed: int = 0, subtype: str | None = None
    ) -> Path:
        y = speechlike(duration_s, sr, seed)
        data = np.stack([y * (0.8 + 0.2 * c) for c in range(channels)], axis=1) if channels > 1 else y
        p = tmp_path / name
        sf.write(p, data, sr, subtype=subtype)
        return p

    return _make


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """URL of a moto S3 server running for the whole session."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, "moto S3 server did not start"
            time.sleep(0.2)
    yield url
    proc.kill()
    proc.wait()
    log.close()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch) -> dict[str, str]:
    """Environment for this process and its children (CLIs, Dask workers) to reach the S3
    server through fsspec's own configuration, as a user would set it."""
    import fsspec.config

    env = {**S3_CREDENTIALS, "FSSPEC_S3_ENDPOINT_URL": s3_endpoint}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # fsspec reads FSSPEC_* once, at import: give this process the same setting.
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_endpoint})
    return env


@pytest.fixture
def s3_bucket(s3_env) -> str:
    """A fresh, empty bucket: s3://<name>."""
    import uuid

    import fsspec

    name = f"t-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3").mkdir(name)
    return f"s3://{name}"


def _mount(*args: str) -> None:
    import subprocess

    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(r.stderr.strip() or f"mount {' '.join(args)} failed")


@pytest.fixture
def read_only():
    """read_only(path): make a folder read-only for the rest of the test, as a read-only mount
    is: a read-only bind mount where this user may mount (root), else write permission removed
    (which binds a user other than root just the same)."""
    import subprocess

    undo = []

    def _make(path: Path) -> None:
        try:
            _mount("--bind", str(path), str(path))
            undo.append(lambda: subprocess.run(["umount", str(path)], check=False))
            _mount("-o", "remount,bind,ro", str(path))
            return
        except (OSError, FileNotFoundError):
            pass
        if os.geteuid() == 0:
            pytest.skip("needs a read-only mount: mount is not permitted here and root ignores permissions")
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        undo.append(lambda: [p.chmod(p.stat().st_mode | 0o200) for p in [path, *path.rglob("*")]])

    yield _make
    for f in reversed(undo):
        f()


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(size) -> a folder on a file system of that size (a tmpfs mount: needs root);
    its .resize(size) grows it in place, as moving to a bigger disk would."""
    import subprocess

    d = tmp_path / "disk"
    d.mkdir()

    class Disk:
        path = d

        def resize(self, size: str) -> None:
            _mount("-o", f"remount,size={size}", str(d))

    def _make(size: str) -> Disk:
        try:
            _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d))
        except (OSError, FileNotFoundError) as e:
            pytest.skip(f"needs a small file system (tmpfs mount, root): {e}")
        return Disk()

    yield _make
    subprocess.run(["umount", str(d)], check=False, capture_output=True)
