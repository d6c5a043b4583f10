"""``snnasr prep yesno``: Kaldi's yes/no corpus (``waves_yesno/``) as two Kaldi data dirs.

Input: ``<corpus>/waves_yesno/*.wav`` or ``<corpus>/*.wav``: 8 kHz recordings of one speaker
saying 8 words, named by their transcript (``0_1_1_0_0_1_0_1.wav``: 0 = NO, 1 = YES); other
files (README) are ignored.

Outputs: ``<recipe>/data/train_yesno/`` and ``<recipe>/data/test_yesno/``
(``wav.scp`` with absolute paths, ``text`` in upper case, ``utt2spk`` = ``global``, ``spk2utt``).

Split: ``train_yesno`` holds the recordings whose first word is NO (``0_*``), ``test_yesno`` the
rest: 31 and 29 of the 60.  Kaldi's ``local/create_yesno_waves_test_train.pl`` splits the
``ls`` listing of the folder at its half, README files included, so its split moves by one with
the listing; the 31 here are the utterances of Kaldi's reference monophone run (its
``data/train_yesno`` and ``ali.1.gz``), and the rule keeps any subset of the corpus on the same
side.  Frame labels come later, from ``snnasr prep kaldi`` on Kaldi's alignments.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from snnasr.audio import audio_info
from snnasr.data.datadir import find_wavs, write_data_dir
from snnasr.data.drops import DEFAULT_MAX_BAD_FRACTION, DROPPED, BadUtterances
from snnasr.io import DataError

SAMPLE_RATE = 8000
_NAME = re.compile(r"^[01](_[01])*$")
_WORDS = {"0": "NO", "1": "YES"}


def prepare_yesno(
    corpus: str | os.PathLike,
    recipe_dir: str | os.PathLike,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    strict: bool = False,
) -> dict[str, int]:
    """Write ``data/train_yesno`` and ``data/test_yesno``; return their utterance counts.

    A recording that is not 8 kHz mono, is empty, unreadable or truncated is dropped by name
    (:mod:`snnasr.data.drops`).  Raises DataError when the folder is missing, holds no WAV
    files, a WAV name is not a 0/1 transcript, one of the two sets would be empty, or more than
    ``max_bad_fraction`` of a set is bad (any, with ``strict``).
    """
    waves = find_wavs(corpus, "waves_yesno", "the extracted waves_yesno folder (openslr.org/resources/1) or its parent")
    sets: dict[str, dict[str, Path]] = {"train_yesno": {}, "test_yesno": {}}
    recipe_dir = Path(recipe_dir)
    bad = {name: BadUtterances("prep yesno", recipe_dir / "data" / name, max_bad_fraction, strict) for name in sets}
    for path in waves:
        if not _NAME.match(path.stem):
            raise DataError(
                f"{path}: not a yes/no recording name (expected words as 0/1 joined by '_', "
                f"e.g. 0_1_1_0_0_1_0_1.wav); move it out of {path.parent}"
            )
        name = "train_yesno" if path.stem.startswith("0") else "test_yesno"
        sets[name][path.stem] = path.resolve()
        try:
            audio_info(path, expected_rate=SAMPLE_RATE)
        except DataError as e:
            bad[name].drop(path.stem, e)
    for name, utts in sets.items():
        bad[name].check(len(utts))
        sets[name] = {u: p for u, p in utts.items() if u not in bad[name]}
    for name, utts in sets.items():
        if not utts:
            first = "0" if name == "train_yesno" else "1"
            raise DataError(
                f"{waves[0].parent}: no recording starting with {first}_ for {name}; "
                f"use the complete waves_yesno folder (60 WAVs)"
            )
    for name, utts in sets.items():
        write_data_dir(
            recipe_dir / "data" / name,
            wav={u: str(p) for u, p in utts.items()},
            text={u: " ".join(_WORDS[w] for w in u.split("_")) for u in utts},
            utt2spk={u: "global" for u in utts},
        )
        (recipe_dir / "data" / name / DROPPED).unlink(missing_ok=True)  # a fresh set
        bad[name].finish(len(utts) + len(bad[name]))
    counts = {name: len(utts) for name, utts in sets.items()}
    dropped = sum(len(b) for b in bad.values())
    return {**counts, "dropped": dropped} if dropped else counts
