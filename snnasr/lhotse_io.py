"""Lhotse manifests in and out: ``snnasr export lhotse`` and ``snnasr prep lhotse`` (extra ``[lhotse]``).

Export (a data dir -> ``<out>/<set>_recordings.jsonl.gz`` + ``<out>/<set>_supervisions.jsonl.gz``):
one ``Recording`` per utterance (snnasr's data dirs hold one utterance per audio file; sample
rate and length from the audio header, absolute paths), one ``SupervisionSegment`` spanning it
with its ``text`` and ``speaker``, and the phone alignment as ``alignment["phone"]``, a list of
``AlignmentItem(symbol, start, duration)`` in seconds.  The alignment comes from
``phone_segments`` (TIMIT, LibriSpeech + MFA, FSDD, the synthetic corpus) when the set has
one, else from the frame labels ``prep kaldi`` wrote (``labels_phone.scp``: runs of equal
labels, frame ``t`` starting at ``t * frame_shift``) -- Lhotse itself cannot import Kaldi's
``ali.*.gz``, so this is how Kaldi alignments reach it.

Import (manifests -> ``<recipe>/data/<set>/``): each supervision becomes an utterance (sorted
by id, speaker = ``speaker`` or the id itself, as Kaldi does without speakers).  A supervision
that is a whole single-channel file uses that file; any other (part of a recording, a channel
of a multi-channel one, audio in memory or behind a URL) is cut out with Lhotse and written to
``<set>/wav/<id>.wav``, because snnasr's data dirs have no ``segments`` file.  Phone alignments
become ``phone_segments`` (samples, relative to the supervision); gaps between items are
labelled ``sil`` because frame labels need contiguous segments.  Without a ``data/lang`` a lang
with one level ``phone`` (the symbols seen) is written; an existing one must know every symbol.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from snnasr.io import DataError, SnnasrError

ALIGNMENT_KEY = "phone"
GAP_SYMBOL = "sil"
SILENCE_SYMBOLS = ("sil", "sp", "spn", "h#", "pau", "<eps>")


def _lhotse():
    try:
        import lhotse  # noqa: PLC0415
    except ImportError:
        raise SnnasrError("the lhotse package is not installed; pip install 'snnasr[lhotse]'") from None
    return lhotse


def _atomic_manifest(manifest: Any, path: Path) -> None:
    """``manifest.to_file`` through a temporary name (same suffix: Lhotse picks the format by it)."""
    tmp = path.with_name(f".tmp.{path.name}")
    try:
        manifest.to_file(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _frame_alignment(data_dir: Path) -> dict[str, list[tuple[float, float, str]]] | None:
    """``labels_phone.scp`` runs as ``(start_s, duration_s, symbol)``; None without those labels."""
    from snnasr.features import read_feature_state  # noqa: PLC0415
    from snnasr.kaldi.ark import read_vec_int_scp  # noqa: PLC0415
    from snnasr.lang import load_lang  # noqa: PLC0415
    from snnasr.utt_plot import segments  # noqa: PLC0415

    scp, lang_dir = data_dir / "labels_phone.scp", data_dir.parent / "lang"
    if not scp.is_file() or not (lang_dir / "labels.yaml").is_file():
        return None
    symbols = load_lang(lang_dir).symbols("phone")
    shift = float(read_feature_state(data_dir).get("frame_shift", 0.01))
    return {
        utt: [(a * shift, (b - a) * shift, symbols[lab]) for a, b, lab in segments(labels) if lab >= 0]
        for utt, labels in read_vec_int_scp(scp)
    }


def export_lhotse(data_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write Lhotse manifests for ``data_dir`` into ``out_dir`` (names in the module docstring); return counts."""
    lhotse = _lhotse()
    from lhotse.audio import AudioSource  # noqa: PLC0415
    from lhotse.supervision import AlignmentItem  # noqa: PLC0415

    from snnasr.audio import audio_info, wav_path  # noqa: PLC0415
    from snnasr.data.datadir import read_segments, read_table, validate_data_dir  # noqa: PLC0415

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    validate_data_dir(data_dir)
    wav, text, utt2spk = (read_table(data_dir / n) for n in ("wav.scp", "text", "utt2spk"))
    has_segments = (data_dir / "phone_segments").is_file()
    segs = read_segments(data_dir / "phone_segments") if has_segments else {}
    frames = None if has_segments else _frame_alignment(data_dir)
    recordings, supervisions, aligned = [], [], 0
    for utt, entry in wav.items():
        path = wav_path(entry, f"{data_dir / 'wav.scp'}: {utt}").resolve()
        n, rate = audio_info(path)
        source = AudioSource(type="file", channels=[0], source=str(path))
        recordings.append(
            lhotse.Recording(id=utt, sources=[source], sampling_rate=rate, num_samples=n, duration=n / rate)
        )
        if utt in segs:
            items = [AlignmentItem(p, a / rate, (b - a) / rate) for a, b, p in segs[utt]]
        elif frames is not None and utt in frames:
            items = [AlignmentItem(p, start, dur) for start, dur, p in frames[utt]]
        else:
            items = None
        aligned += items is not None
        supervisions.append(
            lhotse.SupervisionSegment(
                id=utt,
                recording_id=utt,
                start=0.0,
                duration=n / rate,
                channel=0,
                text=text[utt],
                speaker=utt2spk[utt],
                alignment={ALIGNMENT_KEY: items} if items is not None else None,
            )
        )
    recs, sups = lhotse.RecordingSet.from_recordings(recordings), lhotse.SupervisionSet.from_segments(supervisions)
    lhotse.validate_recordings_and_supervisions(recs, sups)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"{data_dir.name}_{kind}.jsonl.gz" for kind in ("recordings", "supervisions")}
    _atomic_manifest(recs, paths["recordings"])
    _atomic_manifest(sups, paths["supervisions"])
    return {"recordings": len(recs), "supervisions": len(sups), "aligned": aligned}


def _load(lhotse: Any, path: Path, kind: type) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: not found; give the Lhotse manifest (e.g. <corpus>_{kind.__name__.lower()}.jsonl.gz)")
    try:
        manifest = lhotse.load_manifest(path)
    except Exception as e:
        raise DataError(f"{path}: not a Lhotse manifest ({type(e).__name__}: {e}); re-export it") from None
    if not isinstance(manifest, kind):
        raise DataError(f"{path}: a {type(manifest).__name__}, expected a {kind.__name__}; check the argument order")
    return manifest


def _whole_file(rec: Any, sup: Any) -> str | None:
    """The audio file of ``sup`` if it is exactly one whole single-channel file, else None."""
    if len(rec.sources) != 1 or rec.sources[0].type != "file" or rec.num_channels != 1 or rec.transforms:
        return None
    if abs(sup.start) > 0.5 / rec.sampling_rate or abs(sup.duration - rec.duration) > 1.0 / rec.sampling_rate:
        return None
    return str(Path(rec.sources[0].source).resolve())


def _segments(sup: Any, rate: int, n: int) -> list[tuple[int, int, str]]:
    """``alignment["phone"]`` as contiguous sample segments over ``[0, n)``; gaps become ``sil``."""
    items = sorted(sup.alignment[ALIGNMENT_KEY], key=lambda it: it.start)
    out: list[tuple[int, int, str]] = []
    pos = 0
    for it in items:
        a = min(max(round((it.start - sup.start) * rate), 0), n)
        b = min(max(round((it.start + it.duration - sup.start) * rate), a), n)
        if a < pos:
            raise DataError(
                f"supervision {sup.id}: alignment item {it.symbol!r} at {it.start:.3f} s overlaps the previous one"
            )
        if a > pos:
            out.append((pos, a, GAP_SYMBOL))
        if b > a:
            out.append((a, b, it.symbol))
        pos = b
    if pos < n:
        out.append((pos, n, GAP_SYMBOL))
    return out


def prepare_lhotse(
    recordings: str | os.PathLike, supervisions: str | os.PathLike, recipe_dir: str | os.PathLike, set_name: str
) -> dict[str, int]:
    """Write ``<recipe>/data/<set_name>`` (and a ``data/lang`` if needed) from Lhotse manifests."""
    lhotse = _lhotse()
    import soundfile as sf  # noqa: PLC0415

    from snnasr.data.datadir import sort_key, write_data_dir  # noqa: PLC0415
    from snnasr.io import atomic_write  # noqa: PLC0415
    from snnasr.lang import load_lang, write_lang  # noqa: PLC0415

    recs = _load(lhotse, Path(recordings), lhotse.RecordingSet)
    sups = _load(lhotse, Path(supervisions), lhotse.SupervisionSet)
    recipe_dir = Path(recipe_dir)
    out = recipe_dir / "data" / set_name
    wav, text, utt2spk, segs, clips = {}, {}, {}, {}, 0
    for sup in sorted(sups, key=lambda s: sort_key(s.id)):
        if any(c.isspace() for c in sup.id) or not sup.id:
            raise DataError(f"{supervisions}: supervision id {sup.id!r} has spaces; Kaldi ids cannot")
        if sup.id in wav:
            raise DataError(f"{supervisions}: supervision {sup.id} appears twice; ids must be unique")
        if sup.recording_id not in recs:
            raise DataError(
                f"{supervisions}: supervision {sup.id} names recording {sup.recording_id}, not in {recordings}"
            )
        if sup.text is None:
            raise DataError(f"{supervisions}: supervision {sup.id} has no text; snnasr data dirs need a transcript")
        rec = recs[sup.recording_id]
        if isinstance(sup.channel, list) and len(sup.channel) != 1:
            raise DataError(f"{supervisions}: supervision {sup.id} spans channels {sup.channel}; snnasr needs one")
        path = _whole_file(rec, sup)
        if path is None:
            audio = rec.load_audio(channels=sup.channel, offset=sup.start, duration=sup.duration)
            clip = out / "wav" / f"{sup.id}.wav"
            with atomic_write(clip, "wb") as f:
                sf.write(
                    f,
                    np.asarray(audio, dtype=np.float32).reshape(-1),
                    rec.sampling_rate,
                    format="WAV",
                    subtype="PCM_16",
                )
            path, clips = str(clip.resolve()), clips + 1
        wav[sup.id] = path
        text[sup.id] = " ".join(sup.text.split())
        utt2spk[sup.id] = sup.speaker or sup.id
        if sup.alignment and ALIGNMENT_KEY in sup.alignment:
            segs[sup.id] = _segments(sup, rec.sampling_rate, round(sup.duration * rec.sampling_rate))
    if not wav:
        raise DataError(f"{supervisions}: no supervisions; nothing to prepare")
    if segs and len(segs) != len(wav):
        missing = sorted(set(wav) - set(segs), key=sort_key)[0]
        raise DataError(f"{supervisions}: {len(wav) - len(segs)} supervisions (e.g. {missing}) have no phone alignment")
    lang_dir = recipe_dir / "data" / "lang"
    if segs:
        symbols = sorted({p for s in segs.values() for _, _, p in s})
        if (lang_dir / "labels.yaml").is_file():
            lang = load_lang(lang_dir)
            known = set(lang.symbols(lang.segment_level or lang.default))
            unknown = [p for p in symbols if p not in known]
            if unknown:
                raise DataError(f"{lang_dir}: has no symbol {unknown[0]!r} of these alignments; use another recipe dir")
        else:
            silence = [p for p in symbols if p.lower() in SILENCE_SYMBOLS]
            write_lang(lang_dir, {"phone": symbols}, "phone", "phone", silence, segment_level="phone")
    write_data_dir(out, wav, text, utt2spk, segs or None)
    return {"utterances": len(wav), "aligned": len(segs), "clips written": clips}
