"""``snnasr prep fsdd``: the Free Spoken Digit Dataset as Kaldi data dirs with word frame labels.

Input: ``<corpus>/recordings/*.wav`` or ``<corpus>/*.wav``: 8 kHz mono recordings of one spoken
digit each, named ``<digit>_<speaker>_<index>.wav`` (``7_jackson_32.wav``); other files
(README, metadata.py) are ignored.  The full corpus has 6 speakers x 10 digits x 50 indices.

Outputs: ``<recipe>/data/{train,dev,test}/`` (``wav.scp`` with absolute paths, ``text`` = the
digit word in upper case, ``utt2spk`` = the speaker, ``spk2utt``, ``phone_segments``) and
``<recipe>/data/lang/`` with one label level ``word`` (``sil zero one ... nine``); for
``task: utterance`` also ``utt2digit`` (the digit word of each recording, from its file name)
and the utterance level ``digit`` (``zero ... nine``) in ``data/lang``.  Utterance
ids are ``<speaker>_<digit>_<index>``: speaker first, so sorting by utterance sorts by speaker
as Kaldi expects.

Split: the dataset's own, by index: 0-4 -> ``test`` (300 of 3000); the official training part
(5-49) is cut in two: 5-9 -> ``dev`` (300), 10 and above -> ``train`` (2400).  ``dev`` is
therefore carved out of the official training part, and ``test`` is the official test set.

Frame labels: FSDD has no phone alignment, so each recording gets ``sil <word> sil`` segments
from energy endpointing.  The recordings are trimmed but keep short low-energy ends: the
short-time energy of 25 ms frames every 10 ms (Kaldi's framing, frame mean removed) is compared
with the recording's loudest frame, and the first and last frames within ``THRESHOLD_DB`` of it
bound the word.  Boundaries lie half-way between frame centres, so exactly those frames (and
the ones between) are labelled with the word by the centre-of-frame rule of
:mod:`snnasr.labels`; the segments run from sample 0 to the end of the audio, and an empty
silence segment is left out.  ``snnasr features`` turns them into ``labels_word.scp``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from snnasr.audio import read_audio
from snnasr.data.datadir import find_wavs, write_data_dir, write_table
from snnasr.data.drops import DEFAULT_MAX_BAD_FRACTION, DROPPED, BadUtterances
from snnasr.io import DataError
from snnasr.labels import num_frames, window_samples
from snnasr.lang import write_lang

SAMPLE_RATE = 8000
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SILENCE = "sil"
UTTERANCE_LEVEL = "digit"
THRESHOLD_DB = 30.0
SETS = ("train", "dev", "test")
# Index ranges of each set, as text for the error messages.
SPLIT_RULE = {"test": "index 0-4", "dev": "index 5-9", "train": "index 10 or above"}
_NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[A-Za-z0-9-]+)_(?P<index>[0-9]+)$")

Segment = tuple[int, int, str]


class Recording(NamedTuple):
    uttid: str
    speaker: str
    digit: int
    index: int  # type: ignore[assignment]  # the recording's index, not tuple.index
    path: Path


def prepare_fsdd(
    corpus: str | os.PathLike,
    recipe_dir: str | os.PathLike,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    strict: bool = False,
) -> dict[str, int]:
    """Write ``data/{train,dev,test}`` (with ``phone_segments``) and ``data/lang``; return the counts.

    A recording that is not 8 kHz mono, is empty, unreadable, truncated, shorter than one 25 ms
    frame or silent is dropped by name (:mod:`snnasr.data.drops`; ``data/<set>/dropped``).
    Raises DataError when the folder is missing, holds no WAV files, a WAV name is not
    ``<digit>_<speaker>_<index>.wav``, one of the three sets would be empty, or more than
    ``max_bad_fraction`` of a set is bad (any, with ``strict``).  Every recording is checked
    (and endpointed) before anything is written.
    """
    sets = list_fsdd(corpus)
    data = Path(recipe_dir) / "data"
    bad = {name: BadUtterances("prep fsdd", data / name, max_bad_fraction, strict) for name in sets}
    segments: dict[str, dict[str, list[Segment]]] = {}
    for name, recs in sets.items():
        segments[name] = {}
        for r in recs:
            try:
                segments[name][r.uttid] = word_segments(r.path, WORDS[r.digit])
            except DataError as e:
                bad[name].drop(r.uttid, e)
        bad[name].check(len(recs))
    sets = {name: [r for r in recs if r.uttid not in bad[name]] for name, recs in sets.items()}
    for name, recs in sets.items():
        write_data_dir(
            data / name,
            wav={r.uttid: str(r.path) for r in recs},
            text={r.uttid: WORDS[r.digit].upper() for r in recs},
            utt2spk={r.uttid: r.speaker for r in recs},
            segments=segments[name],
        )
        write_table(data / name / f"utt2{UTTERANCE_LEVEL}", {r.uttid: WORDS[r.digit] for r in recs})
        (data / name / DROPPED).unlink(missing_ok=True)  # a fresh set: earlier stages' drops are gone
        bad[name].finish(len(recs) + len(bad[name]))
    write_lang(
        data / "lang",
        {"word": [SILENCE, *WORDS]},
        default="word",
        score="word",
        silence=[SILENCE],
        segment_level="word",
        utterance_classes=(UTTERANCE_LEVEL, list(WORDS)),
    )
    counts = {name: len(recs) for name, recs in sets.items()}
    dropped = sum(len(b) for b in bad.values())
    return {**counts, "dropped": dropped} if dropped else counts


def list_fsdd(corpus: str | os.PathLike) -> dict[str, list[Recording]]:
    """The recordings of each set (``train``, ``dev``, ``test``), sorted by utterance id.

    Reads only the names; raises DataError as :func:`prepare_fsdd` does for the folder, the
    names and the splits.
    """
    waves = find_wavs(
        corpus,
        "recordings",
        "the free-spoken-digit-dataset folder "
        "(github.com/Jakobovski/free-spoken-digit-dataset) or its recordings/ folder",
    )
    sets: dict[str, list[Recording]] = {name: [] for name in SETS}
    for path in waves:
        rec = parse_name(path)
        sets[split_of(rec.index)].append(rec)
    for name, recs in sets.items():
        if not recs:
            raise DataError(
                f"{waves[0].parent}: no recording with {SPLIT_RULE[name]} for the {name} set; "
                f"use the complete FSDD recordings folder (3000 WAVs)"
            )
        recs.sort(key=lambda r: r.uttid.encode("utf-8"))
    return sets


def parse_name(path: Path) -> Recording:
    """Digit, speaker and index from ``<digit>_<speaker>_<index>.wav``."""
    m = _NAME.match(path.stem)
    if not m:
        raise DataError(
            f"{path}: not an FSDD recording name (expected <digit>_<speaker>_<index>.wav, "
            f"e.g. 7_jackson_32.wav); move it out of {path.parent}"
        )
    speaker, digit, index = m["speaker"], int(m["digit"]), int(m["index"])
    return Recording(f"{speaker}_{digit}_{m['index']}", speaker, digit, index, path.resolve())


def split_of(index: int) -> str:
    """Set of a recording index: 0-4 test, 5-9 dev, 10 and above train."""
    return "test" if index < 5 else "dev" if index < 10 else "train"


def word_segments(path: str | os.PathLike, word: str, threshold_db: float = THRESHOLD_DB) -> list[Segment]:
    """``[(0, start, sil), (start, end, word), (end, N, sil)]`` by energy endpointing (see module doc).

    Silence segments of zero length are left out.  Raises DataError when the audio is
    unreadable, empty, not 8 kHz mono, shorter than one frame or silent throughout.
    """
    samples, rate = read_audio(path, expected_rate=SAMPLE_RATE)
    n = len(samples)
    n_frames = num_frames(n, rate)
    if n_frames == 0:
        win, _ = window_samples(rate)
        raise DataError(f"{path}: shorter than one 25 ms frame ({n} samples, need {win}); remove the recording")
    start, end = word_bounds(samples, rate, threshold_db)
    if start is None:
        raise DataError(f"{path}: audio is silent (all samples equal); remove it or replace it with the real recording")
    segs = [(0, start, SILENCE)] if start > 0 else []
    segs.append((start, end, word))
    if end < n:
        segs.append((end, n, SILENCE))
    return segs


def word_bounds(samples: np.ndarray, rate: int, threshold_db: float = THRESHOLD_DB) -> tuple[int | None, int]:
    """Sample range ``[start, end)`` of the frames within ``threshold_db`` of the loudest one.

    Frames are Kaldi's (25 ms every 10 ms, ``snip_edges``); each frame's mean is removed before
    its energy is taken.  ``start`` is ``None`` when no frame has any energy.  The range
    reaches the audio's ends when the first or last frame is loud.
    """
    win, shift = window_samples(rate)
    n = len(samples)
    n_frames = num_frames(n, rate)
    samples = np.asarray(samples, dtype=np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(samples, win)[::shift][:n_frames]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.einsum("ij,ij->i", frames, frames)
    peak = energy.max()
    if peak <= 0:
        return None, n
    loud = np.flatnonzero(energy >= peak * 10 ** (-threshold_db / 10))
    first, last = int(loud[0]), int(loud[-1])
    start = 0 if first == 0 else first * shift + (win - shift) // 2
    end = n if last == n_frames - 1 else min(n, last * shift + (win + shift) // 2)
    return start, end
