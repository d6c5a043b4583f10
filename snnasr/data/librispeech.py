"""LibriSpeech (FLAC + trans.txt) -> Kaldi data dirs, with phone segments from MFA TextGrids.

Input:  ``CORPUS/LibriSpeech/<set>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` and
        ``<spk>-<chapter>.trans.txt`` (``<uttid> UPPER CASE WORDS``); CORPUS may also be the
        ``LibriSpeech/`` dir itself.  Optionally Montreal Forced Aligner output: one
        ``<uttid>.TextGrid`` per utterance anywhere under ``--textgrids DIR`` (MFA mirrors the
        corpus dirs, ``<DIR>/<spk>/[<chapter>/]<uttid>.TextGrid``; a flat dir works too).
Output: ``<recipe>/data/<set with _ for ->/{wav.scp,text,utt2spk,spk2utt}`` (Kaldi names:
        ``train_clean_100``, ``dev_clean``, ...), and with TextGrids also ``phone_segments`` and
        ``data/lang`` with one level ``phone`` (39 ARPAbet phones + ``sil``).

The speaker of an utterance is the reader (``<spk>``); Kaldi's recipe uses ``<spk>-<chapter>``,
which only changes how CMVN statistics are pooled.  Phone labels drop the stress digit
(``AH0`` -> ``ah``); MFA's empty intervals, ``sil``, ``sp`` and ``spn`` (spoken noise, i.e.
out-of-vocabulary words) all become ``sil``, so the class set is fixed whatever the dictionary.
Without TextGrids the frame labels come later from ``snnasr prep kaldi`` (a Kaldi alignment dir).
Everything is checked before anything is written.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from tqdm import tqdm

from snnasr.audio import audio_info
from snnasr.data.datadir import write_data_dir
from snnasr.data.drops import DEFAULT_MAX_BAD_FRACTION, DROPPED, BadUtterances
from snnasr.data.textgrid import read_textgrid
from snnasr.io import DataError
from snnasr.lang import write_lang

SAMPLE_RATE = 16000
ARPABET = (
    "aa ae ah ao aw ay b ch d dh eh er ey f g hh ih iy jh k l m n ng ow oy p r s sh t th uh uw v w y z zh"
).split()
SILENCE = "sil"
SILENT_MARKS = {"", "sil", "sp", "spn"}
PHONE_TIER = "phones"
# A TextGrid may end this far past the audio (float seconds rounded to samples) before it is an error.
END_TOLERANCE = SAMPLE_RATE // 100

Segment = tuple[int, int, str]


def prepare_librispeech(
    corpus: str | os.PathLike,
    recipe_dir: str | os.PathLike,
    sets: list[str],
    textgrids: str | os.PathLike | None = None,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    strict: bool = False,
) -> dict[str, int]:
    """Prepare ``data/<set>`` for each LibriSpeech set, and ``data/lang`` when TextGrids are given.

    Args:
        corpus: the dir holding ``LibriSpeech/``, or ``LibriSpeech/`` itself.
        recipe_dir: recipe directory; ``data/`` is written under it.
        sets: LibriSpeech set names (``train-clean-100``, ``dev-clean``, ...).
        textgrids: MFA output dir (phones tier, ARPAbet) or None.
        max_bad_fraction, strict: an utterance with bad audio or no usable TextGrid (MFA leaves
            a few unaligned) is dropped by name (:mod:`snnasr.data.drops`); more than this
            fraction of a set fails the stage (any, with ``strict``).
    Returns:
        utterances per Kaldi data dir name, e.g. ``{"train_clean_100": 28539, ...}`` (and
        ``dropped`` if any).
    Raises:
        DataError: missing corpus/set dir, audio without transcript or the reverse, too many
            bad utterances.  Nothing is written then.
    """
    root = _find_root(Path(corpus))
    names = [s.strip() for s in sets if s.strip()]
    if not names:
        raise DataError("--sets: no set names given; e.g. --sets train-clean-100,dev-clean,test-clean")
    grids = _index_textgrids(Path(textgrids)) if textgrids is not None else None
    data = Path(recipe_dir) / "data"
    prepared, bad = {}, {}
    for name in names:
        set_dir = root / name
        if not set_dir.is_dir():
            have = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise DataError(
                f"{set_dir}: set not found (have: {', '.join(have) or 'nothing'}); "
                f"download and unpack it, or change --sets"
            )
        out_name = name.replace("-", "_")
        bad[out_name] = BadUtterances("prep librispeech", data / out_name, max_bad_fraction, strict)
        prepared[out_name] = _prepare_set(set_dir, grids, textgrids, bad[out_name])
    for out_name, (wav, text, utt2spk, segments) in prepared.items():
        write_data_dir(data / out_name, wav, text, utt2spk, segments=segments)
        (data / out_name / DROPPED).unlink(missing_ok=True)  # a fresh set: earlier stages' drops are gone
        bad[out_name].finish(len(wav) + len(bad[out_name]))
    if grids is not None:
        write_lang(
            data / "lang",
            {"phone": [*ARPABET, SILENCE]},
            default="phone",
            score="phone",
            silence=[SILENCE],
            segment_level="phone",
        )
    counts = {out_name: len(tables[0]) for out_name, tables in prepared.items()}
    dropped = sum(len(b) for b in bad.values())
    return {**counts, "dropped": dropped} if dropped else counts


def _find_root(corpus: Path) -> Path:
    if not corpus.is_dir():
        raise DataError(f"{corpus}: corpus dir not found; pass the dir holding LibriSpeech/ (or LibriSpeech/ itself)")
    inner = corpus / "LibriSpeech"
    return inner if inner.is_dir() else corpus


def _index_textgrids(tg_dir: Path) -> dict[str, Path]:
    """``{uttid: path}`` for every ``*.TextGrid`` under ``tg_dir`` (any depth, any case)."""
    if not tg_dir.is_dir():
        raise DataError(f"{tg_dir}: TextGrid dir not found; pass the Montreal Forced Aligner output dir")
    index: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(tg_dir):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(".textgrid"):
                utt, path = name[: -len(".textgrid")], Path(dirpath) / name
                if utt in index:
                    raise DataError(f"{path}: second TextGrid for {utt} (first: {index[utt]}); keep one alignment")
                index[utt] = path
    if not index:
        raise DataError(f"{tg_dir}: no .TextGrid files found; run MFA (mfa align) and pass its output dir")
    return index


def _prepare_set(
    set_dir: Path, grids: dict[str, Path] | None, tg_dir: str | os.PathLike | None, bad: BadUtterances
) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, list[Segment]] | None]:
    """Check one set; return its (wav, text, utt2spk, phone_segments or None) tables."""
    flacs: dict[str, Path] = {}
    text: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(set_dir):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.lower().endswith(".flac"):
                flacs[name[:-5]] = path
            elif name.endswith(".trans.txt"):
                _read_transcripts(path, text)
    if not flacs:
        raise DataError(
            f"{set_dir}: no .flac audio found (expected <spk>/<chapter>/<spk>-<chapter>-<utt>.flac); check the download"
        )
    no_text = sorted(set(flacs) - set(text))
    if no_text:
        raise DataError(
            f"{flacs[no_text[0]]}: no transcript line ({len(no_text)} such .flac files in {set_dir.name}); "
            f"restore the chapter's .trans.txt"
        )
    no_audio = sorted(set(text) - set(flacs))
    if no_audio:
        raise DataError(
            f"{set_dir}: {len(no_audio)} transcript lines without a .flac (e.g. {no_audio[0]}); restore the audio files"
        )
    wav, utt2spk, segments = {}, {}, {}
    for utt in tqdm(sorted(flacs), desc=f"librispeech {set_dir.name}", unit="utt", disable=not sys.stderr.isatty()):
        try:
            if grids is not None and utt not in grids:
                raise DataError(f"no TextGrid in {tg_dir} (MFA did not align it); align it or leave out --textgrids")
            num_samples, _ = audio_info(flacs[utt], expected_rate=SAMPLE_RATE)
            if grids is not None:
                segments[utt] = phone_segments(grids[utt], num_samples)
        except DataError as e:
            bad.drop(utt, e)
            continue
        wav[utt] = str(flacs[utt].resolve())
        utt2spk[utt] = utt.split("-")[0]
    bad.check(len(flacs))
    text = {u: t for u, t in text.items() if u in wav}
    return wav, text, utt2spk, segments if grids is not None else None


def _read_transcripts(path: Path, text: dict[str, str]) -> None:
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        utt, _, words = line.strip().partition(" ")
        if not utt:
            continue
        if not re.fullmatch(r"\d+-\d+-\d+", utt):
            raise DataError(f"{path}:{n}: expected '<spk>-<chapter>-<utt> WORDS', got {line.strip()[:60]!r}")
        if utt in text:
            raise DataError(f"{path}:{n}: {utt} transcribed twice; keep one line per utterance")
        text[utt] = words.strip()


def phone_segments(path: Path, num_samples: int) -> list[Segment]:
    """Segments ``(start, end, phone)`` in 16 kHz samples from the phones tier of an MFA TextGrid."""
    tier = read_textgrid(path).tier(PHONE_TIER)
    if tier is None or tier.kind != "IntervalTier":
        raise DataError(f"{path}: no '{PHONE_TIER}' interval tier; pass the TextGrids MFA wrote (words + phones)")
    segs: list[Segment] = []
    for iv in tier.intervals:
        label = iv.text.strip().lower()
        phone = SILENCE if label in SILENT_MARKS else label.rstrip("012")
        if phone not in ARPABET and phone != SILENCE:
            raise DataError(
                f"{path}: phone {iv.text!r} is not ARPAbet; align with an ARPAbet model (MFA english_us_arpa)"
            )
        start, end = round(iv.xmin * SAMPLE_RATE), round(iv.xmax * SAMPLE_RATE)
        if end > num_samples + END_TOLERANCE:
            raise DataError(
                f"{path}: interval ends at {iv.xmax:.3f} s, beyond the audio "
                f"({num_samples / SAMPLE_RATE:.3f} s); this TextGrid belongs to other audio"
            )
        if end < start or (segs and start < segs[-1][1]):
            raise DataError(
                f"{path}: interval {iv.xmin:.3f}-{iv.xmax:.3f} s is reversed or overlaps the previous "
                f"one; re-export the alignment"
            )
        start, end = min(start, num_samples), min(end, num_samples)
        if start < end:
            segs.append((start, end, phone))
    if not segs:
        raise DataError(f"{path}: the phones tier is empty; re-run the alignment for this utterance")
    return segs
