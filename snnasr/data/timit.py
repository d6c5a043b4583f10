"""TIMIT in the LDC layout -> Kaldi data dirs and a three-level ``data/lang``.

Input:  ``CORPUS/{TRAIN,TEST}/<DR>/<SPEAKER>/<SENT>.{WAV,PHN}``, names in any letter case;
        RIFF copies named ``<SENT>.WAV.wav`` are accepted (the ``.WAV`` original wins when both
        exist).  CORPUS may also be the dir just above that root (``timit/TIMIT/TRAIN``).
Output: ``<recipe>/data/{train,dev,test}/{wav.scp,text,utt2spk,spk2utt,phone_segments}`` and
        ``<recipe>/data/lang/`` (levels phone61, phone48, phone39; see :mod:`snnasr.lang`).

Splits are Kaldi's ``egs/timit/s5`` (= SpeechBrain's): SA sentences dropped everywhere, train =
all of TRAIN/, dev = 50 TEST speakers, test = the 24-speaker core test (3696/400/192 utterances
on a full copy).  The speaker lists and the 60-48-39 phone map are data in
``snnasr/resources/``, not code, so a partial or re-packaged corpus can bring its own lists.

Why ``q`` is in ``phone_segments`` but in no symbol table: the glottal stop has no 48/39 label
(Kaldi deletes it from transcripts), and the labels stage gives its samples to the neighbouring
segment before any mapping, so no frame is ever labelled ``q``.  Putting it in ``phone61`` would
only add a class that never occurs.  So ``phone61`` holds the 60 real labels (the level keeps
its conventional name), ``text`` is the phone61 transcript without ``q`` (as Kaldi's), and the
raw ``.PHN`` segments, ``q`` included, go to ``phone_segments``.

Every utterance is checked before anything is written, so a bad corpus leaves no half-written
``data/``; each problem is one DataError line naming the file and what to do.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from snnasr.audio import audio_info
from snnasr.data.datadir import write_data_dir
from snnasr.data.drops import DEFAULT_MAX_BAD_FRACTION, DROPPED, BadUtterances
from snnasr.io import DataError
from snnasr.labels import fit_to_audio
from snnasr.lang import DELETED, write_lang

SAMPLE_RATE = 16000
DELETED_PHONE = "q"
LIST_HINT = "give your own lists with --dev-speakers FILE --test-speakers FILE (one speaker id per line)"

Segment = tuple[int, int, str]


@dataclass(frozen=True)
class Utterance:
    uttid: str
    speaker: str
    audio: Path
    phn: Path


def resource_text(name: str) -> str:
    """Text of a file shipped in ``snnasr/resources/``."""
    return resources.files("snnasr").joinpath("resources").joinpath(name).read_text(encoding="utf-8")


def phone_map() -> dict[str, tuple[str, str]]:
    """The Kaldi 60-48-39 map: ``{phone61: (phone48, phone39)}``, ``q`` -> ``("-", "-")``."""
    table = {}
    for line in resource_text("phones.60-48-39.map").splitlines():
        cols = line.split()
        if cols:
            table[cols[0]] = (cols[1], cols[2]) if len(cols) == 3 else (DELETED, DELETED)
    return table


def standard_speakers(split: str) -> list[str]:
    """The standard ``dev`` (50) or core ``test`` (24) speaker list."""
    return _parse_list(resource_text(f"timit_{split}_spk.list"))


def timit_lang(recipe_dir: str | os.PathLike) -> Path:
    """Write ``data/lang`` for TIMIT: phone61 (60 labels, no q), phone48, phone39 and their maps."""
    pmap = phone_map()
    p61 = [p for p, (p48, _) in pmap.items() if p48 != DELETED]
    p48 = sorted({pmap[p][0] for p in p61})
    p39 = sorted({pmap[p][1] for p in p61})
    maps = {
        ("phone61", "phone48"): {p: pmap[p][0] for p in p61},
        ("phone61", "phone39"): {p: pmap[p][1] for p in p61},
        ("phone48", "phone39"): {pmap[p][0]: pmap[p][1] for p in p61},
    }
    return write_lang(
        Path(recipe_dir) / "data" / "lang",
        {"phone61": p61, "phone48": p48, "phone39": p39},
        default="phone48",
        score="phone39",
        silence=["sil"],
        maps=maps,
        segment_level="phone61",
    )


def prepare_timit(
    corpus: str | os.PathLike,
    recipe_dir: str | os.PathLike,
    dev_speakers: str | os.PathLike | None = None,
    test_speakers: str | os.PathLike | None = None,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    strict: bool = False,
) -> dict[str, int]:
    """Prepare ``data/{train,dev,test}`` and ``data/lang`` from an LDC-layout TIMIT copy.

    Args:
        corpus: the TIMIT root (holding TRAIN/ and TEST/ in any case), or its parent dir.
        recipe_dir: recipe directory; ``data/`` is written under it.
        dev_speakers, test_speakers: files with one speaker id per line (case-insensitive,
            ``#`` comments allowed); default the standard 50 dev and 24 core-test speakers.
        max_bad_fraction, strict: bad utterances (see below) are dropped by name, counted and
            listed in ``data/<set>/dropped`` (:mod:`snnasr.data.drops`); the stage fails when
            more than this fraction of a set is bad, or at the first one with ``strict``.
    Returns:
        utterances per set, ``{"train": n, "dev": n, "test": n}`` (and ``dropped`` if any).
    Raises:
        DataError: missing corpus or split dir, no audio, a .WAV without .PHN (or the reverse),
            speaker lists that match nothing, or too many bad utterances: a bad .PHN
            (overlapping/reversed times, unknown label, segments that do not fit the audio
            beyond the edge-silence rule of :func:`snnasr.labels.fit_to_audio`), unreadable,
            truncated or empty audio, a sample rate other than 16 kHz.  Nothing is written then.
    """
    train_dir, test_dir = _find_splits(Path(corpus))
    train = _scan_split(train_dir)
    test_pool = _scan_split(test_dir)
    dev_list = _speaker_list(dev_speakers, "dev")
    test_list = _speaker_list(test_speakers, "test")
    overlap = sorted(set(dev_list) & set(test_list))
    if overlap:
        raise DataError(
            f"speaker lists: {', '.join(overlap[:5])} in both the dev and the test list; "
            f"a speaker may be in one held-out set only"
        )
    sets = {
        "train": train,
        "dev": _select(test_pool, dev_list, "dev", dev_speakers, test_dir),
        "test": _select(test_pool, test_list, "test", test_speakers, test_dir),
    }
    pmap = phone_map()
    data = Path(recipe_dir) / "data"
    bad = {name: BadUtterances("prep timit", data / name, max_bad_fraction, strict) for name in sets}
    tables = {name: _tables(utts, pmap, name, bad[name]) for name, utts in sets.items()}
    for name, utts in sets.items():
        bad[name].check(sum(len(u) for u in utts.values()))
    for name, (wav, text, utt2spk, segments) in tables.items():
        write_data_dir(data / name, wav, text, utt2spk, segments=segments)
        (data / name / DROPPED).unlink(missing_ok=True)  # a fresh set: earlier stages' drops are gone
        bad[name].finish(len(wav) + len(bad[name]))
    timit_lang(recipe_dir)
    counts = {name: len(table[0]) for name, table in tables.items()}
    dropped = sum(len(b) for b in bad.values())
    return {**counts, "dropped": dropped} if dropped else counts


def _find_splits(corpus: Path) -> tuple[Path, Path]:
    """Locate TRAIN/ and TEST/ (any case) in CORPUS or in one of its immediate subdirs."""
    hint = "pass the TIMIT root, the dir that holds TRAIN/ and TEST/"
    if not corpus.is_dir():
        raise DataError(f"{corpus}: corpus dir not found; {hint}")
    if not any(corpus.iterdir()):
        raise DataError(f"{corpus}: corpus dir is empty; {hint}")
    subdirs = sorted(p for p in corpus.iterdir() if p.is_dir())
    for cand in [corpus, *subdirs]:
        found: dict[str, list[Path]] = {}
        for p in sorted(cand.iterdir()):
            if p.is_dir() and p.name.lower() in ("train", "test"):
                found.setdefault(p.name.lower(), []).append(p)
        for dirs in found.values():
            if len(dirs) > 1:
                raise DataError(
                    f"{cand}: both {dirs[0].name}/ and {dirs[1].name}/ exist; "
                    f"keep one copy of the corpus (or point CORPUS at one copy)"
                )
        if len(found) == 2:
            return found["train"][0], found["test"][0]
        if found:
            have = next(iter(found.values()))[0]
            missing = "TEST" if "train" in found else "TRAIN"
            raise DataError(
                f"{cand}: has {have.name}/ but no {missing}/; snnasr needs both TRAIN/ and TEST/ of the LDC layout"
            )
    raise DataError(f"{corpus}: no TRAIN/ and TEST/ dirs found (nor one level down); {hint}")


def _scan_split(split_dir: Path) -> dict[str, list[Utterance]]:
    """``{speaker: [Utterance, ...]}`` for ``<split>/<DR>/<SPEAKER>/<SENT>.*``, SA sentences dropped."""
    audio: dict[tuple[str, str], list[tuple[int, Path]]] = {}
    phn: dict[tuple[str, str], list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(split_dir):
        dirnames.sort()
        rel = Path(dirpath).relative_to(split_dir).parts
        if len(rel) != 2:
            continue
        spk = rel[1].lower()
        for name in sorted(filenames):
            low = name.lower()
            path = Path(dirpath) / name
            if low.endswith(".wav.wav"):
                audio.setdefault((spk, low[:-8]), []).append((1, path))
            elif low.endswith(".wav"):
                audio.setdefault((spk, low[:-4]), []).append((0, path))
            elif low.endswith(".phn"):
                phn.setdefault((spk, low[:-4]), []).append(path)
    if not audio:
        raise DataError(
            f"{split_dir}: no audio found (expected {split_dir.name}/DR*/<SPEAKER>/<SENT>.WAV); "
            f"check that this is a complete TIMIT copy"
        )
    keys = {k for k in audio.keys() | phn.keys() if not k[1].startswith("sa")}
    no_phn = sorted(k for k in keys if k not in phn)
    if no_phn:
        raise DataError(
            f"{min(audio[no_phn[0]])[1]}: no .PHN beside this audio ({len(no_phn)} such utterances "
            f"in {split_dir}); restore the .PHN files or remove the audio"
        )
    no_audio = sorted(k for k in keys if k not in audio)
    if no_audio:
        raise DataError(
            f"{phn[no_audio[0]][0]}: no .WAV beside this .PHN ({len(no_audio)} such utterances "
            f"in {split_dir}); restore the audio or remove the .PHN"
        )
    if not keys:
        raise DataError(f"{split_dir}: only SA sentences found; snnasr drops SA (as Kaldi does), so nothing is left")
    speakers: dict[str, list[Utterance]] = {}
    for spk, sent in sorted(keys):
        files = [p for _, p in audio[(spk, sent)]] + phn[(spk, sent)]
        dirs = sorted({p.parent for p in files})
        if len(dirs) > 1:
            raise DataError(f"{dirs[1]}: utterance {spk}_{sent} also in {dirs[0]}; keep one copy of each speaker")
        speakers.setdefault(spk, []).append(
            Utterance(f"{spk}_{sent}", spk, min(audio[(spk, sent)])[1], min(phn[(spk, sent)]))
        )
    return speakers


def _parse_list(text: str) -> list[str]:
    return [w.lower() for line in text.splitlines() for w in line.split("#")[0].split()[:1]]


def _speaker_list(path: str | os.PathLike | None, split: str) -> list[str]:
    if path is None:
        return standard_speakers(split)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {split} speaker list not found; give a file with one speaker id per line")
    speakers = _parse_list(path.read_text(encoding="utf-8"))
    if not speakers:
        raise DataError(f"{path}: {split} speaker list is empty; give one speaker id per line")
    return speakers


def _select(
    pool: dict[str, list[Utterance]], wanted: list[str], split: str, custom: str | os.PathLike | None, test_dir: Path
) -> dict[str, list[Utterance]]:
    """Speakers of ``wanted`` found in TEST/; a custom list must match completely."""
    missing = [s for s in wanted if s not in pool]
    if custom is not None and missing:
        raise DataError(
            f"{custom}: {len(missing)} {split} speakers not in {test_dir} (e.g. {', '.join(missing[:3])}); "
            f"fix the list (speaker ids are the speaker dir names)"
        )
    if len(missing) == len(wanted):
        raise DataError(
            f"{test_dir}: none of the {len(wanted)} standard {split} speakers is in this corpus "
            f"(it has e.g. {', '.join(sorted(pool)[:3])}); {LIST_HINT}"
        )
    return {s: pool[s] for s in wanted if s in pool}


def _tables(
    speakers: dict[str, list[Utterance]], pmap: dict[str, tuple[str, str]], name: str, bad: BadUtterances
) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, list[Segment]]]:
    """Check every utterance of a set; return the (wav, text, utt2spk, phone_segments) tables of the good ones."""
    wav, text, utt2spk, segments = {}, {}, {}, {}
    utts = [u for spk in sorted(speakers) for u in speakers[spk]]
    for utt in tqdm(utts, desc=f"timit {name}", unit="utt", disable=not sys.stderr.isatty()):
        try:
            num_samples = _check_audio(utt.audio)
            segs = _read_phn(utt.phn, pmap)
            fit_to_audio(str(utt.phn), segs, num_samples, SAMPLE_RATE)
        except DataError as e:
            bad.drop(utt.uttid, e)
            continue
        wav[utt.uttid] = str(utt.audio.resolve())
        text[utt.uttid] = " ".join(p for _, _, p in segs if p != DELETED_PHONE)
        utt2spk[utt.uttid] = utt.speaker
        segments[utt.uttid] = segs
    return wav, text, utt2spk, segments


def _check_audio(path: Path) -> int:
    """Number of samples; rejects unreadable, empty, non-16 kHz and truncated files."""
    frames, _ = audio_info(path, expected_rate=SAMPLE_RATE)
    return frames


def _read_phn(path: Path, pmap: dict[str, tuple[str, str]]) -> list[Segment]:
    """Parse a .PHN file (``start end phone`` at 16 kHz); :func:`fit_to_audio` checks it against the audio."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable .PHN ({e}); re-copy it from the corpus") from None
    segs: list[Segment] = []
    for n, line in enumerate(lines, 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != 3 or not cols[0].isdigit() or not cols[1].isdigit():
            raise DataError(f"{path}:{n}: expected '<start_sample> <end_sample> <phone>', got {line.strip()!r}")
        start, end, phone = int(cols[0]), int(cols[1]), cols[2].lower()
        if phone not in pmap:
            raise DataError(
                f"{path}:{n}: unknown phone {cols[2]!r}; TIMIT .PHN files use the 61 labels of "
                f"snnasr/resources/phones.60-48-39.map"
            )
        if end < start:
            raise DataError(f"{path}:{n}: segment ends ({end}) before it starts ({start}); fix the times")
        if segs and start < segs[-1][1]:
            raise DataError(
                f"{path}:{n}: segment starts at {start}, inside the previous one (ends {segs[-1][1]}); "
                f"segments must not overlap"
            )
        if segs and start > segs[-1][1]:
            raise DataError(
                f"{path}:{n}: segment starts at {start}, after a gap from the previous one "
                f"(ends {segs[-1][1]}); .PHN segments must be contiguous"
            )
        segs.append((start, end, phone))
    if not segs:
        raise DataError(f"{path}: .PHN has no segments; restore it from the corpus")
    return segs
