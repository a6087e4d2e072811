"""openSMILE's feature-set config without the components whose output nothing reads.

eGeMAPSv02.conf includes GeMAPSv01b's low-level descriptors and functionals and then
replaces some of them with its own: GeMAPSv01b's voiced/unvoiced spectral sets, their
smoothers and two functionals components still run on every frame, and so does the `lld`
concatenation when only the `func` level goes to the sink. They cost 11 % of a functionals
pass (0.95 -> 0.85 CPU-s for 60 s of speech on one core of the 2-core reference VM) and
reach no output row.

The data flow is read from the config files themselves (each component's reader and writer
levels); a component is kept when the sink level depends on what it writes, and only the
`instance[...]` lines of the others are dropped (their sections stay: they declare options
that other sections use). The trimmed copy lives in a temporary folder of the process,
written once, with the folder layout kept so that the relative includes resolve as before.
The rows are the full config's bit for bit (tests/shared/features/test_smile.py compares
them with the opensmile package's).
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import tempfile
import threading

SECTION = re.compile(r"^\[([^:\]]+):([^\]]+)\]\s*$")
INSTANCE = re.compile(r"^\s*instance\[([^\]]+)\]\.")
LEVELS = re.compile(r"^\s*(\w*reader\w*|writer)\.dmLevel\s*=\s*(.*?)\s*$", re.I)
INCLUDE = re.compile(r"^\s*\\\{([^\\}][^}]*)\}\s*$")  # \{path}; not \{\cm[option]}


# The pieces of a file start at once in threads: the first of them writes, the others wait.
_LOCK = threading.RLock()


def scratch_dir() -> str:
    """A folder of this process for the config files it writes, removed at exit."""
    with _LOCK:
        return _scratch_dir()


@functools.lru_cache(maxsize=1)
def _scratch_dir() -> str:
    path, pid = tempfile.mkdtemp(prefix="bsfeat_smile_"), os.getpid()
    # Not from a forked child's exit: the folder is its parent's.
    atexit.register(lambda: os.getpid() == pid and shutil.rmtree(path, True))
    return path


def included_files(config_path: str) -> list[str]:
    """config_path and every file it includes by path, recursively, in include order."""
    out: list[str] = []

    def visit(path: str) -> None:
        path = os.path.normpath(path)
        if path in out:
            return
        out.append(path)
        with open(path) as f:
            for line in f:
                m = INCLUDE.match(line)
                if m:
                    visit(os.path.join(os.path.dirname(path), m.group(1).strip()))

    visit(config_path)
    return out


def data_flow(files: list[str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(component -> levels it reads, component -> levels it writes) from the sections."""
    reads: dict[str, set[str]] = {}
    writes: dict[str, set[str]] = {}
    for path in files:
        component = None
        with open(path) as f:
            for line in f:
                m = SECTION.match(line)
                if m:
                    component = None if m.group(1) == "componentInstances" else m.group(1)
                    continue
                m = LEVELS.match(line)
                if m and component:
                    levels = {x.strip() for x in m.group(2).split(";") if x.strip()}
                    (writes if m.group(1).lower() == "writer" else reads).setdefault(component, set()).update(levels)
    return reads, writes


def unread_components(files: list[str], sink_level: str) -> set[str]:
    """Components whose written levels the sink level does not depend on. Components that
    write nothing (sinks) are always kept."""
    reads, writes = data_flow(files)
    needed, kept = {sink_level}, set()
    grew = True
    while grew:
        grew = False
        for component, written in writes.items():
            if component not in kept and written & needed:
                kept.add(component)
                needed |= reads.get(component, set())
                grew = True
    return set(writes) - kept


def trimmed_config(config_root: str, config_path: str, sink_level: str) -> str:
    """A copy of config_path (under config_root) without the instances of the components
    the sink level does not depend on; the copy's path."""
    with _LOCK:
        return _trimmed_config(config_root, config_path, sink_level)


@functools.lru_cache(maxsize=8)
def _trimmed_config(config_root: str, config_path: str, sink_level: str) -> str:
    files = included_files(config_path)
    unread = unread_components(files, sink_level)
    root = os.path.join(scratch_dir(), f"config_{sink_level}")
    shutil.copytree(config_root, root, dirs_exist_ok=True)
    for path in files:
        with open(path) as f:
            lines = [x for x in f if not ((m := INSTANCE.match(x)) and m.group(1) in unread)]
        with open(os.path.join(root, os.path.relpath(path, config_root)), "w") as f:
            f.writelines(lines)
    return os.path.join(root, os.path.relpath(config_path, config_root))
