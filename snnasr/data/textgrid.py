"""A reader for Praat TextGrids (the long and the short text format), enough for MFA output.

No TextGrid library is installed (``praatio`` and ``textgrid`` exist on PyPI), and the format
is small: Praat's own text reader ignores everything but numbers, quoted strings and
``<flags>``, which makes the long format the short one with labels around it.  So one tokenizer
reads both: drop ``[n]`` indices and ``name =`` labels, keep the values in order.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from snnasr.io import DataError

# Order matters: a quoted string ("" escapes a quote) wins over what looks like a number inside it.
_TOKEN = re.compile(r'"((?:[^"]|"")*)"|\[\s*\d*\s*\]|<(\w+)>|([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)')


class _Flag(str):
    """``<exists>`` / ``<absent>``: kept apart from a quoted text that happens to read the same."""


@dataclass(frozen=True)
class Interval:
    xmin: float
    xmax: float
    text: str


@dataclass(frozen=True)
class Tier:
    name: str
    kind: str  # "IntervalTier" or "TextTier" (points: xmin == xmax)
    xmin: float
    xmax: float
    intervals: list[Interval]


@dataclass(frozen=True)
class TextGrid:
    xmin: float
    xmax: float
    tiers: list[Tier]

    def tier(self, name: str) -> Tier | None:
        """The tier called ``name`` (case-insensitive), or ``<speaker> - name`` as MFA 2 writes it."""
        name = name.lower()
        for t in self.tiers:
            if t.name.lower() == name or t.name.lower().endswith(f" - {name}"):
                return t
        return None


def read_textgrid(path: str | os.PathLike) -> TextGrid:
    """Parse a text TextGrid (UTF-8 or UTF-16 with BOM); raise DataError naming the file if malformed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: unreadable TextGrid ({e.strerror}); check the file") from None
    text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-8-sig", "replace")
    if "ooBinaryFile" in text[:40]:
        raise DataError(f"{path}: binary TextGrid; save it as a text TextGrid (Praat 'Save as text file')")
    tokens = [_value(m) for m in _TOKEN.finditer(text) if not m.group(0).startswith("[")]
    try:
        return _parse(tokens)
    except (IndexError, ValueError, TypeError):
        raise DataError(f"{path}: not a valid TextGrid (long or short text format); re-export it") from None


def _value(m: re.Match) -> str | float:
    if m.group(1) is not None:
        return m.group(1).replace('""', '"')
    if m.group(2) is not None:
        return _Flag(m.group(2))
    return float(m.group(3))


def _parse(tok: list) -> TextGrid:
    pos = 0

    def take(kind: type):
        nonlocal pos
        value = tok[pos]
        pos += 1
        if not isinstance(value, kind) or isinstance(value, _Flag):
            raise ValueError(f"expected {kind.__name__} at token {pos}")
        return value

    if take(str) != "ooTextFile" or take(str) != "TextGrid":
        raise ValueError("not a TextGrid")
    xmin, xmax = take(float), take(float)
    if isinstance(tok[pos], _Flag):
        if tok[pos] == "absent":
            return TextGrid(xmin, xmax, [])
        pos += 1
    tiers = []
    for _ in range(int(take(float))):
        kind, name, t_min, t_max, n = take(str), take(str), take(float), take(float), int(take(float))
        if kind == "IntervalTier":
            items = [Interval(take(float), take(float), take(str)) for _ in range(n)]
        elif kind == "TextTier":
            items = []
            for _ in range(n):
                t = take(float)
                items.append(Interval(t, t, take(str)))
        else:
            raise ValueError(f"unknown tier class {kind}")
        tiers.append(Tier(name, kind, t_min, t_max, items))
    return TextGrid(xmin, xmax, tiers)
