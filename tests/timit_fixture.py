"""A tiny TIMIT in the exact LDC layout, generated at test time (importable by any test).

``make_timit(tmp_path / "TIMIT")`` writes ``TRAIN/DR1/<SPK>/<SENT>.{WAV,PHN,WRD,TXT}`` and
``TEST/...`` with speakers drawn from the standard dev and core-test lists (plus TEST speakers in
neither list, which prep must ignore), SA1/SA2 for everyone (which prep must drop), and audio whose
pitch follows the phone of each ``.PHN`` segment, so models can learn something from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from snnasr.data.timit import phone_map, standard_speakers

RATE = 16000
TRAIN_SPEAKERS = ["fcjf0", "mdab1", "fdaw0", "mrcg0", "fecd0", "mcpm0", "fjsp0", "mrtj0"]
OTHER_TEST_SPEAKERS = ["fzzz0", "mzzz1"]  # in TEST/ but in neither standard list
PHONES = sorted(phone_map())  # the 61 labels, q included


@dataclass
class MiniTimit:
    root: Path
    speakers: dict[str, list[str]]  # "train" / "dev" / "test" / "other" -> speaker ids
    segments: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)  # uttid -> .PHN rows
    audio: dict[str, Path] = field(default_factory=dict)  # uttid (SA included) -> the .WAV written


def make_timit(
    root: Path,
    upper: bool = True,
    sphere_first: bool = True,
    riff_copies: bool = False,
    train_speakers: int = 2,
    dev_speakers: int = 2,
    test_speakers: int = 2,
    other_speakers: int = 1,
    sentences: tuple[str, ...] = ("SI1027", "SX127"),
    duration_s: float = 0.5,
    seed: int = 0,
) -> MiniTimit:
    """Write a mini LDC TIMIT under ``root``; return what was written.

    upper: LDC upper-case names (``TRAIN/DR1/FCJF0/SI1027.WAV``) or the lower-case copy.
    sphere_first: the first non-SA utterance is NIST SPHERE (as LDC ships it); the others are
        RIFF under the same ``.WAV`` name (as some copies are).  False: all RIFF.
    riff_copies: add a RIFF ``<SENT>.WAV.wav`` beside every ``.WAV`` (a common re-distribution).
    Speakers: dev and test ones are the first of the standard lists; SA1/SA2 are always added.
    """
    rng = np.random.default_rng(seed)
    case = str.upper if upper else str.lower
    dev, test = standard_speakers("dev")[:dev_speakers], standard_speakers("test")[:test_speakers]
    mini = MiniTimit(
        Path(root),
        {
            "train": TRAIN_SPEAKERS[:train_speakers],
            "dev": dev,
            "test": test,
            "other": OTHER_TEST_SPEAKERS[:other_speakers],
        },
    )
    first = True
    for split, group in (("train", "train"), ("test", "dev"), ("test", "test"), ("test", "other")):
        for i, spk in enumerate(mini.speakers[group]):
            spk_dir = mini.root / case(split) / case(f"dr{i % 8 + 1}") / case(spk)
            spk_dir.mkdir(parents=True, exist_ok=True)
            for sent in ("SA1", "SA2", *sentences):
                segs, audio = _utterance(rng, duration_s)
                stem = spk_dir / case(sent)
                wav = stem.with_name(stem.name + case(".wav"))
                sphere = first and sphere_first and not sent.startswith("SA")
                sf.write(wav, audio, RATE, format="NIST" if sphere else "WAV", subtype="PCM_16")
                first = first and not sphere
                if riff_copies:
                    sf.write(wav.with_name(wav.name + ".wav"), audio, RATE, format="WAV", subtype="PCM_16")
                stem.with_name(stem.name + case(".phn")).write_text("".join(f"{s} {e} {p}\n" for s, e, p in segs))
                stem.with_name(stem.name + case(".wrd")).write_text(f"0 {segs[-1][1]} word\n")
                stem.with_name(stem.name + case(".txt")).write_text(f"0 {segs[-1][1]} A sentence.\n")
                uttid = f"{spk}_{sent.lower()}"
                mini.audio[uttid] = wav
                mini.segments[uttid] = segs
    return mini


def write_speaker_list(path: Path, speakers: list[str]) -> Path:
    path.write_text("".join(f"{s}\n" for s in speakers))
    return path


def _utterance(rng: np.random.Generator, duration_s: float) -> tuple[list[tuple[int, int, str]], np.ndarray]:
    """``h# ... h#`` segments with a ``q`` in the middle, and audio a little longer than the last one."""
    inner = [p for p in PHONES if p not in ("h#", "q")]
    n_inner = max(3, int(duration_s * RATE) // 1200 - 2)
    labels = ["h#", *rng.choice(inner, n_inner).tolist(), "h#"]
    labels[len(labels) // 2] = "q"
    lengths = rng.integers(600, 1800, len(labels))
    ends = np.cumsum(lengths)
    starts = np.concatenate([[0], ends[:-1]])
    segs = [(int(s), int(e), p) for s, e, p in zip(starts, ends, labels)]
    n = int(ends[-1]) + 37  # TIMIT audio often runs a little past the last h#
    t = np.arange(n) / RATE
    audio = rng.normal(0, 200, n)
    for s, e, p in segs:
        audio[s:e] += 3000 * np.sin(2 * np.pi * (100 + 40 * PHONES.index(p)) * t[s:e])
    return segs, audio.astype(np.int16)
