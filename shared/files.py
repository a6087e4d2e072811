"""Output files written whole or not at all.

Every file a command writes for a user (checkpoints, exported graphs and their sidecars,
predicted curves, previews) goes to a temporary name beside its destination and is renamed
into place once complete: a full disk, a read-only folder or Ctrl-C leaves the previous file
(or none), never a truncated one, and the error is an OSError naming the destination (what
shared.cli turns into one line).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """A hidden name beside path, unique to this process, keeping path's suffix (tools that
    choose a format by the name, such as a video writer, still see it)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


@contextmanager
def written_atomically(path: str | Path) -> Iterator[Path]:
    """The temporary path to write path's content to; renamed to path when the block ends
    without an error, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        if e.filename is None or Path(e.filename) == tmp:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path) -> None:
    """Remove a temporary file if there is one (a read-only folder refuses even that)."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def write_atomically(path: str | Path, data: bytes | bytearray | memoryview | str) -> None:
    """Write data (str: UTF-8) to path whole or not at all."""
    if isinstance(data, str):
        data = data.encode()
    with written_atomically(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
