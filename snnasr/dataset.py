"""Training data: features with CMVN applied, optional context splicing, and frame labels.

Reads ``data/<set>/{feats.scp, cmvn.scp, utt2spk, conf/features.yaml, labels_<level>.scp}``
and ``data/lang/``.  Nothing of the corpus stays in memory but an index (uttid, ark offset,
length, label offset, CMVN key per utterance) and the CMVN stats: an item is read from its ark
when asked for (:meth:`UtteranceDataset.piece`), so host memory does not grow with the corpus
(LibriSpeech 960 h is ~340 M frames).  Building the index reads matrix headers only, and every
label vector once to check it, keeping none.

CMVN follows Kaldi ``apply-cmvn``: ``x - mean`` with the stats of the utterance's key (its
speaker for ``cmvn: speaker``, itself for ``utt``, as ``conf/features.yaml`` records), and with
``norm_vars`` also ``/ std`` (variance floored at 1e-20 as Kaldi does).  Splicing by ``context``
frames concatenates frames ``t-c .. t+c`` (edge frames replicated, as Kaldi ``splice-feats``).
Both are applied to the frames an item needs (a piece plus ``c`` frames of context each side),
never to the corpus, and give exactly the numbers of normalising and splicing the whole
utterance first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from snnasr.data.datadir import read_table
from snnasr.data.drops import read_dropped
from snnasr.features import read_feature_state
from snnasr.io import DataError, require_file
from snnasr.kaldi.ark import load_mat_rows, load_vec_int_entry, mat_shape, read_mat_scp, scp_entries
from snnasr.labels import DEFAULT_TOLERANCE, match_length
from snnasr.lang import Lang, load_lang

VAR_FLOOR = 1e-20


def apply_cmvn(feats: np.ndarray, stats: np.ndarray, norm_vars: bool = False) -> np.ndarray:
    """Kaldi ``apply-cmvn`` with a ``2 x (D+1)`` stats matrix; returns float32."""
    count = stats[0, -1]
    if count < 1.0:
        raise DataError(f"CMVN stats with count {count}; regenerate cmvn.scp with `snnasr features`")
    mean = stats[0, :-1] / count
    out = np.asarray(feats, dtype=np.float64) - mean
    if norm_vars:
        var = np.maximum(stats[1, :-1] / count - mean**2, VAR_FLOOR)
        out /= np.sqrt(var)
    return out.astype(np.float32)


def splice(feats: torch.Tensor, context: int) -> torch.Tensor:
    """``[T, D] -> [T, D*(2c+1)]``, frames ``t-c .. t+c`` in order, edges replicated."""
    if context == 0:
        return feats
    t = feats.shape[0]
    offsets = torch.arange(-context, context + 1)
    idx = (torch.arange(t)[:, None] + offsets[None, :]).clamp_(0, t - 1)
    return feats[idx].reshape(t, -1)


def utterance_labels(data_dir: Path, lang: Lang, level: str | None) -> tuple[str, Path, dict[str, np.ndarray]]:
    """``(level, path, {uttid: [class id]})`` from ``data_dir/utt2<level>`` (default: the lang's).

    Raises DataError when the recipe has no utterance level, the table is missing, or a label
    is not one of the level's classes.
    """
    if not lang.utterance_level:
        raise DataError(
            f"{lang.dir}/labels.yaml: no utterance_level, so no utterance labels for task: utterance; "
            f"use a corpus whose prep writes them (snnasr prep fsdd) or task: frame"
        )
    level = level or lang.utterance_level
    if level != lang.utterance_level:
        raise DataError(f"{lang.dir}: utterance level is {lang.utterance_level!r}, not {level!r}")
    path = data_dir / f"utt2{level}"
    if not path.is_file():
        raise DataError(f"{path}: no utterance labels for this set; re-run snnasr prep for this recipe")
    index = {c: i for i, c in enumerate(lang.utterance_classes)}
    labels = {}
    for utt, symbol in read_table(path).items():
        if symbol not in index:
            raise DataError(f"{path}: {utt} has label {symbol!r}, not one of {', '.join(lang.utterance_classes)}")
        labels[utt] = np.array([index[symbol]], dtype=np.int64)
    return level, path, labels


class UtteranceDataset(Dataset):
    """Items ``(uttid, feats FloatTensor[T, D], labels LongTensor[T])`` in feats.scp order, read lazily.

    Args:
        data_dir: ``<recipe>/data/<set>`` after ``snnasr features`` (and labels).
        level: label level (``labels_<level>.scp``); None = the lang's default.
        norm_vars: also divide by the per-key standard deviation.
        context: splice +-context frames (0 = none).
        lang_dir: default ``<data_dir>/../lang``.
        task: ``frame`` (labels per frame) or ``utterance``: the class of ``data/<set>/utt2<U>``
            (U = the lang's utterance level, the default ``level``) repeated over every frame, so
            batching is shared with frame training and pooling happens on the model's output.

    ``uttids`` and ``lengths`` (frames) describe the index; ``piece(i, start, end)`` reads frames
    ``start:end`` of utterance ``i``.  Utterances without labels are skipped (counted in
    ``.skipped``, one warning line), as Kaldi alignments can miss a few.  Raises DataError for
    missing features/CMVN/labels, no labelled utterance, features of different dimensions, or
    labels whose length differs from the features by more than the features stage's tolerance
    (smaller differences are padded/truncated); an entry that cannot be read later is a
    DataError naming its scp line.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        level: str | None = None,
        norm_vars: bool = False,
        context: int = 0,
        lang_dir: str | os.PathLike | None = None,
        task: str = "frame",
    ) -> None:
        self.data_dir = Path(data_dir)
        if context < 0:
            raise DataError(f"context={context}: must be >= 0 frames")
        self.lang: Lang = load_lang(Path(lang_dir) if lang_dir is not None else self.data_dir.parent / "lang")
        self.context = context
        self.norm_vars = norm_vars
        self.task = task

        hint = "run `snnasr features` for this set first"
        state = read_feature_state(self.data_dir)
        feats_scp = require_file(self.data_dir / "feats.scp", "features", hint)
        utt_classes: dict[str, np.ndarray] = {}
        label_entries: dict[str, tuple[str, str]] = {}
        if task == "utterance":
            self.level, labels_scp, utt_classes = utterance_labels(self.data_dir, self.lang, level)
            self.classes = list(self.lang.utterance_classes)
            labelled: set[str] = set(utt_classes)
        else:
            self.level = level if level is not None else self.lang.default
            self.classes = self.lang.symbols(self.level)
            labels_scp = self.data_dir / f"labels_{self.level}.scp"
            if not labels_scp.is_file():
                have = sorted(p.stem[len("labels_") :] for p in self.data_dir.glob("labels_*.scp"))
                raise DataError(
                    f"{labels_scp}: no frame labels of level {self.level!r}; this set has "
                    f"{', '.join(have) or 'no labels'} (labels come from `snnasr features` with "
                    f"phone_segments, or `snnasr prep kaldi`)"
                )
            label_entries = {k: (rx, f"{labels_scp}:{n}") for k, rx, n in scp_entries(labels_scp)}
            labelled = set(label_entries)
        self.num_classes = len(self.classes)
        self._stats, utt2key = self._cmvn(state, hint)
        self._tolerance = int((state.get("options") or {}).get("length_tolerance", DEFAULT_TOLERANCE))

        # The index: per utterance its feature entry, label entry (or class) and CMVN key.
        self.uttids: list[str] = []
        self.lengths: list[int] = []
        self._feats: list[tuple[str, str]] = []
        self._labels: list[tuple[str, str] | np.ndarray] = []
        self._keys: list[str | None] = []
        self.skipped = 0
        dims: dict[int, str] = {}
        for utt, rxfile, n in scp_entries(feats_scp):
            if utt not in labelled:
                self.skipped += 1
                continue
            where = f"{feats_scp}:{n}"
            frames, dim = mat_shape(rxfile, where, utt)
            dims.setdefault(dim, utt)
            key = None
            if self._stats is not None:
                key = utt2key.get(utt, utt)
                if key not in self._stats:
                    raise DataError(f"{self.data_dir}/cmvn.scp: no stats for {key!r} (utterance {utt}); {hint}")
            self.uttids.append(utt)
            self.lengths.append(frames)
            self._feats.append((rxfile, where))
            self._labels.append(utt_classes[utt] if task == "utterance" else label_entries[utt])
            self._keys.append(key)
            self.labels(len(self.uttids) - 1)  # checked now, so training never meets a bad one
        if not self.uttids:
            raise DataError(f"{labels_scp}: no utterance of feats.scp has labels; re-run the labelling stage")
        if len(dims) > 1:
            (d1, u1), (d2, u2) = list(dims.items())[:2]
            raise DataError(
                f"{feats_scp}: {u1} has {d1}-dim features but {u2} {d2}; re-run snnasr features for this set"
            )
        if self.skipped:
            print(
                f"snnasr: warning: {self.data_dir}: {self.skipped} utterances without labels_{self.level} skipped",
                file=sys.stderr,
            )
        # Labels of utterances this set does not have (and did not drop) belong to another set.
        dropped = read_dropped(self.data_dir)
        foreign = sorted(u for u in labelled.difference(self.uttids) if u not in dropped)
        if foreign:
            raise DataError(
                f"{labels_scp}: labels for {len(foreign)} utterances that are not in feats.scp (e.g. {foreign[0]}); "
                f"the labels belong to another set: re-run snnasr features or snnasr prep kaldi for this one"
            )
        self.dim = next(iter(dims)) * (2 * context + 1)

    def _cmvn(self, state: dict, hint: str) -> tuple[dict[str, np.ndarray] | None, dict[str, str]]:
        """CMVN stats by key and the utt -> key map the features stage used."""
        mode = state.get("cmvn", "none")
        if mode == "none":
            return None, {}
        scp = require_file(self.data_dir / "cmvn.scp", f"CMVN stats ({mode})", hint)
        stats = {k: np.asarray(v, dtype=np.float64) for k, v in read_mat_scp(scp)}
        utt2key = read_table(self.data_dir / "utt2spk") if mode == "speaker" else {}
        return stats, utt2key

    def labels(self, i: int) -> np.ndarray:
        """Utterance ``i``'s class id per frame (int64), length-matched to its features."""
        utt, frames, entry = self.uttids[i], self.lengths[i], self._labels[i]
        if isinstance(entry, np.ndarray):  # task: utterance, one class
            return np.full(frames, entry[0], dtype=np.int64)
        rxfile, where = entry
        lab = match_length(utt, load_vec_int_entry(rxfile, where, utt), frames, self._tolerance, f"labels_{self.level}")
        if lab.size and (lab.min() < 0 or lab.max() >= self.num_classes):
            raise DataError(
                f"{utt}: labels_{self.level} has class ids outside 0..{self.num_classes - 1}; "
                f"the labels do not belong to {self.lang.dir}"
            )
        return lab.astype(np.int64)

    def piece(self, i: int, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``start:end`` of utterance ``i``: ``(feats [end-start, dim], labels [end-start])``.

        Reads the piece and its ``context`` frames each side (fewer at the utterance's edges, which
        splicing replicates), applies CMVN to those rows only, and splices; the result equals
        slicing the normalised, spliced whole utterance.
        """
        if not 0 <= start <= end <= self.lengths[i]:
            raise IndexError(f"piece {start}:{end} of {self.uttids[i]} ({self.lengths[i]} frames)")
        lo, hi = max(0, start - self.context), min(self.lengths[i], end + self.context)
        rxfile, where = self._feats[i]
        feats = load_mat_rows(rxfile, where, self.uttids[i], lo, hi)
        key = self._keys[i]
        if key is not None and self._stats is not None:
            feats = apply_cmvn(feats, self._stats[key], self.norm_vars)
        x = splice(torch.from_numpy(np.require(feats, np.float32, ["C", "W"])), self.context)
        y = torch.from_numpy(self.labels(i)[start:end])
        return x[start - lo : end - lo], y

    def __len__(self) -> int:
        return len(self.uttids)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return (self.uttids[i], *self.piece(i, 0, self.lengths[i]))
