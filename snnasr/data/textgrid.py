"""Praat TextGrids (long and short text format, UTF-8 or UTF-16), as MFA writes them, via praatio.

praatio is what the Montreal Forced Aligner itself reads and writes TextGrids with, so its
parser agrees with MFA's output by construction; it replaced a hand-written tokenizer here.
This module only adapts its result to the small frozen types the corpus code uses (a tier's
intervals as ``(xmin, xmax, text)``, empty intervals kept: MFA's silences are empty labels) and
turns every parse failure into one :class:`DataError` naming the file.  An interval past the
grid's own ``xmax`` widens the grid (praatio's ``silence`` mode) rather than failing here: what
matters is the audio, and the corpus code checks every interval against it.  Binary TextGrids
(Praat's "Save as binary file") are not read by praatio, so they get their own message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from praatio import textgrid as praat_textgrid

from snnasr.io import DataError


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
    """Parse a text TextGrid; raise DataError naming the file if it is unreadable or malformed."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise DataError(f"{path}: unreadable TextGrid ({e.strerror}); check the file") from None
    if b"ooBinaryFile" in head:
        raise DataError(f"{path}: binary TextGrid; save it as a text TextGrid (Praat 'Save as text file')")
    try:
        grid = praat_textgrid.openTextgrid(str(path), includeEmptyIntervals=True, reportingMode="silence")
    except Exception as e:  # praatio raises its own errors, and Index/Value/Unicode errors on garbage
        reason = " ".join(str(e).split(". ")[0].split()) or type(e).__name__
        raise DataError(
            f"{path}: not a valid TextGrid ({reason}); re-export it as a long or short text TextGrid"
        ) from None
    tiers = []
    for name in grid.tierNames:
        tier = grid.getTier(name)
        if isinstance(tier, praat_textgrid.IntervalTier):
            kind = "IntervalTier"
            items = [Interval(e.start, e.end, e.label) for e in tier.entries]
        else:
            kind = "TextTier"
            items = [Interval(e.time, e.time, e.label) for e in tier.entries]
        tiers.append(Tier(name, kind, tier.minTimestamp, tier.maxTimestamp, items))
    return TextGrid(grid.minTimestamp, grid.maxTimestamp, tiers)
