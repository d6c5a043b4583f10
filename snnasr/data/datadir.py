"""Kaldi data directories: ``data/<set>/{wav.scp,text,utt2spk,spk2utt,...}``.

Tables are ``<key> <value>`` lines sorted by key in C-locale (byte) order, as Kaldi's
``validate_data_dir.sh`` expects.  snnasr adds one table of its own:

``phone_segments``
    ``<uttid> <start_sample> <end_sample> <phone>`` per line, sample positions at the
    audio's own rate (as in TIMIT ``.PHN``), covering the utterance in order.  Frame labels
    are derived from it by :mod:`snnasr.labels`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from snnasr.io import DataError, atomic_write

REQUIRED = ("wav.scp", "text", "utt2spk")


def sort_key(key: str) -> bytes:
    """C-locale order, as Kaldi's ``sort`` uses."""
    return key.encode("utf-8")


def read_table(path: str | os.PathLike) -> dict[str, str]:
    """Read a ``<key> <rest of line>`` table; duplicate keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the stage that writes it (e.g. snnasr prep) first")
    table: dict[str, str] = {}
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if key in table:
            raise DataError(f"{path}:{n}: duplicate key {key!r}; each utterance must appear once")
        table[key] = value.strip()
    return table


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 text file; bytes that are not UTF-8 are a DataError naming the line."""
    path = Path(path)
    lines = []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}:{n}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                f"re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            ) from None
    return lines


def write_table(path: str | os.PathLike, table: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
    """Atomically write a table sorted by key."""
    items = table.items() if isinstance(table, Mapping) else table
    with atomic_write(path) as f:
        for key, value in sorted(items, key=lambda kv: sort_key(kv[0])):
            f.write(f"{key} {value}\n" if value != "" else f"{key}\n")


def spk2utt(utt2spk: Mapping[str, str]) -> dict[str, str]:
    """Invert utt2spk (utterances in sorted order per speaker)."""
    inv: dict[str, list[str]] = defaultdict(list)
    for utt in sorted(utt2spk, key=sort_key):
        inv[utt2spk[utt]].append(utt)
    return {spk: " ".join(utts) for spk, utts in inv.items()}


def read_segments(path: str | os.PathLike) -> dict[str, list[tuple[int, int, str]]]:
    """Read ``phone_segments`` into ``{uttid: [(start, end, phone), ...]}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run snnasr prep for this corpus first")
    segs: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for n, line in enumerate(read_lines(path), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise DataError(f"{path}:{n}: expected '<uttid> <start> <end> <phone>', got {line.strip()!r}")
        try:
            segs[parts[0]].append((int(parts[1]), int(parts[2]), parts[3]))
        except ValueError:
            raise DataError(f"{path}:{n}: start/end must be integer sample positions") from None
    return dict(segs)


def write_segments(path: str | os.PathLike, segs: Mapping[str, list[tuple[int, int, str]]]) -> None:
    """Atomically write ``phone_segments`` sorted by utterance."""
    with atomic_write(path) as f:
        for utt in sorted(segs, key=sort_key):
            for start, end, phone in segs[utt]:
                f.write(f"{utt} {start} {end} {phone}\n")


def write_data_dir(
    out: str | os.PathLike,
    wav: Mapping[str, str],
    text: Mapping[str, str],
    utt2spk: Mapping[str, str],
    segments: Mapping[str, list[tuple[int, int, str]]] | None = None,
) -> Path:
    """Write a consistent data dir (the four Kaldi tables, plus phone_segments if given)."""
    out = Path(out)
    keys = set(wav)
    for name, table in (("text", text), ("utt2spk", utt2spk)):
        if set(table) != keys:
            missing = sorted(keys.symmetric_difference(table))[:3]
            raise DataError(f"{out}: {name} and wav.scp disagree on utterances (e.g. {missing})")
    if not keys:
        raise DataError(f"{out}: no utterances to write")
    out.mkdir(parents=True, exist_ok=True)
    if segments is not None:
        write_segments(out / "phone_segments", segments)
    write_table(out / "text", text)
    write_table(out / "utt2spk", utt2spk)
    write_table(out / "spk2utt", spk2utt(utt2spk))
    write_table(out / "wav.scp", wav)  # last: its presence marks the dir as complete
    return out


def find_wavs(corpus: str | os.PathLike, subdir: str, hint: str) -> list[Path]:
    """WAVs of ``corpus/subdir`` or of ``corpus`` itself, sorted by name (flat-folder corpora).

    ``hint`` says what the user should give instead (e.g. "the waves_yesno folder or its parent").
    """
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise DataError(f"{corpus}: folder not found; give {hint}")
    folder = corpus / subdir if (corpus / subdir).is_dir() else corpus
    waves = sorted(p for p in folder.iterdir() if p.suffix == ".wav" and p.is_file())
    if not waves:
        raise DataError(f"{folder}: no .wav files; give {hint}")
    return waves


def validate_data_dir(d: str | os.PathLike) -> dict[str, int]:
    """Kaldi ``validate_data_dir.sh``-style checks; return counts of utterances and speakers."""
    d = Path(d)
    if not d.is_dir():
        raise DataError(f"{d}: data dir not found; run snnasr prep first")
    tables = {name: read_table(d / name) for name in REQUIRED}
    keys = list(tables["wav.scp"])
    if not keys:
        raise DataError(f"{d}/wav.scp: empty; the corpus produced no utterances")
    for name, table in tables.items():
        order = list(table)
        if order != sorted(order, key=sort_key):
            raise DataError(f"{d}/{name}: not sorted by key (C locale); rewrite it sorted")
        if set(order) != set(keys):
            diff = sorted(set(order).symmetric_difference(keys))[:3]
            raise DataError(f"{d}/{name}: utterances differ from wav.scp (e.g. {diff})")
    s2u = read_table(d / "spk2utt") if (d / "spk2utt").exists() else spk2utt(tables["utt2spk"])
    if s2u != spk2utt(tables["utt2spk"]):
        raise DataError(f"{d}/spk2utt: does not match utt2spk; regenerate it from utt2spk")
    return {"utterances": len(keys), "speakers": len(s2u)}
