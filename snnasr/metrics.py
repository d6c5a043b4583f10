"""Scoring without Kaldi: frame accuracy, phone sequences from frame labels, PER with S/D/I.

Frame-level models emit one class per 10 ms frame; a phone error rate needs phone *sequences*.
The reported PER decodes them (:mod:`snnasr.decode`); the "collapse PER" kept beside it takes
the argmax per frame instead, so every flicker is an insertion.  The reference (frame labels)
and the collapse hypothesis go through the same :func:`phone_sequence`: map to the score level (dropping classes mapped to "no label", TIMIT
``q``), collapse runs of the same phone, then drop silence.  Applying one function to both
sides keeps the comparison fair; collapsing *after* mapping means two training-level phones
that fold to the same score phone (``ao``/``aa`` -> ``aa``) count once on both sides.  Silence is
dropped after collapsing, so ``a sil a`` stays two phones, as Kaldi scores it.

Arrays are 1-D int sequences of class ids; ``-1`` means "no label" and is never scored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import kaldialign
import numpy as np


@dataclass
class EditCounts:
    """Levenshtein alignment counts of hypothesis against reference (unit costs)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """(S + D + I) / N; NaN when the reference is empty (nothing to score)."""
        return self.errors / self.ref_length if self.ref_length else float("nan")

    def as_result(self) -> dict[str, float | int]:
        """The fields ``results.json`` stores for a PER: rate and the S/D/I/N counts behind it."""
        return {
            "per": self.rate,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "ref_phones": self.ref_length,
        }

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.ref_length + other.ref_length,
        )


def edit_distance(ref: Sequence, hyp: Sequence) -> EditCounts:
    """Minimum-edit alignment counts (unit costs) from kaldialign (Kaldi's own algorithm).

    Symbols are ints (class ids) or strings; the S/D/I split is the one Kaldi's ``compute-wer``
    reports, and S + D + I is the Levenshtein distance.
    """
    d = kaldialign.edit_distance(list(ref), list(hyp))
    return EditCounts(d["sub"], d["del"], d["ins"], len(ref))


def total_edits(pairs: Iterable[tuple[Sequence, Sequence]]) -> EditCounts:
    """Sum of :func:`edit_distance` over ``(ref, hyp)`` pairs: a corpus-level PER, not a mean of rates."""
    total = EditCounts()
    for ref, hyp in pairs:
        total = total + edit_distance(ref, hyp)
    return total


def collapse(seq: Iterable[int]) -> list[int]:
    """Merge runs of the same symbol: ``a a b b a`` -> ``a b a``."""
    out: list[int] = []
    for s in seq:
        if not out or out[-1] != s:
            out.append(int(s))
    return out


def smooth_labels(ids: np.ndarray, window: int) -> np.ndarray:
    """Sliding majority vote over ``window`` frames (odd; 1 = off).

    The categorical counterpart of a median filter: it removes one- or two-frame blips that
    would each become an insertion after collapsing.  Ties keep the centre frame's label.
    """
    ids = np.asarray(ids)
    if window <= 1 or len(ids) == 0:
        return ids.copy()
    half = window // 2
    out = ids.copy()
    for t in range(len(ids)):
        votes = Counter(ids[max(0, t - half) : t + half + 1].tolist())
        best, count = votes.most_common(1)[0]
        if count > votes[int(ids[t])]:
            out[t] = best
    return out


def phone_sequence(
    frame_ids: np.ndarray, fold: np.ndarray | None, silence: set[int], smooth_window: int = 1
) -> list[int]:
    """Frame class ids -> score-level phone sequence (see module docstring for the order).

    ``fold`` maps training-level ids to score-level ids (-1 = no label); ``None`` when the ids
    are already at the score level.  Frames labelled -1 are dropped before collapsing.
    """
    ids = smooth_labels(np.asarray(frame_ids, dtype=np.int64), smooth_window)
    ids = ids[ids >= 0]
    if fold is not None:
        ids = fold[ids]
        ids = ids[ids >= 0]
    return [p for p in collapse(ids) if p not in silence]


def frame_accuracy(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int]:
    """``(correct, scored)`` over frames whose reference is a label (>= 0).

    Returning counts rather than a ratio lets callers sum over utterances and report a
    frame-weighted accuracy.  A prediction that folds to "no label" (-1) is simply wrong.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    valid = ref >= 0
    return int((pred[valid] == ref[valid]).sum()), int(valid.sum())
