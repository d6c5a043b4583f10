"""Kaldi ark/scp reading and writing over ``kaldi-io``.

This is the only module that imports ``kaldi_io``: at import it prints a KALDI_ROOT warning
banner and edits ``os.environ``; both are undone here so the user's terminal stays clean.
Archives are written next to their scp; the scp is renamed into place last, so a reader
that trusts the scp never sees a half-written archive.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from snnasr.io import DataError, atomic_write


def _import_kaldi_io():
    saved = dict(os.environ)
    with contextlib.redirect_stderr(io.StringIO()):
        import kaldi_io  # noqa: PLC0415
    os.environ.clear()
    os.environ.update(saved)
    return kaldi_io


kaldi_io = _import_kaldi_io()


def _write_ark_scp(items: Iterable[tuple[str, np.ndarray]], ark: Path, scp: Path, writer) -> int:
    ark, scp = Path(ark), Path(scp)
    n = 0
    # scp is entered first so it is renamed into place last, after the ark it points into.
    with atomic_write(scp, "w") as fs, atomic_write(ark, "wb") as fa:
        for key, value in items:
            if not key or any(c.isspace() for c in key):
                raise DataError(f"{ark}: invalid key {key!r}: Kaldi keys must be non-empty and have no spaces")
            fa.write(f"{key} ".encode())
            offset = fa.tell()
            writer(fa, value)
            fs.write(f"{key} {ark.resolve()}:{offset}\n")
            n += 1
    return n


def write_mat_ark_scp(
    items: Iterable[tuple[str, np.ndarray]], ark: str | os.PathLike, scp: str | os.PathLike, dtype: type = np.float32
) -> int:
    """Write float matrices (frames x dims) as a binary ark plus scp; return the count.

    ``dtype=np.float64`` writes Kaldi double matrices (``DM``), as CMVN stats are.
    """
    return _write_ark_scp(((k, np.asarray(v, dtype=dtype)) for k, v in items), Path(ark), Path(scp), kaldi_io.write_mat)


def write_vec_int_ark_scp(
    items: Iterable[tuple[str, np.ndarray]], ark: str | os.PathLike, scp: str | os.PathLike
) -> int:
    """Write int vectors (one label per frame) as a binary ark plus scp; return the count."""
    return _write_ark_scp(
        ((k, np.asarray(v, dtype=np.int32)) for k, v in items), Path(ark), Path(scp), kaldi_io.write_vec_int
    )


def _checked(path: str | os.PathLike, reader) -> Iterator[tuple[str, np.ndarray]]:
    path = Path(str(path))
    if not path.is_file():
        raise DataError(f"{path}: not found; run the stage that writes it first")
    try:
        yield from reader(str(path))
    except DataError:
        raise
    except Exception as e:  # kaldi_io raises bare exceptions on corrupt input
        raise DataError(f"{path}: cannot read as a Kaldi archive ({e}); regenerate it") from e


def _scp_reader(read_one):
    """Read an scp one entry at a time.

    kaldi_io's own scp readers skip unreadable entries with a printed warning (a corpus could
    shrink silently), so every entry here is read explicitly and a failure is an error.
    """

    def reader(path: str) -> Iterator[tuple[str, np.ndarray]]:
        with open(path) as f:
            for line in f:
                if line.strip():
                    key, rxfile = line.split(maxsplit=1)
                    yield key, read_one(rxfile.strip())

    return reader


def read_mat_scp(scp: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (key, float matrix) from an scp."""
    return _checked(scp, _scp_reader(kaldi_io.read_mat))


def read_mat_ark(ark: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (key, float matrix) from an ark (binary or text)."""
    return _checked(ark, kaldi_io.read_mat_ark)


def read_vec_int_scp(scp: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (key, int vector) from an scp."""
    return _checked(scp, _scp_reader(kaldi_io.read_vec_int))


def read_vec_int_ark(ark: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (key, int vector) from an ark, binary or text, gzipped when named ``*.gz``."""
    return _checked(ark, kaldi_io.read_vec_int_ark)
