"""Ctrl-C during openSMILE.

openSMILE's Python wrapper runs the extraction in C and calls back into Python for its log
and its data sink; Python runs a signal handler at the next bytecode, which is inside such a
callback, and the wrapper swallows any exception raised there. A KeyboardInterrupt would be
lost and the command would run on to its end (exit 0). So every openSMILE call goes through
interruptible(): from the main thread the call runs on a helper thread while the main thread
waits, where Ctrl-C raises as anywhere else, once stop() has ended the call (a C++ thread
still running at exit aborts the process). Elsewhere (Dask workers, the live stream's own
thread) signals never arrive, and the call runs in place.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

# How often the waiting main thread wakes (a signal handler runs at the next wake at the latest).
WAIT_S = 0.05
# How long an interrupted call is given to end after each stop() request.
STOP_WAIT_S = 0.5


def interruptible(fn: Callable[..., T], *args, stop: Callable[[], None] | None = None, **kwargs) -> T:
    """fn(*args, **kwargs), its result or its exception, with Ctrl-C raising KeyboardInterrupt
    in the main thread once stop() (asked again every STOP_WAIT_S) has ended the call; a
    second Ctrl-C raises at once."""
    if threading.current_thread() is not threading.main_thread():
        return fn(*args, **kwargs)
    box: dict = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller below
            box["error"] = e
        finally:
            done.set()

    # Waited for on an event with a timeout (a Thread.join interrupted by Ctrl-C can report the
    # thread ended while it runs on): it returns the moment the call ends, where sleeping
    # between looks added up to WAIT_S to every call (a stream's 40 ms openSMILE runs took 75).
    threading.Thread(target=run, name="interruptible", daemon=True).start()
    try:
        while not done.wait(WAIT_S):
            pass
    except KeyboardInterrupt:
        log.debug("interrupted: stopping %s", getattr(fn, "__name__", fn))
        while stop is not None and not done.is_set():
            stop()
            done.wait(STOP_WAIT_S)
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]
