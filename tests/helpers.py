"""Helpers the test suites share (plain functions and constants; fixtures live in the
conftest.py files): example data writers, tiny stores and configs, item comparisons."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from blendsync.featurize.writer import write_item
from blendsync.shared.config import FeatureConfig
from blendsync.shared.featurize_file import FeaturizedFile
from blendsync.shared.store import FeatureStore, ItemProvenance, ItemSource
from blendsync.train.core.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BLENDSYNC_SHARED_DATA", REPO.parent / "shared" / "data"))


def item_provenance(
    feature_config: dict, channel_set: dict, feature_config_hash: str | None = None, source_id: str = ""
) -> ItemProvenance:
    """Provenance for an item written by a test rather than by extract: feature_config (a
    partial one is completed with defaults) with channel_set as its channels, and its hash
    (unless given), as extract writes them."""
    from blendsync.shared.channels import ChannelSet

    full = dict(feature_config)
    if "targets" not in full:
        full["targets"] = {"channels": ChannelSet.from_dict(channel_set).to_dict()}
    fc = FeatureConfig.from_embedded(full)
    return ItemProvenance(
        feature_config=fc.to_dict(),
        feature_config_hash=feature_config_hash or fc.hash,
        library_versions={},
        channel_set=channel_set,
        source=ItemSource(
            audio="",
            audio_sha256="",
            targets=None,
            targets_sha256=None,
            targets_fps=None,
            manifest="",
            row=0,
            id=source_id,
        ),
    )


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


def write_livelink(
    path: Path,
    duration_s: float,
    fps: float = 60.0,
    start: str = "10:00:00:00.000",
    count_column: str = "BlendshapeCount",
    extra: bool = True,
    seed: int = 0,
    curve=None,
) -> Path:
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
        assert x.attrs.checksums == y.attrs.checksums


# -- an S3 API on 127.0.0.1 ----------------------------------------------------------------
# No cloud is reachable from the test machines, so object-store tests run against moto's
# standalone S3 server: a separate process speaking the S3 HTTP API, reached through the
# same s3fs/fsspec code path a real bucket uses.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def make_random_store(
    root: Path,
    lengths: list[int],
    channels: int = 5,
    seed: int = 0,
    learnable: bool = False,
    scale: dict[int, float] | None = None,
) -> tuple[FeatureStore, list[str]]:
    """A real Zarr store whose items hold random arrays of the given frame counts (T, 80/88/C).
    learnable: targets are a function of the mean over mel bins at the same frame. scale:
    {channel index: factor} multiplies those channels' targets (0: never moves)."""
    rng = np.random.default_rng(seed)
    fs = FeatureStore(root)
    fs.init()
    keys = []
    names = [f"c{i}" for i in range(channels)]
    for i, T in enumerate(lengths):
        mel = rng.normal(size=(T, 80)).astype(np.float32)
        if learnable:
            # Speech-like: a slowly varying loudness shared by all bins, plus noise.
            loud = np.convolve(rng.normal(size=T + 8), np.hanning(9) / np.hanning(9).sum() * 3, "valid")
            mel = (mel * 0.3 + loud[:, None]).astype(np.float32)
        # Like loudness driving jawOpen: every channel follows the mean over mel bins.
        z = mel.mean(axis=1)
        gains = np.linspace(1.0, 3.0, channels)
        targets = (
            1 / (1 + np.exp(-gains[None, :] * z[:, None])) if learnable else rng.uniform(size=(T, channels))
        ).astype(np.float32)
        for c, factor in (scale or {}).items():
            targets[:, c] *= factor
        ff = FeaturizedFile(
            mel,
            rng.normal(size=(T, 88)).astype(np.float32),
            targets,
            {"frames": T, "audio_duration_s": T / 30},
        )
        key = f"k{i:03d}"
        prov = item_provenance(
            {"mel": {"n_mels": 80}, "fps": 30.0},
            {"name": "test", "channels": names, "mouth": names[:2], "expression": names[2:3]},
        )
        write_item(fs, key, ff, prov)
        keys.append(key)
    return fs, keys


# The default frames per window; test windows are just long enough for it.
KD = TrainConfig().stream.frames_per_window
# Test-sized: a short window and a tiny model, so CPU training takes seconds.
TINY = {
    "preset": "custom",
    "model": {"d_model": 16, "heads": 2, "mel_layers": 1, "emotion_layers": 1, "dropout": 0.0},
    "stream": {"window": KD + 16, "lookahead": 6, "batch_streams": 4, "stride": 1},
    "optim": {"epochs": 2, "warmup_steps": 5, "lr": 1e-3},
    "diagnostics": {"every_steps": 20},
}


def tiny(**over) -> TrainConfig:
    d = json.loads(json.dumps(TINY))
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return TrainConfig.from_dict(d)


# Golden values are exact to float32 rounding on every x86-64 kernel set (AVX-512, AVX2, no
# SIMD: tests/train/golden/cross_kernel.py) but for these parameters' summaries after training:
# the key part of an attention layer's input bias has no gradient in exact arithmetic (adding a
# constant to every logit of a query leaves its softmax unchanged), so Adam, which divides by
# the gradient's own scale, turns each kernel set's rounding noise into steps of the learning
# rate. Measured: 2.7e-4 largest absolute difference between kernel sets; allowed: 2e-3.
KEY_BIAS_SUMMARIES = ("qkv.bias", "in_proj_bias")
KEY_BIAS_ABS_TOL = 2e-3


def assert_close_nested(got, want, path: str = "") -> None:
    """Nested dicts/lists of numbers equal within float32 rounding of a short training run
    (golden values); got may hold more keys than want. Summaries of attention input biases
    within KEY_BIAS_ABS_TOL (above)."""
    import math

    if isinstance(want, dict):
        assert set(got) >= set(want), path
        for k in want:
            assert_close_nested(got[k], want[k], f"{path}/{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close_nested(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        abs_tol = KEY_BIAS_ABS_TOL if any(f"{k}[" in path for k in KEY_BIAS_SUMMARIES) else 1e-7
        assert math.isclose(got, want, rel_tol=1e-5, abs_tol=abs_tol), (path, got, want)
    else:
        assert got == want, (path, got, want)


def mouth_from_speech(y: np.ndarray, sr: int, T: int, fps: float) -> np.ndarray:
    """A jaw curve a speaker could have made: the 300-3000 Hz band's loudness (not the
    features' own log-mel energy), 50 dB range, smoothed over about 100 ms, compressed."""
    import librosa

    S = np.abs(librosa.stft(y, n_fft=1024, hop_length=sr // 100)) ** 2
    f = librosa.fft_frequencies(sr=sr, n_fft=1024)
    db = 10 * np.log10(S[(f > 300) & (f < 3000)].sum(axis=0) + 1e-10)
    loud = np.clip((db - (db.max() - 50)) / 50, 0, 1)
    k = np.hanning(11) / np.hanning(11).sum()
    loud = np.convolve(np.pad(loud, 5, mode="edge"), k, mode="valid")
    return 0.7 * np.interp(np.arange(T) / fps, np.arange(len(loud)) / 100, loud) ** 0.8


def lead(targets: np.ndarray, lag: int) -> np.ndarray:
    """Curves that lead the audio by lag frames: frame t shows what the audio does at t + lag."""
    return targets[np.clip(np.arange(len(targets)) + lag, 0, len(targets) - 1)]


def sigint_default() -> None:
    """preexec_fn for a subprocess a test sends SIGINT: a shell starts background jobs with
    SIGINT ignored, which a child inherits (and Python then raises no KeyboardInterrupt);
    the child gets the default disposition, as a program started from a terminal has."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process (Linux) has used so far."""
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_cpu_seconds(proc, seconds: float, timeout: float = 120.0) -> None:
    """Wait until a subprocess has used `seconds` of CPU: a signal then lands in its work,
    past its start-up, on a fast machine as on a slow one (a sleep of fixed length does not)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if cpu_seconds(proc.pid) >= seconds:
            return
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted; make its input longer"
    raise AssertionError(f"the run used under {seconds} CPU s in {timeout} s")


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A real `bstrain serve` process on a free port (tests and benchmarks): url its HTTP root,
    ws its stream endpoint; ready once /healthz answers. Its stderr goes to a temporary file
    (a pipe nobody reads would stop a server that logs much)."""

    def __init__(self, checkpoint, *extra: str, host: str = "127.0.0.1", start_timeout_s: float = 120.0):
        import subprocess
        import sys
        import tempfile
        import time
        import urllib.request

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}/v1/stream"
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "blendsync.train.cli", "serve", "--checkpoint", str(checkpoint), "--host", host,
             "--port", str(self.port), *extra],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=self._err, text=True,
        )  # fmt: skip
        deadline = time.time() + start_timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self._stderr()}")
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer /healthz within {start_timeout_s:g} s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def model(self) -> dict:
        import urllib.request

        return json.loads(urllib.request.urlopen(self.url + "/v1/model", timeout=30).read())

    def stop(self) -> str:
        """Terminate it (killed after 30 s); what it wrote to stderr."""
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self._stderr()

    def _stderr(self) -> str:
        self._err.seek(0)
        return self._err.read()


def push_in_parts(stream, data: np.ndarray, bounds) -> list:
    """stream.push(data[a:b]) for the parts data is cut into at bounds, then stream.finish():
    every result in order (a live feature extractor or animator fed as audio arrives)."""
    out, start = [], 0
    for end in [*bounds, len(data)]:
        out.append(stream.push(data[start:end]))
        start = end
    out.append(stream.finish())
    return out
