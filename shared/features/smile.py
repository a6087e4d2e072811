"""openSMILE's functionals through its native library, without the opensmile package's
pandas front end.

The opensmile package runs the extraction in its C library (libSMILEapi, driven through
ctypes by opensmile/core/lib.py) and wraps it in audinterface and pandas: importing it costs
0.5 s of every predict run and bsfeat worker (pandas, audobject, audinterface), and every
call builds an index and a DataFrame. Here the same library is driven the same way, step for
step as opensmile.Smile.process_signal drives it (the same config file and options, the
signal scaled to 16-bit the same way, the rows from the same sink callback, the row times
converted to nanoseconds as pandas converts them), so the rows and times are the package's
own, bit for bit (tests/shared/features/test_smile.py runs both). The opensmile package
stays the dependency that provides the library and the config files; only its lib.py (ctypes
and numpy) is loaded, without the package's __init__.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
import tempfile
import threading
import warnings
import weakref
from dataclasses import dataclass

import numpy as np

from blendsync.shared.features.pieces import PieceRows
from blendsync.shared.features.smile_config import cached_file, trimmed_config

# The opensmile package's component names and shared config files (opensmile.core.config).
EXTERNAL_SOURCE = "extsource"
EXTERNAL_SINK = "extsink"
EXTERNAL_INPUT_CONFIG = "shared/standard_external_wave_input.conf.inc"
EXTERNAL_OUTPUT_SINGLE_CONFIG = "shared/standard_external_data_output_single.conf.inc"
# Feature set name -> config file under the package's config root (opensmile.FeatureSet).
FEATURE_SET_CONFIGS = {"eGeMAPSv02": "egemaps/v02/eGeMAPSv02.conf"}
FUNCTIONALS_LEVEL = "func"  # opensmile.FeatureLevel.Functionals
NS_PER_S = 1_000_000_000

# Native runs started here and not yet freed, in any thread: what Ctrl-C aborts.
_RUNNING: weakref.WeakSet = weakref.WeakSet()
_RUNNING_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def package_dir() -> str:
    """The installed opensmile package's folder, found without importing it."""
    spec = importlib.util.find_spec("opensmile")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the opensmile package is not installed (pip install opensmile)")
    return list(spec.submodule_search_locations)[0]


_LOAD_LOCK = threading.Lock()


def native():
    """opensmile/core/lib.py (the ctypes binding: OpenSMILE, FrameMetaData) as a module of
    its own, without running the package's __init__; loaded once, whichever thread asks
    first (the pieces of a file start at once)."""
    name = "blendsync_opensmile_lib"
    with _LOAD_LOCK:
        if name not in sys.modules:
            path = os.path.join(package_dir(), "core", "lib.py")
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[name] = module
        return sys.modules[name]


def pandas_ns(seconds: np.ndarray) -> np.ndarray:
    """(R,) float64 s -> (R,) int64 ns exactly as pandas.to_timedelta(seconds, "s") makes them
    (whole seconds and the fraction apart, the fraction rounded to 9 digits then truncated:
    pandas' cast_from_unit_vectorized), so that row times match the package's."""
    seconds = np.asarray(seconds, np.float64)
    base = seconds.astype(np.int64)
    frac = np.round(seconds - base, 9)
    return base * NS_PER_S + (frac * NS_PER_S).astype(np.int64)


def ns_to_seconds(ns: np.ndarray) -> np.ndarray:
    """(R,) int64 ns -> (R,) float64 s as pandas' TimedeltaIndex.total_seconds() gives them
    (whole seconds plus the residual over 1e9; times under 2**53 ns, 104 days)."""
    whole, residual = np.divmod(np.asarray(ns, np.int64), NS_PER_S)
    return whole + residual / NS_PER_S


# openSMILE's low-level descriptors come every 10 ms; a row's window starts on one of them.
LLD_PERIOD_S = 0.01
# The file sink (binary HTK parameter file: a 12-byte big-endian header, then float32 rows).
HTK_SINK_CONFIG = """[componentInstances:cComponentManager]
instance[htksink].type=cHtkSink
[htksink:cHtkSink]
reader.dmLevel = \\cm[sinkLevel{func}:sink level]
filename = \\cm[htkOutput{out.htk}:the rows' file]
"""


@functools.lru_cache(maxsize=8)
def _written(text: str, suffix: str) -> str:
    """A config file holding text (smile_config.cached_file: shared by every process)."""
    return cached_file(text, suffix)


def frame_list(rows: np.ndarray, step: int, size: int) -> str:
    """openSMILE's frameList for the rows (K,) ascending: row r's window as descriptor
    frames [r * step, r * step + size - 1], both ends included, as fixed mode reads it."""
    first = np.asarray(rows, np.int64) * step
    return ",".join(f"{a}-{b}" for a, b in zip(first.tolist(), (first + size - 1).tolist(), strict=True))


@dataclass(frozen=True)
class Functionals:
    """One openSMILE functionals extractor: feature_set's functionals over windows of
    context_s every hop_s (None: one row over the whole signal, the package's default frame
    mode), as opensmile.Smile(feature_set, Functionals, options={"frameModeFunctionalsConf":
    that frame mode}) computes them."""

    feature_set: str
    context_s: float | None = None
    hop_s: float | None = None

    @property
    def config_root(self) -> str:
        return os.path.join(package_dir(), "core", "config")

    @property
    def package_config_path(self) -> str:
        if self.feature_set not in FEATURE_SET_CONFIGS:
            raise ValueError(f"unknown openSMILE feature set {self.feature_set!r}; known: {list(FEATURE_SET_CONFIGS)}")
        return os.path.join(self.config_root, FEATURE_SET_CONFIGS[self.feature_set])

    @property
    def config_path(self) -> str:
        """The package's config without the components no functional row depends on
        (smile_config)."""
        return trimmed_config(self.config_root, self.package_config_path, FUNCTIONALS_LEVEL)

    @property
    def frame_mode_conf(self) -> str:
        """The frameModeFunctionalsConf file: a row every hop_s over context_s, each window
        starting at its row's time (frameCenterSpecial left); the package's own whole-input
        mode where context_s is None."""
        if self.context_s is None:
            return os.path.join(self.config_root, "shared/FrameModeFunctionals.conf.inc")
        text = (
            f"frameMode = fixed\nframeSize = {self.context_s:.6f}\nframeStep = {self.hop_s:.6f}\n"
            "frameCenterSpecial = left\n"
        )
        return _written(text, ".conf.inc")

    def options(self) -> dict:
        """The options opensmile.Smile._options() gives, for an external source of 16-bit audio
        and the package's callback sink (sampleRate to be set by the caller)."""
        root = self.config_root
        return {
            "sink": os.path.join(root, EXTERNAL_OUTPUT_SINGLE_CONFIG),
            "sinkLevel": FUNCTIONALS_LEVEL,
            "bufferModeRbConf": os.path.join(root, "shared/BufferModeRb.conf.inc"),
            "frameModeFunctionalsConf": self.frame_mode_conf,
            "source": os.path.join(root, EXTERNAL_INPUT_CONFIG),
            "nBits": 16,
        }

    def start(self, options: dict):
        """A native instance initialised with options, recorded so that abort_running reaches it."""
        instance = native().OpenSMILE()
        instance.initialize(config_file=self.config_path, options=options, loglevel=2, log_file=None, debug=False)
        with _RUNNING_LOCK:
            _RUNNING.add(instance)
        return instance

    @functools.cached_property
    def feature_names(self) -> list[str]:
        smile = self.start(self.options())
        try:
            n = smile.external_sink_get_num_elements(EXTERNAL_SINK)
            return [smile.external_sink_get_element_name(EXTERNAL_SINK, i) for i in range(n)]
        finally:
            smile.free()

    def run(self, y: np.ndarray, sr: int, rows: np.ndarray | None = None) -> PieceRows:
        """The rows of y (N,) float at sr, as the package's process_signal(y, sr) gives them:
        values (R, D), window starts and row indices. A signal too short for one window gives
        one NaN row (the package warns "Segment too short").

        rows (K,) ascending: only those rows (openSMILE's list frame mode, each listed window
        the descriptor frames fixed mode reads for that row: the same values, tested bit for
        bit); a listed row past the signal's last window is not computed, so the result holds
        the listed rows up to the last one the signal has. None: every row.

        The rows go to a file sink instead of the package's callback sink, the same float32
        values (tested): a callback per row needs Python's interpreter lock, and with another
        thread holding it (importing torch: long stretches in C) the pass stalled to half its
        speed. A row's time is its first descriptor frame's, (r * frames per row) * 10 ms,
        as openSMILE stamps it (tested against its stamps for hops of 10 to 50 ms)."""
        signal = np.atleast_2d(y)[:1].copy()  # channel 0, as the package selects it
        signal *= 32768
        pcm = signal.astype(np.int16)[0]
        step = 0 if self.hop_s is None else round(self.hop_s / LLD_PERIOD_S)
        made: list[str] = []

        def scratch(suffix: str) -> str:  # this run's own, removed after it
            fd, path = tempfile.mkstemp(prefix="blendsync-opensmile-", suffix=suffix)
            os.close(fd)
            made.append(path)
            return path

        try:
            out = scratch(".htk")
            options = {**self.options(), "sampleRate": sr, "sink": _written(HTK_SINK_CONFIG, ".conf.inc")}
            if rows is not None:
                if self.context_s is None or not len(rows):
                    raise ValueError("listed rows need a window and a hop, and at least one row")
                size = round(self.context_s / LLD_PERIOD_S)
                options["frameModeFunctionalsConf"] = scratch(".conf.inc")
                with open(options["frameModeFunctionalsConf"], "w") as f:
                    f.write(
                        f"frameMode = list\nframeList = {frame_list(rows, step, size)}\nframeCenterSpecial = left\n"
                    )
            smile = self.start({**options, "htkOutput": out})
            try:
                smile.external_audio_source_write_data(EXTERNAL_SOURCE, bytes(pcm))
                smile.external_audio_source_set_eoi(EXTERNAL_SOURCE)
                smile.run()
            finally:
                smile.free()
            with open(out, "rb") as f:
                raw = f.read()
        finally:
            for path in made:
                os.unlink(path)
        n, _period, size, _kind = np.frombuffer(raw[:12], ">i4,>i4,>i2,>i2")[0] if len(raw) >= 12 else (0, 0, 0, 0)
        if not n:
            warnings.warn(UserWarning("Segment too short, filling with NaN."), stacklevel=2)
            nan = np.full((1, len(self.feature_names)), np.nan)
            return PieceRows(nan, np.zeros(1, np.int64), np.zeros(1, np.int64))
        values = np.frombuffer(raw, ">f4", count=int(n) * (int(size) // 4), offset=12)
        values = values.reshape(int(n), int(size) // 4).astype(np.float64)
        index = np.arange(int(n), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)[: int(n)]
        starts = pandas_ns((index.astype(np.float64) * step) * LLD_PERIOD_S)
        return PieceRows(values, starts, index)


def abort_running() -> None:
    """Abort every openSMILE run of this process still going (Ctrl-C)."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for instance in running:
        if getattr(instance, "_smileobj", None) is not None:  # not yet freed
            with contextlib.suppress(Exception):  # already finished
                instance.abort()
