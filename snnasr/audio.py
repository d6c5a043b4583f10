"""Reading audio for every corpus: WAV (RIFF), NIST SPHERE and FLAC through ``soundfile``.

``torchaudio.load`` needs an extra decoder package, so it is not used.  Failures become one
DataError line naming the file and what to do.
"""

from __future__ import annotations

import os
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
    path = Path(path)
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise DataError(f"{path}: unreadable audio ({_reason(e)}); check the file or re-copy the corpus") from None
    _check(path, info.frames, info.samplerate, info.channels, expected_rate)
    return info.frames, info.samplerate


def read_audio(path: str | os.PathLike, expected_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read mono audio as float32 in the 16-bit integer range Kaldi uses; return (samples, rate)."""
    path = Path(path)
    try:
        data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    except Exception as e:
        raise DataError(f"{path}: unreadable audio ({_reason(e)}); check the file or re-copy the corpus") from None
    _check(path, data.shape[0], rate, data.shape[1], expected_rate)
    return data[:, 0].astype(np.float32), rate


def _reason(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _check(path: Path, frames: int, rate: int, channels: int, expected_rate: int | None) -> None:
    if frames == 0:
        raise DataError(f"{path}: audio is empty (0 samples); remove it or replace it with the real recording")
    if channels != 1:
        raise DataError(f"{path}: {channels} channels; snnasr expects mono audio")
    if expected_rate is not None and rate != expected_rate:
        raise DataError(f"{path}: sample rate {rate} Hz, expected {expected_rate} Hz; resample the corpus")
