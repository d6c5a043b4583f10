"""Bad utterances: dropped by name, counted, listed in ``data/<set>/dropped``; too many fail the stage.

Real corpora have a few broken files (an LDC TIMIT ``.PHN`` that ends before its audio, a
truncated recording).  As Kaldi's ``steps/make_fbank.sh`` does, a stage drops such an utterance
with one warning line naming it and why, and fails only when more than a set fraction of the set
is bad (default 5 %, Kaldi's), or at the first one with ``strict``.  Every stage that drops
writes its entries to ``data/<set>/dropped`` (``<uttid> <stage>: <reason>`` per line, sorted),
replacing the entries it wrote before and keeping the other stages'; later stages read only what
was kept, because the dropping stage leaves the utterance out of everything it writes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from snnasr.data.datadir import sort_key
from snnasr.io import ConfigError, DataError, write_text

DEFAULT_MAX_BAD_FRACTION = 0.05
DROPPED = "dropped"


class BadUtterances:
    """Collects the utterances one stage drops from one set, and enforces the limit.

    ``stage`` names the stage in the warning lines and in ``dropped`` (e.g. ``features``).
    """

    def __init__(
        self,
        stage: str,
        data_dir: str | os.PathLike,
        max_fraction: float = DEFAULT_MAX_BAD_FRACTION,
        strict: bool = False,
    ) -> None:
        check_max_fraction(max_fraction)
        self.stage = stage
        self.data_dir = Path(data_dir)
        self.max_fraction = max_fraction
        self.strict = strict
        self.reasons: dict[str, str] = {}

    def drop(self, uttid: str, error: DataError | str) -> None:
        """Drop ``uttid`` for ``error`` (one warning line); with ``strict``, raise it instead."""
        reason = str(error)
        if reason.startswith(f"{uttid}: "):
            reason = reason[len(uttid) + 2 :]
        if self.strict:
            raise DataError(f"{uttid}: {reason} (--strict: no bad utterance allowed)")
        self.reasons[uttid] = reason
        print(f"snnasr {self.stage}: warning: dropped {uttid}: {reason}", file=sys.stderr)

    def __contains__(self, uttid: str) -> bool:
        return uttid in self.reasons

    def __len__(self) -> int:
        return len(self.reasons)

    def finish(self, total: int) -> None:
        """Fail when more than ``max_fraction`` of ``total`` is bad; else record ``dropped``."""
        self.check(total)
        record_dropped(self.data_dir, self.stage, self.reasons)

    def check(self, total: int) -> None:
        """Fail as soon as more than ``max_fraction`` of ``total`` is bad (before more work is done)."""
        n = len(self.reasons)
        if n > self.max_fraction * total:
            utt, reason = next(iter(self.reasons.items()))
            raise DataError(
                f"{self.data_dir}: {n} of {total} utterances are bad, more than {self.max_fraction:.0%} "
                f"(first: {utt}: {reason}); fix them, or allow more with --max-bad-fraction"
            )


def check_max_fraction(value: float) -> None:
    """A fraction of 1 or more would let a stage pass with nothing left."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"--max-bad-fraction {value}: must be in [0, 1) (0.05 = Kaldi's 5 %)")


def read_dropped(data_dir: str | os.PathLike) -> dict[str, str]:
    """``{uttid: "<stage>: <reason>"}`` of ``data_dir/dropped`` (empty when absent)."""
    path = Path(data_dir) / DROPPED
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        utt, _, rest = line.partition(" ")
        if utt:
            out[utt] = rest
    return out


def record_dropped(data_dir: str | os.PathLike, stage: str, reasons: dict[str, str]) -> None:
    """Replace ``stage``'s entries in ``data_dir/dropped``; remove the file when nothing is dropped."""
    path = Path(data_dir) / DROPPED
    kept = {u: r for u, r in read_dropped(data_dir).items() if not r.startswith(f"{stage}: ")}
    kept.update({u: f"{stage}: {r}" for u, r in reasons.items()})
    if not kept:
        path.unlink(missing_ok=True)
        return
    write_text(path, "".join(f"{u} {kept[u]}\n" for u in sorted(kept, key=sort_key)))
