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

import numpy as np

from snnasr.io import DataError
from snnasr.kaldi.ark import write_vec_int_ark_scp
from snnasr.lang import DELETED, Lang

Segment = tuple[int, int, str]

DEFAULT_TOLERANCE = 2
MERGED_SYMBOLS = ("q",)


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
        raise DataError(
            f"{uttid}: {source} cover {n_labels} frames but the features have {n_frames} "
            f"(tolerance {tolerance}); the {source} do not belong to this audio or framing"
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
