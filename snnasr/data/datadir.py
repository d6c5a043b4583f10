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


class DataDirCheck:
    """What :func:`check_data_dir` found: per-utterance problems (fixable by dropping the
    utterance) and whole-table ones (unsorted, stale spk2utt: fixable by rewriting).

    ``tables`` hold the first occurrence of every key, so a repaired copy can be written.
    """

    def __init__(self, d: Path) -> None:
        self.dir = d
        self.tables: dict[str, dict[str, str]] = {}
        self.bad: dict[str, str] = {}  # uttid -> first problem, "<table>:<line>: ..."
        self.rewrite: list[str] = []  # "<table>: ..." problems fixed by rewriting the table

    def problems(self) -> list[str]:
        return [f"{self.dir}/{why}" for why in self.bad.values()] + [f"{self.dir}/{why}" for why in self.rewrite]

    def kept(self) -> list[str]:
        keys = set(self.tables["wav.scp"])
        return sorted((k for k in keys if k not in self.bad), key=sort_key)


def _scan(d: Path, name: str, check: DataDirCheck) -> None:
    """Read table ``name`` leniently into ``check`` (first key wins), noting every problem."""
    table: dict[str, str] = {}
    order: list[str] = []
    for n, line in enumerate(read_lines(d / name), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        value = value.strip()
        where = f"{name}:{n}"
        if key in table:
            check.bad.setdefault(key, f"{where}: duplicate key {key!r}; each utterance must appear once")
            continue
        if name == "utt2spk" and not value:
            check.bad.setdefault(key, f"{where}: utterance {key!r} has no speaker; give every utterance a speaker id")
        elif name == "utt2spk" and len(value.split()) > 1:
            check.bad.setdefault(
                key,
                f"{where}: {line.strip()!r} has {len(value.split()) + 1} fields, expected '<uttid> <speaker>'; "
                f"ids cannot contain spaces (is the uttid or speaker written with one? use '_')",
            )
        elif name == "wav.scp" and not value:
            check.bad.setdefault(key, f"{where}: utterance {key!r} has no audio path")
        table[key] = value
        order.append(key)
    if order != sorted(order, key=sort_key):
        check.rewrite.append(f"{name}: not sorted by key (C locale); rewrite it sorted")
    check.tables[name] = table


def check_data_dir(d: str | os.PathLike) -> DataDirCheck:
    """Every problem Kaldi's ``validate_data_dir.sh`` looks for, collected rather than raised.

    Raises DataError only for what no repair can fix: a missing dir or table, an empty
    wav.scp, bytes that are not UTF-8.
    """
    d = Path(d)
    if not d.is_dir():
        raise DataError(f"{d}: data dir not found; run snnasr prep first")
    check = DataDirCheck(d)
    for name in REQUIRED:
        if not (d / name).is_file():
            raise DataError(f"{d / name}: not found; run the stage that writes it (e.g. snnasr prep) first")
        _scan(d, name, check)
    keys = set(check.tables["wav.scp"])
    if not keys:
        raise DataError(f"{d}/wav.scp: empty; the corpus produced no utterances")
    for name in REQUIRED[1:]:
        for utt in sorted(keys.symmetric_difference(check.tables[name]), key=sort_key):
            where = "wav.scp" if utt in check.tables[name] else name
            check.bad.setdefault(utt, f"{where}: utterances differ from wav.scp (e.g. [{utt!r}] is not in {where})")
    if (d / "spk2utt").exists():
        try:
            s2u = read_table(d / "spk2utt")
        except DataError:
            s2u = None
        if s2u != spk2utt({u: s for u, s in check.tables["utt2spk"].items() if u in keys}):
            check.rewrite.append("spk2utt: does not match utt2spk; regenerate it from utt2spk")
    return check


def validate_data_dir(d: str | os.PathLike) -> dict[str, int]:
    """Kaldi ``validate_data_dir.sh``: the first problem is a DataError saying how many there are.

    Returns counts of utterances and speakers.  ``snnasr validate --fix`` (:func:`fix_data_dir`)
    writes a repaired copy.
    """
    check = check_data_dir(d)
    problems = check.problems()
    if problems:
        more = f" ({len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataError(f"{problems[0]}{more}; snnasr validate --fix writes a repaired copy")
    return {"utterances": len(check.tables["wav.scp"]), "speakers": len(set(check.tables["utt2spk"].values()))}


def fix_data_dir(d: str | os.PathLike, out: str | os.PathLike) -> dict[str, int]:
    """Write a repaired copy of ``d`` to ``out``, as Kaldi's ``fix_data_dir.sh``.

    Utterances with a problem are dropped (listed in ``out/dropped``); tables are written
    sorted and spk2utt regenerated; ``phone_segments`` keeps the kept utterances.  Returns
    kept and dropped counts.
    """
    from snnasr.data.drops import record_dropped

    d, out = Path(d), Path(out)
    check = check_data_dir(d)
    kept = check.kept()
    if not kept:
        raise DataError(f"{d}: no utterance without a problem (first: {check.problems()[0]}); nothing to keep")
    keep = set(kept)
    segments = read_segments(d / "phone_segments") if (d / "phone_segments").is_file() else None
    write_data_dir(
        out,
        wav={u: check.tables["wav.scp"][u] for u in kept},
        text={u: check.tables["text"][u] for u in kept},
        utt2spk={u: check.tables["utt2spk"][u] for u in kept},
        segments={u: s for u, s in segments.items() if u in keep} if segments is not None else None,
    )
    # Lines whose key is no utterance of wav.scp (a mangled id) are simply not copied.
    dropped = {u: why for u, why in check.bad.items() if u in check.tables["wav.scp"]}
    record_dropped(out, "validate", dropped)
    return {"utterances": len(kept), "dropped": len(dropped)}
