"""Ctrl-C during openSMILE: raised at once, never swallowed by its callbacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from blendsync.shared.interrupts import interruptible
from tests.helpers import REPO, sigint_default

# 240 s of audio: openSMILE runs for seconds; SIGINT arrives 0.5 s into its run.
_SCRIPT = """
import os, signal, sys, threading, time
import numpy as np
from blendsync.shared.config import EmotionConfig
from concurrent.futures import ThreadPoolExecutor
from blendsync.shared.features import emotion_on_grid, _smile
from blendsync.shared.features.pieces import Workers
from blendsync.shared.frame_grid import frame_times

cfg = EmotionConfig()
_smile(cfg.feature_set, cfg.context_s, cfg.hop_s)  # built before the clock starts
y = np.random.default_rng(0).normal(0, 0.1, 16000 * 240).astype(np.float32)
threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    parts = int(sys.argv[1])
    emotion_on_grid(y, 16000, frame_times(7200, 30.0), cfg, Workers(parts, ThreadPoolExecutor(parts).map))
except KeyboardInterrupt:
    print("interrupted")
    sys.exit(0)
print("finished")
"""


@pytest.mark.parametrize("parts", [1, 2])
def test_ctrl_c_during_opensmile_raises_keyboard_interrupt(parts):
    """Before the guard, the KeyboardInterrupt raised inside openSMILE's callback was swallowed
    and the extraction ran to its end ("finished"). In pieces on a thread pool, every piece's
    run is aborted."""
    r = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(parts)],
        capture_output=True,
        text=True,
        cwd=REPO,
        preexec_fn=sigint_default,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.strip() == "interrupted", r.stdout + r.stderr[-2000:]


def test_results_and_errors_come_back_from_the_helper_thread():
    assert interruptible(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        interruptible(lambda: 1 / 0)


def test_off_the_main_thread_the_call_runs_in_place():
    import threading

    seen = []
    t = threading.Thread(target=lambda: seen.append(interruptible(threading.current_thread)))
    t.start()
    t.join()
    assert seen == [t]
