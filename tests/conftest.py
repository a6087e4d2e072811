"""Shared fixtures: the real test data in ../shared/data, synthetic audio, tiny manifests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data"))


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


def speechlike(duration_s: float, sr: int, seed: int = 0) -> np.ndarray:
    """Voiced-like bursts (harmonic tone with a syllable envelope) over faint noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    tone = sum(np.sin(h * phase) / h for h in range(1, 6))
    env = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 2
    y = 0.25 * env * tone + rng.normal(0, 2e-3, t.shape)
    return np.clip(y, -1, 1).astype(np.float32)


@pytest.fixture
def make_audio(tmp_path):
    """make_audio(name, duration_s, sr=16000, channels=1, fmt=None) -> path of a speech-like file."""

    def _make(name: str, duration_s: float, sr: int = 16000, channels: int = 1, seed: int = 0,
              subtype: str | None = None) -> Path:
        y = speechlike(duration_s, sr, seed)
        data = np.stack([y * (0.8 + 0.2 * c) for c in range(channels)], axis=1) if channels > 1 else y
        p = tmp_path / name
        sf.write(p, data, sr, subtype=subtype)
        return p

    return _make


def write_livelink(path: Path, duration_s: float, fps: float = 60.0, start: str = "10:00:00:00.000",
                   count_column: str = "BlendshapeCount", extra: bool = True, seed: int = 0,
                   curve=None) -> Path:
    """A Live Link Face CSV: curve(t) -> (52,) values, or a smooth pseudo-random default."""
    from blendsync.shared.channels import ARKIT_52, LIVELINK_ROTATIONS, pascal_case
    from blendsync.shared.targets import LIVELINK_FPS, parse_timecode

    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 52)
    t0 = parse_timecode(start)
    n = int(round(duration_s * fps))
    cols = ["Timecode", count_column, *[pascal_case(c) for c in ARKIT_52]]
    if extra:
        cols += list(LIVELINK_ROTATIONS)
    lines = [",".join(cols)]
    for i in range(n):
        t = i / fps
        v = curve(t) if curve else 0.5 + 0.4 * np.sin(2 * np.pi * 0.5 * t + phases)
        s = t0 + t
        h, m, sec = int(s // 3600), int(s % 3600 // 60), int(s % 60)
        ff = (s - np.floor(s)) * LIVELINK_FPS
        row = [f"{h:02d}:{m:02d}:{sec:02d}:{ff:06.3f}", "61", *[f"{x:.6f}" for x in v]]
        if extra:
            row += ["0.000000"] * len(LIVELINK_ROTATIONS)
        lines.append(",".join(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_manifest(path: Path, rows: list[dict]) -> Path:
    cols = ["audio", "targets", "targets_fps", "split", "speaker", "id"]
    lines = [",".join(cols)] + [",".join(str(r.get(c, "") or "") for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# Unusable audio, each with the phrase its error message must hold.
BAD_AUDIO = {
    "empty.wav": "empty",
    "silent.wav": "silent",
    "short.wav": "shorter than the 0.25 s",
    "nan.wav": "NaN",
    "junk.wav": "cannot decode",
}


def write_bad_audio(d: Path) -> None:
    """Write the files of BAD_AUDIO into d."""
    sf.write(d / "empty.wav", np.zeros(0), 16000)
    sf.write(d / "silent.wav", np.zeros(32000), 16000)
    sf.write(d / "short.wav", 0.1 * np.ones(1000), 16000)
    nan = 0.1 * np.ones(32000, np.float32)
    nan[5] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    (d / "junk.wav").write_bytes(b"RIFF not really a wave file" * 10)


def assert_same_items(a, b, keys: list[str]) -> None:
    """Items under `keys` hold identical arrays (and so identical checksums) in stores a and b."""
    for key in keys:
        x, y = a.read_item(key), b.read_item(key)
        for name in ("mel", "emotion", "targets"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
        assert x.attrs["checksums"] == y.attrs["checksums"]


# -- an S3 API on 127.0.0.1 ----------------------------------------------------------------
# No cloud is reachable from the test machines, so object-store tests run against moto's
# standalone S3 server: a separate process speaking the S3 HTTP API, reached through the
# same s3fs/fsspec code path a real bucket uses.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                  "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


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
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=log, start_new_session=True)
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
