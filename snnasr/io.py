"""User-facing errors and atomic writes.

Every stage writes through :func:`atomic_write` so that an interrupted run never leaves a
file that a later stage would trust: the data goes to a temporary file beside the target
and is renamed over it only once complete.  User mistakes raise :class:`SnnasrError`
subclasses, which the CLI turns into one line and a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


class SnnasrError(Exception):
    """A problem the user can fix; the message must say what is wrong and what to do."""


class DataError(SnnasrError):
    """Bad or missing input data (corpus, data dir, alignments, features)."""


class ConfigError(SnnasrError):
    """Bad configuration: unknown key, wrong type, impossible value."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    if "b" in mode:
        encoding = None
    try:
        # mkstemp makes the file 0600; give it the mode any new file gets (a shared recipe dir
        # must stay readable to colleagues).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(*dirs: str | os.PathLike) -> int:
    """Delete the ``.<name>.*.tmp`` files :func:`atomic_write` left in ``dirs`` when a run was killed.

    Such a file is never renamed into place, so nothing reads it; a stage calls this when it
    starts on a directory it owns (one stage at a time per directory).  Returns how many.
    """
    n = 0
    for d in dirs:
        for p in Path(d).glob(".*.tmp") if Path(d).is_dir() else []:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` with ``text``."""
    with atomic_write(path) as f:
        f.write(text)


def require_file(path: str | os.PathLike, what: str, hint: str) -> Path:
    """Return ``path`` if it is a non-empty file, else raise a DataError naming it and ``hint``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; {hint}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: {what} is empty; {hint}")
    return path
