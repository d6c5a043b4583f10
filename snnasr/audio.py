"""Reading audio for every corpus: WAV (RIFF), NIST SPHERE and FLAC through ``soundfile``.

``torchaudio.load`` needs an extra decoder package, so it is not used.  Failures become one
DataError line naming the file and what to do.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from snnasr.io import DataError


def wav_path(entry: str, where: str) -> Path:
    """Resolve a wav.scp value; Kaldi pipe commands ('... |') cannot be run here."""
    entry = entry.strip()
    if entry.endswith("|"):
        raise DataError(
            f"{where}: wav.scp entry is a command ({entry!r}); snnasr needs plain audio "
            f"paths: convert the audio to WAV/FLAC first"
        )
    return Path(entry)


def audio_info(path: str | os.PathLike, expected_rate: int | None = None) -> tuple[int, int]:
    """Return (num_samples, sample_rate) from the header, with the same checks as read_audio."""
    path = _existing(path)
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise DataError(f"{path}: unreadable audio ({_reason(e)}); check the file or re-copy the corpus") from None
    _check(path, info.frames, info.samplerate, info.channels, expected_rate)
    _check_complete(path, info.frames)
    return info.frames, info.samplerate


def read_audio(path: str | os.PathLike, expected_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read mono audio as float32 in the 16-bit integer range Kaldi uses; return (samples, rate).

    Float files are checked for NaN/inf first: the integer conversion would silently turn them
    into 0 and full scale.
    """
    path = _existing(path)
    try:
        if sf.info(str(path)).subtype in ("FLOAT", "DOUBLE"):
            raw, _ = sf.read(str(path), dtype="float64", always_2d=True)
            bad = np.flatnonzero(~np.isfinite(raw[:, 0]))
            if bad.size:
                raise DataError(
                    f"{path}: {bad.size} non-finite samples (NaN/inf, first at sample {bad[0]}); "
                    f"the recording is corrupt: re-export or remove it"
                )
        data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: unreadable audio ({_reason(e)}); check the file or re-copy the corpus") from None
    _check(path, data.shape[0], rate, data.shape[1], expected_rate)
    _check_complete(path, data.shape[0])
    return data[:, 0].astype(np.float32), rate


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise DataError(f"{path}: audio file not found{where}; check wav.scp or the corpus path")
    return path


def _reason(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _check(path: Path, frames: int, rate: int, channels: int, expected_rate: int | None) -> None:
    if frames == 0:
        raise DataError(f"{path}: audio is empty (0 samples); remove it or replace it with the real recording")
    if channels != 1:
        raise DataError(f"{path}: {channels} channels; snnasr expects mono audio")
    if expected_rate is not None and rate != expected_rate:
        raise DataError(f"{path}: sample rate {rate} Hz, expected {expected_rate} Hz; resample the corpus")


def _check_complete(path: Path, frames: int) -> None:
    """A file holding fewer samples than its header declares was cut short (a partial copy)."""
    declared = _declared_frames(path)
    if declared is not None and declared > frames:
        raise DataError(
            f"{path}: truncated audio (header declares {declared} samples, the file holds {frames}); "
            f"re-copy this file from the corpus"
        )


def _declared_frames(path: Path) -> int | None:
    """Sample count the NIST or RIFF header promises (soundfile silently reads what is there)."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if head.startswith(b"NIST_1A"):
        m = re.search(rb"sample_count -i (\d+)", head)
        return int(m.group(1)) if m else None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align = 12, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if chunk == b"fmt " and pos + 22 <= len(head):
            block_align = int.from_bytes(head[pos + 20 : pos + 22], "little")
        if chunk == b"data":
            # 0 and 0xFFFFFFFF mark streamed WAVs whose writer never knew the length.
            return size // block_align if block_align and 0 < size < 0xFFFFFFFF else None
        pos += 8 + size + (size & 1)
    return None
