"""Frame labels: one class id per feature frame, from phone segments or alignments.

Framing is Kaldi's with ``snip_edges=true``: a window of ``win`` samples moved by ``shift``
samples (both at the audio's own rate), so ``num_frames = 1 + (N - win) // shift`` and frame
``i`` covers samples ``[i*shift, i*shift + win)``.  Its label is the segment covering the frame
centre, sample ``i*shift + win//2``.

Segments are ``(start_sample, end_sample, symbol)`` of the lang's ``segment_level`` (TIMIT
``phone61``).  Symbols that no level can label (TIMIT ``q``, mapped to ``-``) are merged into
the preceding segment (the following one when they come first) *before* any mapping, so every
frame gets a label at every level.

Outputs, per level L of ``data/lang``: ``data/<set>/labels_L.scp`` + ``.ark`` (int32 vector per
utterance).  :func:`match_length` is the one place that decides how far a label sequence may
disagree with the feature frame count (Kaldi alignments use it too).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from snnasr.io import DataError
from snnasr.kaldi.ark import write_vec_int_ark_scp
from snnasr.lang import DELETED, Lang

Segment = tuple[int, int, str]

DEFAULT_TOLERANCE = 2
MERGED_SYMBOLS = ("q",)
# Segment symbols that mark utterance-edge silence (TIMIT ``h#``; FSDD/LibriSpeech ``sil``), and
# how much unlabelled audio next to them :func:`fit_to_audio` labels as that silence.
EDGE_SILENCE = ("h#", "sil")
EDGE_LIMIT_S = 0.5


def window_samples(sample_rate: int, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0) -> tuple[int, int]:
    """(window, shift) in samples, rounded down exactly as Kaldi and torchaudio do."""
    return int(sample_rate * frame_length_ms * 0.001), int(sample_rate * frame_shift_ms * 0.001)


def num_frames(num_samples: int, sample_rate: int, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0) -> int:
    """Kaldi frame count with snip_edges=true; 0 when the audio is shorter than one window."""
    win, shift = window_samples(sample_rate, frame_length_ms, frame_shift_ms)
    if num_samples < win:
        return 0
    return 1 + (num_samples - win) // shift


def validate_segments(uttid: str, segments: Sequence[Segment], symbols: Iterable[str] | None = None) -> None:
    """Raise DataError naming ``uttid`` unless segments are ordered, contiguous and known.

    Zero-length segments are allowed (they cover no frame centre); a gap, an overlap, a
    reversed segment, a negative start or a symbol outside ``symbols`` is an error.
    """
    if not segments:
        raise DataError(f"{uttid}: no phone segments; re-run snnasr prep for this corpus")
    known = set(symbols) if symbols is not None else None
    prev_end = None
    for start, end, sym in segments:
        where = f"{uttid}: segment {start} {end} {sym}"
        if start < 0:
            raise DataError(f"{where}: starts before the audio (negative sample); fix phone_segments")
        if end < start:
            raise DataError(f"{where}: ends before it starts; fix phone_segments")
        if prev_end is not None and start < prev_end:
            raise DataError(f"{where}: overlaps the previous segment (ends at {prev_end}); fix phone_segments")
        if prev_end is not None and start > prev_end:
            raise DataError(
                f"{where}: gap after the previous segment (ends at {prev_end}); segments must be contiguous"
            )
        if known is not None and sym not in known:
            raise DataError(f"{where}: unknown symbol {sym!r}; it is not in the lang's segment level")
        prev_end = end


def fit_to_audio(
    uttid: str,
    segments: Sequence[Segment],
    num_samples: int,
    sample_rate: int,
    limit_s: float = EDGE_LIMIT_S,
    silence: Iterable[str] = EDGE_SILENCE,
) -> list[Segment]:
    """Make segments span exactly ``[0, num_samples)`` by stretching edge silence, within limits.

    Real LDC TIMIT has ``.PHN`` files whose first ``h#`` starts after sample 0, or whose last
    ``h#`` ends before (or a little after) the audio does.  That unlabelled audio is the same
    silence, so the edge ``h#`` (any ``silence`` symbol) is stretched or clipped to the audio's
    edge when the gap is at most ``limit_s`` seconds.  A larger gap, or one next to a segment
    that is not silence, is a DataError saying which edge, by how much, and next to what: such
    segments do not describe this audio, and the caller drops the utterance.
    """
    if not segments:
        raise DataError(f"{uttid}: no phone segments; re-run snnasr prep for this corpus")
    silence = set(silence)
    segs: list[list[Any]] = [list(s) for s in segments]
    limit = int(round(limit_s * sample_rate))
    total = f"{num_samples} samples ({num_samples / sample_rate:.2f} s)"

    def fix(edge: str, gap: int, seg: list, where: str) -> None:
        what = f"{gap / sample_rate:.2f} s of audio {where} unlabelled" if gap > 0 else None
        if gap < 0:
            what = f"the segments run {-gap / sample_rate:.2f} s past the end of the audio"
        if seg[2] not in silence:
            raise DataError(
                f"{uttid}: {what} (audio {total}), next to {edge} segment {seg[2]!r}, which is not "
                f"silence ({'/'.join(sorted(silence))}); the segments do not match this audio: fix them"
            )
        if abs(gap) > limit:
            raise DataError(
                f"{uttid}: {what} (audio {total}), more than the {limit_s:g} s of edge silence "
                f"snnasr labels as {seg[2]!r}; the segments do not match this audio: fix them"
            )

    if segs[0][0] != 0:
        fix("the first", segs[0][0], segs[0], "before the first segment is")
        segs[0][0] = 0
    end = segs[-1][1]
    if end != num_samples:
        fix("the last", num_samples - end, segs[-1], "after the last segment is")
        # Clip every segment to the audio (an overhanging h# may be preceded by zero-length ones).
        segs = [[min(a, num_samples), min(b, num_samples), p] for a, b, p in segs]
        segs[-1][1] = num_samples
    return [(a, b, p) for a, b, p in segs]


def merge_symbols(uttid: str, segments: Sequence[Segment], merged: Iterable[str] = MERGED_SYMBOLS) -> list[Segment]:
    """Give the samples of ``merged`` symbols (TIMIT ``q``) to their neighbour.

    A merged segment extends the preceding kept segment; leading merged segments extend the
    first kept one backwards.  Raises DataError when nothing but merged symbols remains.
    """
    merged = set(merged)
    out: list[list] = []
    lead_start = None
    for start, end, sym in segments:
        if sym in merged:
            if out:
                out[-1][1] = end
            elif lead_start is None:
                lead_start = start
        else:
            out.append([start, end, sym])
    if not out:
        raise DataError(f"{uttid}: only {'/'.join(sorted(merged))} segments; nothing to label")
    if lead_start is not None:
        out[0][0] = lead_start
    return [(s, e, sym) for s, e, sym in out]


def frame_labels_from_segments(
    segments: Sequence[Segment],
    n_frames: int,
    sample_rate: int,
    *,
    uttid: str = "utterance",
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    merged: Iterable[str] = MERGED_SYMBOLS,
) -> list[str]:
    """Segment-level symbol of each of ``n_frames`` frames by the centre-of-frame rule.

    Segments are validated and ``merged`` symbols folded into neighbours first.  Centres
    past the last segment take its symbol (and centres before the first, the first's): the
    caller decides with :func:`match_length` whether the counts are close enough for that.
    """
    validate_segments(uttid, segments)
    segs = merge_symbols(uttid, segments, merged)
    win, shift = window_samples(sample_rate, frame_length_ms, frame_shift_ms)
    centres = np.arange(n_frames, dtype=np.int64) * shift + win // 2
    ends = np.array([e for _, e, _ in segs], dtype=np.int64)
    idx = np.minimum(np.searchsorted(ends, centres, side="right"), len(segs) - 1)
    return [segs[i][2] for i in idx]


def check_lengths(
    uttid: str, n_labels: int, n_frames: int, tolerance: int = DEFAULT_TOLERANCE, source: str = "labels"
) -> None:
    """Raise DataError naming ``uttid`` when label and feature frame counts differ by > tolerance."""
    if abs(n_labels - n_frames) > tolerance:
        side = "short of" if n_labels < n_frames else "beyond"
        raise DataError(
            f"{uttid}: {source} cover {n_labels} frames but the features have {n_frames}: "
            f"{abs(n_labels - n_frames)} frames {side} the audio, more than the length_tolerance of "
            f"{tolerance}; check that they belong to this audio (or raise length_tolerance)"
        )


def match_length(
    uttid: str, labels: np.ndarray, n_frames: int, tolerance: int = DEFAULT_TOLERANCE, source: str = "labels"
) -> np.ndarray:
    """Check with :func:`check_lengths`, then truncate or pad by repeating the last label."""
    labels = np.asarray(labels)
    check_lengths(uttid, len(labels), n_frames, tolerance, source)
    if len(labels) >= n_frames:
        return labels[:n_frames]
    return np.concatenate([labels, np.repeat(labels[-1:], n_frames - len(labels))])


def level_maps(lang: Lang) -> dict[str, dict[str, int]]:
    """For each level, segment-level symbol -> class id of that level (``-`` symbols absent)."""
    if not lang.segment_level:
        raise DataError(
            f"{lang.dir}/labels.yaml: no segment_level; cannot turn phone_segments into labels (re-run snnasr prep)"
        )
    out = {}
    for level in lang.levels:
        sym_map = lang.symbol_map(lang.segment_level, level)
        index = lang.index(level)
        out[level] = {src: index[dst] for src, dst in sym_map.items() if dst != DELETED}
    return out


def symbols_to_ids(uttid: str, symbols: Sequence[str], ids: Mapping[str, int], level: str) -> np.ndarray:
    """Map segment-level symbols through one level's id table; unmappable symbols are errors."""
    try:
        return np.fromiter((ids[s] for s in symbols), dtype=np.int32, count=len(symbols))
    except KeyError as e:
        raise DataError(
            f"{uttid}: symbol {e.args[0]!r} has no label at level {level}; check the lang's map files"
        ) from None


def write_labels(data_dir: str | os.PathLike, level: str, items: Mapping[str, np.ndarray]) -> int:
    """Write ``labels_<level>.ark/.scp`` (sorted by uttid); return the count."""
    data_dir = Path(data_dir)
    keys = sorted(items, key=lambda k: k.encode("utf-8"))
    return write_vec_int_ark_scp(
        ((k, items[k]) for k in keys), data_dir / f"labels_{level}.ark", data_dir / f"labels_{level}.scp"
    )


def write_label_levels(
    data_dir: str | os.PathLike, lang: Lang, per_utt_symbols: Mapping[str, Sequence[str]]
) -> dict[str, int]:
    """Write frame labels of every lang level from segment-level symbols per utterance."""
    counts = {}
    for level, ids in level_maps(lang).items():
        items = {utt: symbols_to_ids(utt, syms, ids, level) for utt, syms in per_utt_symbols.items()}
        counts[level] = write_labels(data_dir, level, items)
    return counts
