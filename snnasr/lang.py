"""Label sets of a recipe: ``data/lang/``.

A recipe may carry several label levels for the same frames (TIMIT: ``phone61``, ``phone48``,
``phone39``; Kaldi alignments: ``pdf`` and ``phone``).  ``data/lang/`` holds:

``labels.yaml``
    ``levels`` (list), ``default`` (level trained on), ``score`` (level PER is scored on),
    ``silence`` (symbols of the score level dropped before PER), and optionally
    ``segment_level`` (the level of the symbols in ``data/<set>/phone_segments``) and
    ``utterance_level`` (the classes of ``task: utterance``: one label per utterance).
``<level>.txt``
    symbol table, ``<symbol> <id>`` with ids 0..N-1 (the class indices of the labels).
``map_<A>_<B>.txt``
    ``<symbol of A> <symbol of B>`` for every symbol of A; ``-`` means "no label in B"
    (TIMIT ``q``).  Used to derive levels from segments and to fold to the score level.

Frame labels of level L for set S live in ``data/S/labels_L.scp`` (+ ``.ark``).  Utterance labels
of the utterance level U live in ``data/S/utt2U`` (a Kaldi table ``<uttid> <symbol of U>``); U's
symbol table ``U.txt`` sits beside the frame levels' but U is not one of ``levels``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from snnasr.io import DataError, write_text

DELETED = "-"


@dataclass
class Lang:
    dir: Path
    levels: dict[str, list[str]]
    default: str
    score: str
    silence: list[str]
    segment_level: str | None = None
    maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    utterance_level: str | None = None
    utterance_classes: list[str] = field(default_factory=list)

    def num_classes(self, level: str) -> int:
        return len(self.symbols(level))

    def symbols(self, level: str) -> list[str]:
        if level not in self.levels:
            raise DataError(f"{self.dir}: label level {level!r} unknown; this recipe has {', '.join(self.levels)}")
        return self.levels[level]

    def index(self, level: str) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.symbols(level))}

    def symbol_map(self, src: str, dst: str) -> dict[str, str]:
        """Symbol-to-symbol map from level ``src`` to ``dst`` (identity when equal)."""
        if src == dst:
            return {s: s for s in self.symbols(src)}
        if (src, dst) not in self.maps:
            raise DataError(f"{self.dir}: no map_{src}_{dst}.txt; cannot map {src} labels to {dst}")
        return self.maps[(src, dst)]

    def fold(self, src: str, dst: str) -> np.ndarray:
        """Class-index map ``src`` -> ``dst`` as an int array; -1 where the label is deleted."""
        m = self.symbol_map(src, dst)
        dst_index = self.index(dst)
        return np.array([dst_index[m[s]] if m[s] != DELETED else -1 for s in self.symbols(src)], dtype=np.int64)

    def silence_ids(self, level: str) -> set[int]:
        idx = self.index(level)
        return {idx[s] for s in self.silence if s in idx}


def write_lang(
    lang_dir: str | os.PathLike,
    levels: dict[str, list[str]],
    default: str,
    score: str,
    silence: list[str],
    maps: dict[tuple[str, str], dict[str, str]] | None = None,
    segment_level: str | None = None,
    utterance_classes: tuple[str, list[str]] | None = None,
) -> Path:
    """Write ``data/lang`` (symbol tables, maps, then labels.yaml last).

    ``utterance_classes``: ``(level name, symbols)`` of per-utterance labels, if the corpus has them.
    """
    lang_dir = Path(lang_dir)
    lang_dir.mkdir(parents=True, exist_ok=True)
    for name, syms in levels.items():
        if len(set(syms)) != len(syms):
            raise DataError(f"{lang_dir}: duplicate symbols in level {name}")
        write_text(lang_dir / f"{name}.txt", "".join(f"{s} {i}\n" for i, s in enumerate(syms)))
    for (src, dst), m in (maps or {}).items():
        known_dst = set(levels[dst]) | {DELETED}
        bad = [v for v in m.values() if v not in known_dst]
        if set(m) != set(levels[src]) or bad:
            raise DataError(f"{lang_dir}: map {src}->{dst} must cover every {src} symbol and map into {dst}")
        write_text(lang_dir / f"map_{src}_{dst}.txt", "".join(f"{a} {m[a]}\n" for a in levels[src]))
    meta = {"levels": list(levels), "default": default, "score": score, "silence": list(silence)}
    if segment_level:
        meta["segment_level"] = segment_level
    if utterance_classes is not None:
        name, syms = utterance_classes
        if name in levels or len(set(syms)) != len(syms):
            raise DataError(f"{lang_dir}: utterance level {name!r} must be new and have distinct symbols")
        write_text(lang_dir / f"{name}.txt", "".join(f"{s} {i}\n" for i, s in enumerate(syms)))
        meta["utterance_level"] = name
    for key in ("default", "score"):
        if meta[key] not in levels:
            raise DataError(f"{lang_dir}: {key} level {meta[key]!r} is not one of {list(levels)}")
    write_text(lang_dir / "labels.yaml", yaml.safe_dump(meta, sort_keys=False))
    return lang_dir


def _read_symbols(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: symbol table of {what} missing; re-run snnasr prep")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if [int(r[1]) for r in rows] != list(range(len(rows))):
        raise DataError(f"{path}: ids must be 0..N-1 in order")
    return [r[0] for r in rows]


def load_lang(lang_dir: str | os.PathLike) -> Lang:
    lang_dir = Path(lang_dir)
    meta_path = lang_dir / "labels.yaml"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: not found; run snnasr prep for this recipe first")
    meta = yaml.safe_load(meta_path.read_text()) or {}
    levels: dict[str, list[str]] = {}
    for name in meta.get("levels", []):
        levels[name] = _read_symbols(lang_dir / f"{name}.txt", f"level {name}")
    utterance_level = meta.get("utterance_level")
    utterance_classes = []
    if utterance_level:
        utterance_classes = _read_symbols(lang_dir / f"{utterance_level}.txt", f"utterance level {utterance_level}")
    maps = {}
    for path in sorted(lang_dir.glob("map_*_*.txt")):
        for src in levels:
            for dst in levels:
                if path.name == f"map_{src}_{dst}.txt":
                    maps[(src, dst)] = dict(line.split()[:2] for line in path.read_text().splitlines() if line.strip())
    return Lang(
        dir=lang_dir,
        levels=levels,
        default=meta["default"],
        score=meta["score"],
        silence=list(meta.get("silence", [])),
        segment_level=meta.get("segment_level"),
        maps=maps,
        utterance_level=utterance_level,
        utterance_classes=utterance_classes,
    )
