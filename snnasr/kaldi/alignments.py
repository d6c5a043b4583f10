"""``snnasr prep kaldi``: per-frame pdf and phone labels from Kaldi alignments, no Kaldi binaries.

Inputs:
    ``<data>/{wav.scp,text,utt2spk}`` (+ ``utt2num_frames`` if present): the Kaldi data dir aligned.
    ``<ali>/ali.*.gz``: transition ids per frame (binary or text arks).
    ``<ali>/final.mdl``, else the highest-numbered ``<ali>/N.mdl``: its TransitionModel.
    ``<lang>/phones.txt`` (+ ``phones/silence.txt``): Kaldi's phone symbols.  Without ``--lang`` the
    first of ``<ali>/../../data/lang`` (Kaldi's ``exp/<model>`` layout), ``<data>/../lang`` and
    ``<recipe>/data/lang`` that holds a ``phones.txt`` is used.

Outputs:
    ``<data>/labels_<level>.scp/.ark`` for every level below: one class id per frame.
    ``<data>/conf/features.yaml`` when ``<data>/feats.scp`` holds Kaldi's own features (any matrix
    kind, compressed included): they are read once and recorded for training as they are (see
    :mod:`snnasr.kaldi.feats`), so no ``snnasr features`` run is needed.
    ``<recipe>/data/lang/``: levels ``pdf`` (``pdf0``..``pdf<N-1>``, N = the model's pdfs) and
    ``phone`` (phones.txt minus ``<eps>`` and ``#`` disambiguation symbols, renumbered 0..N-1, in
    id order).  When phones carry word-position (``_B _E _I _S``) or ARPAbet stress (``0 1 2``)
    marks, also ``phone_base`` with them stripped, and scoring happens there.  ``map_pdf_<level>``
    gives each pdf the symbol it co-occurs with most in these alignments (pdfs never seen take the
    lowest phone the model's tuples pair them with).  Silence = the symbols of
    ``phones/silence.txt`` (stripped at ``phone_base``); without that file, phones whose stripped
    symbol is ``sil`` in any case.

A second data dir labelled with the same model (train, then test) keeps the lang written by the
first, so class ids and maps stay the same; a lang with other levels or symbols is an error.
Utterances Kaldi did not align are reported and left unlabelled, and the stage fails when fewer
than 95% are aligned (Kaldi's threshold).  Each alignment must match the utterance's frame count
(Kaldi's ``feats.scp``, else ``utt2num_frames``, else Kaldi framing of the audio: 25 ms window, 10 ms
shift, snip-edges) within
``tolerance`` frames; within it the labels are cut or padded (last label repeated) to that count.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from snnasr.audio import audio_info, wav_path
from snnasr.data.datadir import read_table, sort_key, validate_data_dir
from snnasr.io import DataError
from snnasr.kaldi.ark import read_vec_int_ark, write_vec_int_ark_scp
from snnasr.kaldi.feats import adopt_kaldi_features
from snnasr.kaldi.transition_model import TransitionModel, read_transition_model
from snnasr.lang import DELETED, load_lang, write_lang

MIN_ALIGNED = 0.95
_POSITION = re.compile(r"_[BEIS]$")
_STRESS = re.compile(r"(?<=[A-Za-z])[012]$")


def prepare_kaldi(
    data_dir: str | os.PathLike,
    ali_dir: str | os.PathLike,
    recipe_dir: str | os.PathLike,
    lang_dir: str | os.PathLike | None = None,
    targets: str = "pdf",
    tolerance: int = 2,
) -> dict[str, int]:
    """Write frame labels for ``data_dir`` from the alignments in ``ali_dir`` (see module docstring).

    ``targets`` ("pdf" or "phone") becomes the default training level of the lang.  Returns
    counts: utterances labelled, frames, unaligned utterances, pdfs, phones.  Raises DataError on
    missing inputs, alignments of unknown utterances, unknown transition ids, frame-count
    mismatches beyond ``tolerance`` or fewer than 95% of the utterances aligned.
    """
    data_dir, ali_dir, recipe_dir = Path(data_dir), Path(ali_dir), Path(recipe_dir)
    if targets not in ("pdf", "phone"):
        raise DataError(f"--targets {targets!r}: choose pdf or phone")
    validate_data_dir(data_dir)
    wav = read_table(data_dir / "wav.scp")
    kaldi_frames = adopt_kaldi_features(data_dir)
    model = read_transition_model(find_model(ali_dir))
    kaldi_lang = find_kaldi_lang(lang_dir, ali_dir, data_dir, recipe_dir)
    phone_table = read_phones_txt(kaldi_lang / "phones.txt")
    unknown = [p for p in model.phones if p not in phone_table]
    if unknown:
        raise DataError(
            f"{kaldi_lang / 'phones.txt'}: has no symbol for phone id {unknown[0]} of the model; "
            f"give the lang dir the model was trained with (--lang)"
        )

    alis = read_alignments(ali_dir, wav)
    _check_coverage(data_dir, wav, alis)
    expected = _frame_counts(data_dir, wav, alis, kaldi_frames)

    phone_ids = sorted(phone_table)  # Kaldi ids of real phones, in id order
    phone_syms = [phone_table[i] for i in phone_ids]
    dense = np.full(max(phone_ids) + 1, -1, dtype=np.int64)
    dense[phone_ids] = np.arange(len(phone_ids))
    levels = {"pdf": [f"pdf{i}" for i in range(model.num_pdfs)], "phone": phone_syms}
    base_of = {s: strip_marks(s) for s in phone_syms}
    if any(base_of[s] != s for s in phone_syms):
        levels["phone_base"] = list(dict.fromkeys(base_of.values()))
    level_of_phone = {"phone": np.arange(len(phone_syms))}
    if "phone_base" in levels:
        base_index = {s: i for i, s in enumerate(levels["phone_base"])}
        level_of_phone["phone_base"] = np.array([base_index[base_of[s]] for s in phone_syms])

    labels: dict[str, dict[str, np.ndarray]] = {name: {} for name in levels}
    cooc = {
        name: np.zeros((model.num_pdfs, len(syms)), dtype=np.int64) for name, syms in levels.items() if name != "pdf"
    }
    for utt, (ali, where) in alis.items():
        ali = _fit_length(ali, expected[utt], tolerance, utt, where)
        pdfs = model.pdfs(ali, f"{where}: {utt}")
        phones = dense[model.phones_per_frame(ali, f"{where}: {utt}")]
        labels["pdf"][utt] = pdfs
        for name, to_level in level_of_phone.items():
            labels[name][utt] = to_level[phones]
            np.add.at(cooc[name], (pdfs, labels[name][utt]), 1)

    silence = _silence(kaldi_lang, phone_syms, "phone_base" in levels)
    score = "phone_base" if "phone_base" in levels else "phone"
    maps = {("pdf", name): _majority(cooc[name], model, dense, level_of_phone[name], levels[name]) for name in cooc}
    if "phone_base" in levels:
        maps[("phone", "phone_base")] = dict(base_of)
    _write_or_keep_lang(recipe_dir / "data" / "lang", levels, targets, score, silence, maps)

    for name, per_utt in labels.items():
        items = ((u, per_utt[u].astype(np.int32)) for u in sorted(per_utt, key=sort_key))
        write_vec_int_ark_scp(items, data_dir / f"labels_{name}.ark", data_dir / f"labels_{name}.scp")
    counts = {
        "utterances": len(alis),
        "frames": int(sum(len(v) for v in labels["pdf"].values())),
        "unaligned": len(wav) - len(alis),
        "pdfs": model.num_pdfs,
        "phones": len(phone_syms),
    }
    if kaldi_frames is not None:
        counts["kaldi_feats"] = len(kaldi_frames)
    return counts


def find_model(ali_dir: Path) -> Path:
    """``final.mdl``, else the highest-numbered ``N.mdl`` (said on stderr, as it is a guess)."""
    if not ali_dir.is_dir():
        raise DataError(f"{ali_dir}: alignment dir not found; give Kaldi's exp/<model>_ali (or exp/<model>)")
    final = ali_dir / "final.mdl"
    if final.is_file():
        return final
    numbered = [(int(p.stem), p) for p in ali_dir.glob("*.mdl") if p.stem.isdigit()]
    if not numbered:
        raise DataError(f"{ali_dir}: no final.mdl nor N.mdl; copy the model the alignments were made with there")
    model = max(numbered)[1]
    click.echo(f"snnasr prep kaldi: {ali_dir} has no final.mdl; using {model.name}", err=True)
    return model


def find_kaldi_lang(lang_dir: str | os.PathLike | None, ali_dir: Path, data_dir: Path, recipe_dir: Path) -> Path:
    """The Kaldi lang dir holding phones.txt: ``lang_dir`` if given, else the first candidate that has one."""
    if lang_dir is not None:
        lang_dir = Path(lang_dir)
        if not (lang_dir / "phones.txt").is_file():
            raise DataError(f"{lang_dir}: no phones.txt; give Kaldi's data/lang dir of the aligned model")
        return lang_dir
    candidates = [ali_dir / ".." / ".." / "data" / "lang", data_dir / ".." / "lang", recipe_dir / "data" / "lang"]
    for cand in candidates:
        if (cand / "phones.txt").is_file():
            return cand.resolve()
    raise DataError(f"no Kaldi phones.txt in {', '.join(str(c) for c in candidates)}; pass --lang <Kaldi data/lang>")


def read_phones_txt(path: Path) -> dict[int, str]:
    """Kaldi id -> symbol for real phones: ``<eps>`` and ``#n`` disambiguation symbols dropped."""
    table: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataError(f"{path}:{n}: expected '<phone> <id>', got {line.strip()!r}")
        if parts[0] != "<eps>" and not parts[0].startswith("#"):
            table[int(parts[1])] = parts[0]
    if not table:
        raise DataError(f"{path}: no phones; give Kaldi's data/lang/phones.txt")
    return table


def strip_marks(phone: str) -> str:
    """Drop Kaldi word-position suffixes (``_B _E _I _S``), then ARPAbet stress digits: AH0_B -> AH."""
    return _STRESS.sub("", _POSITION.sub("", phone))


def read_alignments(ali_dir: Path, wav: dict[str, str]) -> dict[str, tuple[np.ndarray, str]]:
    """All ``ali.N.gz`` in job order: {uttid: (transition ids, file)}; unknown or repeated uttids fail."""
    files = sorted(
        (p for p in ali_dir.glob("ali.*.gz")), key=lambda p: (len(p.name), p.name)
    )  # ali.2.gz before ali.10.gz
    if not files:
        raise DataError(f"{ali_dir}: no ali.*.gz; run Kaldi's steps/align_si.sh (or give the dir it wrote)")
    alis: dict[str, tuple[np.ndarray, str]] = {}
    for path in files:
        for utt, ali in read_vec_int_ark(path):
            if utt not in wav:
                raise DataError(
                    f"{path}: utterance {utt} is not in the data dir; give the data dir "
                    f"these alignments were made from (--data)"
                )
            if utt in alis:
                raise DataError(
                    f"{path}: utterance {utt} is aligned twice (also in {alis[utt][1]}); "
                    f"remove the stale alignment file"
                )
            alis[utt] = (np.asarray(ali, dtype=np.int64), str(path))
    return alis


def _check_coverage(data_dir: Path, wav: dict[str, str], alis: dict) -> None:
    missing = [u for u in wav if u not in alis]
    if not missing:
        return
    if len(alis) < MIN_ALIGNED * len(wav):
        raise DataError(
            f"{data_dir}: only {len(alis)} of {len(wav)} utterances have alignments (need "
            f"{MIN_ALIGNED:.0%}); check that --ali belongs to this data dir"
        )
    shown = " ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
    click.echo(
        f"snnasr prep kaldi: warning: {len(missing)} of {len(wav)} utterances in {data_dir} have no "
        f"alignment (Kaldi failed to align them) and get no labels: {shown}",
        err=True,
    )


def _frame_counts(data_dir: Path, wav: dict[str, str], alis: dict, feats: dict[str, int] | None) -> dict[str, int]:
    """Expected frames per aligned utterance: Kaldi's feats, utt2num_frames, else framing of the audio."""
    if feats is not None:
        missing = [u for u in alis if u not in feats]
        if missing:
            raise DataError(f"{data_dir / 'feats.scp'}: no features for aligned utterance {missing[0]}; recompute them")
        return {u: feats[u] for u in alis}
    if (data_dir / "utt2num_frames").is_file():
        table = read_table(data_dir / "utt2num_frames")
        counts = {}
        for utt in alis:
            if utt not in table or not table[utt].isdigit():
                raise DataError(f"{data_dir / 'utt2num_frames'}: no frame count for {utt}; recompute the features")
            counts[utt] = int(table[utt])
        return counts
    counts = {}
    for utt in tqdm(alis, desc="audio lengths", unit="utt", disable=not sys.stderr.isatty()):
        n, rate = audio_info(wav_path(wav[utt], f"{data_dir / 'wav.scp'}: {utt}"))
        win, shift = int(rate * 0.025), int(rate * 0.010)
        counts[utt] = 0 if n < win else 1 + (n - win) // shift
    return counts


def _fit_length(ali: np.ndarray, n: int, tolerance: int, utt: str, where: str) -> np.ndarray:
    if abs(len(ali) - n) > tolerance:
        raise DataError(
            f"{where}: utterance {utt} has {len(ali)} aligned frames but {n} feature frames "
            f"(tolerance {tolerance}); the alignments were made with other features or audio"
        )
    if len(ali) >= n:
        return ali[:n]
    return np.concatenate([ali, np.full(n - len(ali), ali[-1], dtype=ali.dtype)])


def _majority(
    cooc: np.ndarray, model: TransitionModel, dense: np.ndarray, to_level: np.ndarray, syms: list[str]
) -> dict[str, str]:
    """pdf -> the level symbol seen most often with it in the alignments.

    A pdf never seen takes the lowest phone the model's tuples pair it with, and ``-`` (no label)
    if no tuple uses it, so that the map covers every pdf as data/lang requires.
    """
    tuple_phone: dict[int, int] = {}
    for phone, _state, forward_pdf, loop_pdf in sorted(model.tuples):
        tuple_phone.setdefault(forward_pdf, phone)
        tuple_phone.setdefault(loop_pdf, phone)
    out = {}
    for pdf, row in enumerate(cooc):
        if row.any():
            out[f"pdf{pdf}"] = syms[int(row.argmax())]
        elif pdf in tuple_phone:
            out[f"pdf{pdf}"] = syms[int(to_level[dense[tuple_phone[pdf]]])]
        else:
            out[f"pdf{pdf}"] = DELETED
    return out


def _silence(kaldi_lang: Path, phone_syms: list[str], stripped: bool) -> list[str]:
    sil_file = kaldi_lang / "phones" / "silence.txt"
    if sil_file.is_file():
        sil = [s for s in sil_file.read_text(encoding="utf-8").split() if s in phone_syms]
    else:
        sil = [s for s in phone_syms if strip_marks(s).lower() == "sil"]
    return list(dict.fromkeys(strip_marks(s) for s in sil)) if stripped else sil


def _write_or_keep_lang(
    lang_dir: Path,
    levels: dict[str, list[str]],
    default: str,
    score: str,
    silence: list[str],
    maps: dict[tuple[str, str], dict[str, str]],
) -> None:
    """Write data/lang, or keep the one an earlier set wrote with the same model (only ``default`` may change)."""
    if (lang_dir / "labels.yaml").is_file():
        old = load_lang(lang_dir)
        if old.levels != levels:
            raise DataError(
                f"{lang_dir}: already holds other labels (levels {', '.join(old.levels)}: "
                f"{', '.join(str(len(s)) for s in old.levels.values())} symbols); label every set "
                f"with one model, or use another recipe dir"
            )
        if old.default == default:
            return
        maps, silence, score = old.maps, old.silence, old.score
        click.echo(f"snnasr prep kaldi: {lang_dir}: default level {old.default} -> {default}", err=True)
    write_lang(lang_dir, levels, default=default, score=score, silence=silence, maps=maps)
