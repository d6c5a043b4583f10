"""The native scan's C library (``native_scan.c``): compiled at first use, cached, loaded with ctypes.

Why compiled at run time rather than shipped: the code is small (one file, ~0.5 s to compile),
is built for the machine it runs on (``-march=native``: AVX-512/AVX2 where present) and needs no
build step or binary wheel; every machine of this project has a C compiler (``$CC``, else
``cc``/``gcc``).  Where none is found, compilation fails or the library cannot be loaded,
:func:`library` returns None and the scans run their ``fused`` torch kernels instead (a clean
fallback, tested).

Flags: ``-O3 -march=native -ffp-contract=off`` (no implicit fused multiply-add: each product
rounds separately, as torch's ops do) without ``-ffast-math``; ``-DTORCH_FMA`` where torch's own
``addcmul`` is a fused multiply-add (:func:`torch_fuses_multiply_add`), so that the C code's
``addcmul``s round as torch's; with glibc's vector maths library
(``libmvec``, x86-64) ``exp`` is vectorised (``-DVECTOR_MATH``, 4x faster than scalar ``exp`` at
[8, 550]); if that build fails, a scalar one is tried.

Cache: ``$SNNASR_CACHE_DIR``, else ``$XDG_CACHE_HOME/snnasr``, else ``~/.cache/snnasr``; if that
is not writable, a private temporary directory (compiled once per process).  The file name is a
hash of the source, the flags, the compiler's version and this CPU's feature flags, so a cache
shared between machines never loads code built for another CPU, and an edited source is rebuilt.
Each build writes a private temporary file and renames it into place, so concurrent processes
(parallel tests, several trainings) never load a half-written library.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("native_scan.c")
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fopenmp-simd", "-fPIC", "-shared"]
# Tried in order: vectorised exp from libmvec, then plain libm.
VARIANTS: tuple[tuple[list[str], list[str]], ...] = ((["-DVECTOR_MATH"], ["-lmvec", "-lm"]), ([], ["-lm"]))


def torch_fuses_multiply_add() -> bool:
    """Whether torch's CPU ``addcmul`` rounds once (a fused multiply-add), as its AVX2/AVX-512
    kernels do: the C code then uses ``fma`` for the same ops, so that it rounds as torch does.
    Checked on values where one rounding and two differ: ``(1 + 2^-27)^2 - 1``."""
    a = torch.full((64,), 1 + 2**-27, dtype=torch.float64)  # 64: torch's vectorised loop
    return bool(torch.addcmul(torch.full_like(a, -1.0), a, a)[0] != 2**-26)


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else ``cc`` or ``gcc`` on the PATH; None if there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def cache_dir() -> Path:
    """Where built libraries are kept (see the module docstring); created if missing."""
    env = os.environ.get("SNNASR_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME")
    try:
        base = Path(env) if env else Path.home() / ".cache"
        path = base if os.environ.get("SNNASR_CACHE_DIR") else base / "snnasr"
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except (OSError, RuntimeError):  # RuntimeError: no home directory
        pass
    return _private_dir()


@functools.cache
def _private_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="snnasr-native-"))


def _build(cc: str, directory: Path) -> Path | None:
    source = SOURCE.read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    fused = ["-DTORCH_FMA"] if torch_fuses_multiply_add() else []
    for defines, libs in VARIANTS:
        args = [*FLAGS, *fused, *defines]
        key = hashlib.sha256("\0".join([source.hex(), *args, *libs, version, _cpu_flags()]).encode()).hexdigest()
        target = directory / f"native_scan-{key[:16]}.so"
        if target.exists():
            return target
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".native_scan-", suffix=".so")
        os.close(fd)
        try:
            done = subprocess.run([cc, *args, str(SOURCE), "-o", tmp, *libs], capture_output=True, timeout=120)
            if done.returncode == 0:
                os.replace(tmp, target)
                return target
        except (OSError, subprocess.SubprocessError):
            pass
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return None


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded library, built if needed (once per process); None where that is impossible."""
    cc = compiler()
    if cc is None or not SOURCE.exists():
        return None
    path = _build(cc, cache_dir())
    if path is None:
        return None
    try:
        return ctypes.CDLL(str(path))
    except OSError:
        return None
