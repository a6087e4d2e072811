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
that other sections use). The trimmed copy keeps the folder layout, so that the relative
includes resolve as before. The rows are the full config's bit for bit
(tests/shared/features/test_smile.py compares them with the opensmile package's).

The copies, and the small config files openSMILE runs include (frame modes, the sink), live
in one folder of the user's under the temp dir, named by their content: written once by
whichever process needs them first (into a private folder, then renamed into place, so no
process reads a half-written one) and shared by every later process. A folder per process
would pile up: Dask's worker processes end without running exit handlers.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable

SECTION = re.compile(r"^\[([^:\]]+):([^\]]+)\]\s*$")
INSTANCE = re.compile(r"^\s*instance\[([^\]]+)\]\.")
LEVELS = re.compile(r"^\s*(\w*reader\w*|writer)\.dmLevel\s*=\s*(.*?)\s*$", re.I)
INCLUDE = re.compile(r"^\s*\\\{([^\\}][^}]*)\}\s*$")  # \{path}; not \{\cm[option]}


# The pieces of a file start at once in threads: the first of them writes, the others wait.
_LOCK = threading.RLock()


def cache_root() -> str:
    """This user's folder for the config files openSMILE runs read (see the module's doc).
    One that is not this user's alone (another owner, or writable by others) is not used: a
    folder of this process's own is, removed at its exit."""
    with _LOCK:
        return _cache_root()


@functools.lru_cache(maxsize=1)
def _cache_root() -> str:
    path = os.path.join(tempfile.gettempdir(), f"blendsync-opensmile-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022:
        return path
    private, pid = tempfile.mkdtemp(prefix="blendsync-opensmile-"), os.getpid()
    atexit.register(lambda: os.getpid() == pid and shutil.rmtree(private, True))
    return private


def content_key(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:20]


def cached_file(text: str, suffix: str) -> str:
    """A file holding text in cache_root(), named by its content."""
    path = os.path.join(cache_root(), f"{content_key(text.encode())}{suffix}")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=cache_root(), prefix=".writing-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path


def cached_folder(key: str, build: Callable[[str], None]) -> str:
    """cache_root()/key, made by build(folder) in a private folder renamed into place where
    it is missing: a reader sees the whole folder or none."""
    final = os.path.join(cache_root(), key)
    if not os.path.isdir(final):
        tmp = tempfile.mkdtemp(dir=cache_root(), prefix=".writing-")
        try:
            build(tmp)
            os.rename(tmp, final)
        except OSError:
            if not os.path.isdir(final):  # not another process's copy, renamed first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


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
    tree = sorted(
        os.path.relpath(os.path.join(d, name), config_root) for d, _, names in os.walk(config_root) for name in names
    )
    parts = [sink_level.encode()]
    for rel in tree:
        with open(os.path.join(config_root, rel), "rb") as f:
            parts += [rel.encode(), f.read()]

    def build(root: str) -> None:
        shutil.copytree(config_root, root, dirs_exist_ok=True)
        for path in files:
            with open(path) as f:
                lines = [x for x in f if not ((m := INSTANCE.match(x)) and m.group(1) in unread)]
            with open(os.path.join(root, os.path.relpath(path, config_root)), "w") as f:
                f.writelines(lines)

    root = cached_folder(f"config-{content_key(*parts)}", build)
    return os.path.join(root, os.path.relpath(config_path, config_root))
