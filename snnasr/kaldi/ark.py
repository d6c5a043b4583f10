"""Kaldi ark/scp reading and writing over ``kaldiio``: the one home of Kaldi's table formats.

Why kaldiio (and not kaldi-io, the first choice): Kaldi's feature scripts (``make_mfcc.sh``,
``make_fbank.sh``, ``copy-feats --compress=true``) write *compressed* matrices by default.
kaldiio reads every matrix kind Kaldi writes -- ``FM``/``DM`` (float, double), the compressed
``CM`` (8 bit with per-column quantiles), ``CM2`` (16 bit) and ``CM3`` (8 bit), binary or text,
int vectors -- under current numpy; kaldi-io 0.9.8 reads only ``CM`` and breaks on numpy >= 2.4
(``np.reshape(newshape=)``).  The fixtures in ``tests/data/kaldi_matrices`` were written by
Kaldi's own compression code (kaldi-native-io) and are checked against an independent decoder.

What stays here rather than in kaldiio:

- scp files are read line by line with each entry loaded explicitly, so an unreadable entry is
  an error naming the scp line, never a silently shorter corpus; entries that are commands
  (``... |``) are refused: they need Kaldi binaries, and running a shell line from a data file
  is not something a reader should do behind the user's back.
- ``*.gz`` archives (Kaldi's ``ali.N.gz``) are decompressed into memory first: kaldiio seeks
  back a few bytes per entry, which a gzip stream can only do by decompressing from the start.
- Archives are written next to their scp; the scp is renamed into place last, so a reader that
  trusts the scp never sees a half-written archive.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import kaldiio
import numpy as np
from kaldiio.matio import write_array

from snnasr.io import DataError, atomic_write

# Kaldi's CompressionMethod codes (matrix/compressed-matrix.h), by the token each one writes.
COMPRESSION = {"CM": 2, "CM2": 3, "CM3": 5}


def _write_ark_scp(
    items: Iterable[tuple[str, np.ndarray]], ark: Path, scp: Path, write: Callable[[io.BufferedIOBase, np.ndarray], int]
) -> int:
    n = 0
    # scp is entered first so it is renamed into place last, after the ark it points into.
    with atomic_write(scp, "w") as fs, atomic_write(ark, "wb") as fa:
        for key, value in items:
            if not key or any(c.isspace() for c in key):
                raise DataError(f"{ark}: invalid key {key!r}: Kaldi keys must be non-empty and have no spaces")
            fa.write(f"{key} ".encode())
            offset = fa.tell()
            write(cast(Any, fa), value)
            fs.write(f"{key} {ark.resolve()}:{offset}\n")
            n += 1
    return n


def write_mat_ark_scp(
    items: Iterable[tuple[str, np.ndarray]],
    ark: str | os.PathLike,
    scp: str | os.PathLike,
    dtype: type = np.float32,
    compress: str | None = None,
) -> int:
    """Write matrices (frames x dims) as a binary ark plus scp; return the count.

    ``dtype=np.float64`` writes Kaldi double matrices (``DM``), as CMVN stats are.  ``compress``
    = ``"CM"``, ``"CM2"`` or ``"CM3"`` writes Kaldi's compressed kinds instead (lossy; what
    ``copy-feats --compress=true --compression-method=2|3|5`` writes).
    """
    if compress is not None and compress not in COMPRESSION:
        raise ValueError(f"compress={compress!r}: choose one of {', '.join(COMPRESSION)}")
    method = COMPRESSION.get(compress) if compress else None
    return _write_ark_scp(
        ((k, np.asarray(v, dtype=dtype)) for k, v in items),
        Path(ark),
        Path(scp),
        lambda f, a: write_array(f, a, compression_method=method),
    )


def write_vec_int_ark_scp(
    items: Iterable[tuple[str, np.ndarray]], ark: str | os.PathLike, scp: str | os.PathLike
) -> int:
    """Write int vectors (one label per frame) as a binary ark plus scp; return the count."""
    return _write_ark_scp(((k, np.asarray(v, dtype=np.int32)) for k, v in items), Path(ark), Path(scp), write_array)


def _checked(path: Path, reader: Callable[[Path], Iterator[tuple[str, np.ndarray]]], ndim: int):
    """Read with ``reader``; every value must be a matrix (``ndim`` 2) or an int vector (1)."""
    if not path.is_file():
        raise DataError(f"{path}: not found; run the stage that writes it first")
    try:
        for key, value in reader(path):
            value = np.asarray(value)
            if value.ndim != ndim or (ndim == 1 and value.size and not np.issubdtype(value.dtype, np.integer)):
                want = "a matrix" if ndim == 2 else "an int vector"
                raise DataError(f"{path}: {key!r} is not {want} (shape {value.shape}, {value.dtype}); check the file")
            if ndim == 2 and not np.issubdtype(value.dtype, np.floating):
                value = value.astype(np.float32)  # a text matrix of whole numbers parses as int
            yield key, value
    except DataError:
        raise
    except Exception as e:  # kaldiio raises assertion/value errors on corrupt input
        raise DataError(f"{path}: cannot read as a Kaldi archive ({type(e).__name__}: {e}); regenerate it") from e


def scp_entries(scp: str | os.PathLike) -> list[tuple[str, str, int]]:
    """``(key, rxfile, line number)`` of every entry of an scp, without reading the archives.

    Raises DataError for a missing scp, an entry without a location, or a command entry.
    """
    path = Path(scp)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the stage that writes it first")
    entries = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            key, _, rxfile = line.strip().partition(" ")
            rxfile = rxfile.strip()
            if not rxfile:
                raise DataError(f"{path}:{n}: entry {key!r} has no location; regenerate the scp")
            if rxfile.endswith("|") or rxfile.startswith("|"):
                raise DataError(
                    f"{path}:{n}: entry {key!r} is a command ({rxfile}); snnasr reads files only: "
                    f"write the result to an ark first (e.g. copy-feats '{rxfile}' ark,scp:out.ark,out.scp)"
                )
            entries.append((key, rxfile, n))
    return entries


def load_entry(rxfile: str, where: str, key: str, fd_dict: dict | None = None) -> np.ndarray:
    """One scp entry (``ark:offset``), read on demand; errors name ``where`` (``scp:line``)."""
    try:
        return kaldiio.load_mat(rxfile, fd_dict=fd_dict)
    except FileNotFoundError:
        raise DataError(
            f"{where}: {rxfile.rsplit(':', 1)[0]} not found (relative paths are taken from the "
            f"current directory, as Kaldi does); regenerate the scp or run from where it was made"
        ) from None
    except Exception as e:
        raise DataError(f"{where}: cannot read {key!r} from {rxfile} ({type(e).__name__}: {e}); regenerate it") from e


def load_mat_entry(rxfile: str, where: str, key: str) -> np.ndarray:
    """A matrix scp entry as :func:`read_mat_scp` returns it (float32, or float64 for ``DM``)."""
    value = np.asarray(load_entry(rxfile, where, key))
    if value.ndim != 2:
        raise DataError(f"{where}: {key!r} is not a matrix (shape {value.shape}, {value.dtype}); check the file")
    return value if np.issubdtype(value.dtype, np.floating) else value.astype(np.float32)


# A binary int32 vector: b"\0B" <4, int32 n>, then n times <4, int32 value>.
_INT_VEC = np.dtype([("size", "i1"), ("value", "<i4")])


def _binary_int_vector(rxfile: str) -> np.ndarray | None:
    """The vector at ``ark:offset`` when it is binary int32; None for anything else.

    Why not kaldiio: it reads such a vector one element at a time (two reads and an unpack per
    frame), which made labels most of the cost of reading a training piece.
    """
    ark, _, offset = rxfile.rpartition(":")
    if not (ark and offset.isdigit()):
        return None
    try:
        with open(ark, "rb", buffering=0) as f:
            f.seek(int(offset))
            head = f.read(7)
            if len(head) != 7 or head[:3] != b"\0B\x04":
                return None
            (n,) = struct.unpack("<i", head[3:7])
            buf = f.read(5 * n) if n >= 0 else b""
    except FileNotFoundError:
        return None  # load_entry gives the one-line error
    if n < 0 or len(buf) != 5 * n:
        return None
    items = np.frombuffer(buf, dtype=_INT_VEC)
    if not np.all(items["size"] == 4):
        return None
    return items["value"].astype(np.int32)


def load_vec_int_entry(rxfile: str, where: str, key: str) -> np.ndarray:
    """An int-vector scp entry (one label per frame), read on demand."""
    fast = _binary_int_vector(rxfile)
    if fast is not None:
        return fast
    value = np.asarray(load_entry(rxfile, where, key))
    if value.ndim != 1 or (value.size and not np.issubdtype(value.dtype, np.integer)):
        raise DataError(f"{where}: {key!r} is not an int vector (shape {value.shape}, {value.dtype}); check the file")
    return value


# Binary matrix headers: b"\0B" + token; FM/DM then <size 4, int32 rows> <size 4, int32 cols>;
# compressed kinds then Kaldi's GlobalHeader without its format field: float min, float range, int32 rows, cols.
_FLOAT_TOKENS = {b"FM ", b"DM "}
_COMPRESSED_TOKENS = {b"CM ", b"CM2 ", b"CM3 "}


def _binary_shape(f: io.BufferedIOBase) -> tuple[int, int] | None:
    """Rows and columns from a binary matrix header at the file position; None if not one."""
    if f.read(2) != b"\0B":
        return None
    token = f.read(3)
    if token in _FLOAT_TOKENS:
        head = f.read(10)
        if len(head) == 10 and head[0] == 4 and head[5] == 4:
            return struct.unpack("<i", head[1:5])[0], struct.unpack("<i", head[6:10])[0]
        return None
    if token in (b"CM2", b"CM3"):
        token += f.read(1)
    if token not in _COMPRESSED_TOKENS:
        return None
    head = f.read(16)
    if len(head) != 16:
        return None
    _, _, rows, cols = struct.unpack("<ffii", head)
    return rows, cols


def mat_shape(rxfile: str, where: str, key: str) -> tuple[int, int]:
    """``(frames, dims)`` of a matrix entry, from its header alone where it is binary.

    Why: a corpus index needs every utterance's length, and reading a header costs a seek and
    a few bytes where loading costs the whole matrix (Kaldi's ``feat-to-len`` reads it all).
    Text matrices and ranged entries (``ark:off[a:b]``) are loaded to be measured.
    """
    ark, _, offset = rxfile.rpartition(":")
    if ark and offset.isdigit():
        try:
            with open(ark, "rb", buffering=0) as f:
                f.seek(int(offset))
                shape = _binary_shape(cast(Any, f))
        except FileNotFoundError:
            shape = None  # load_entry gives the one-line error
        if shape is not None:
            return shape
    value = load_mat_entry(rxfile, where, key)
    return int(value.shape[0]), int(value.shape[1])


_FM_HEADER = 15  # b"\0BFM " + <4, int32 rows> + <4, int32 cols>


def load_mat_rows(rxfile: str, where: str, key: str, start: int, end: int) -> np.ndarray:
    """Rows ``start:end`` of a matrix entry, as :func:`load_mat_entry` would slice them.

    Why: the length curriculum trains on pieces of utterances, so one utterance is read once per
    piece; from an uncompressed float matrix (what ``snnasr features`` writes) only the piece's
    rows are read.  Other kinds (compressed, double, text) are loaded whole, then sliced.
    """
    ark, _, offset = rxfile.rpartition(":")
    if ark and offset.isdigit():
        try:
            with open(ark, "rb", buffering=0) as f:
                f.seek(int(offset))
                head = f.read(_FM_HEADER)
                if len(head) == _FM_HEADER and head[:5] == b"\0BFM " and head[5] == 4 and head[10] == 4:
                    rows, cols = struct.unpack("<i", head[6:10])[0], struct.unpack("<i", head[11:15])[0]
                    if 0 <= start <= end <= rows:
                        f.seek(int(offset) + _FM_HEADER + 4 * start * cols)
                        buf = f.read(4 * (end - start) * cols)
                        if len(buf) == 4 * (end - start) * cols:
                            return np.frombuffer(buf, dtype="<f4").reshape(end - start, cols).astype(np.float32)
        except FileNotFoundError:
            pass  # load_mat_entry gives the one-line error
    return load_mat_entry(rxfile, where, key)[start:end]


def _read_scp(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    handles: dict = {}  # one open file per ark, reused across the scp's entries
    try:
        for key, rxfile, n in scp_entries(path):
            yield key, load_entry(rxfile, f"{path}:{n}", key, fd_dict=handles)
    finally:
        for handle in handles.values():
            handle.close()


def _read_ark(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    if path.suffix == ".gz":
        yield from kaldiio.load_ark(io.BytesIO(gzip.decompress(path.read_bytes())))
    else:
        with open(path, "rb") as f:
            yield from kaldiio.load_ark(f)


def read_mat_scp(scp: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (key, matrix) from an scp; every Kaldi kind (FM/DM/CM/CM2/CM3, binary or text).

    Compressed and float matrices come back as float32, double ones as float64.
    """
    return _checked(Path(scp), _read_scp, 2)


def read_mat_ark(ark: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (key, matrix) from an ark (binary or text, any matrix kind, gzipped when ``*.gz``)."""
    return _checked(Path(ark), _read_ark, 2)


def read_vec_int_scp(scp: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (key, int vector) from an scp."""
    return _checked(Path(scp), _read_scp, 1)


def read_vec_int_ark(ark: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (key, int vector) from an ark, binary or text, gzipped when named ``*.gz``."""
    return _checked(Path(ark), _read_ark, 1)
