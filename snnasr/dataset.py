"""Training data: features with CMVN applied, optional context splicing, and frame labels.

Reads ``data/<set>/{feats.scp, cmvn.scp, utt2spk, conf/features.yaml, labels_<level>.scp}``
and ``data/lang/``.  Everything is loaded into memory once (TIMIT is ~1.1M frames).

CMVN follows Kaldi ``apply-cmvn``: ``x - mean`` with the stats of the utterance's key (its
speaker for ``cmvn: speaker``, itself for ``utt``, as ``conf/features.yaml`` records), and with
``norm_vars`` also ``/ std`` (variance floored at 1e-20 as Kaldi does).  Splicing by ``context``
frames concatenates frames ``t-c .. t+c`` (edge frames replicated, as Kaldi ``splice-feats``);
it is done per item so memory holds only the unspliced features.
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
from snnasr.kaldi.ark import read_mat_scp, read_vec_int_scp
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
    """Items ``(uttid, feats FloatTensor[T, D], labels LongTensor[T])`` in uttid order.

    Args:
        data_dir: ``<recipe>/data/<set>`` after ``snnasr features`` (and labels).
        level: label level (``labels_<level>.scp``); None = the lang's default.
        norm_vars: also divide by the per-key standard deviation.
        context: splice +-context frames (0 = none).
        lang_dir: default ``<data_dir>/../lang``.
        task: ``frame`` (labels per frame) or ``utterance``: the class of ``data/<set>/utt2<U>``
            (U = the lang's utterance level, the default ``level``) repeated over every frame, so
            batching is shared with frame training and pooling happens on the model's output.

    Utterances without labels are skipped (counted in ``.skipped``, one warning line), as
    Kaldi alignments can miss a few.  Raises DataError for missing features/CMVN/labels,
    no labelled utterance, or labels whose length differs from the features by more than the
    features stage's tolerance (smaller differences are padded/truncated).
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

        hint = "run `snnasr features` for this set first"
        state = read_feature_state(self.data_dir)
        feats_scp = require_file(self.data_dir / "feats.scp", "features", hint)
        if task == "utterance":
            self.level, labels_scp, labels = utterance_labels(self.data_dir, self.lang, level)
            self.classes = list(self.lang.utterance_classes)
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
            labels = dict(read_vec_int_scp(labels_scp))
        self.num_classes = len(self.classes)
        stats, utt2key = self._cmvn(state, hint)
        tolerance = int((state.get("options") or {}).get("length_tolerance", DEFAULT_TOLERANCE))

        self.uttids: list[str] = []
        self.lengths: list[int] = []
        self._feats: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self.skipped = 0
        # Read to the end first, so the scp's open arks are closed before an error below can
        # leave the reader half-read.  Popping keeps peak memory low.
        pending = list(read_mat_scp(feats_scp))[::-1]
        while pending:
            utt, feats = pending.pop()
            if utt not in labels:
                self.skipped += 1
                continue
            if stats is not None:
                key = utt2key.get(utt, utt)
                if key not in stats:
                    raise DataError(f"{self.data_dir}/cmvn.scp: no stats for {key!r} (utterance {utt}); {hint}")
                feats = apply_cmvn(feats, stats[key], norm_vars)
            if task == "utterance":
                lab = np.full(len(feats), labels[utt][0], dtype=np.int64)
            else:
                lab = match_length(utt, labels[utt], len(feats), tolerance, source=f"labels_{self.level}")
            if lab.size and (lab.min() < 0 or lab.max() >= self.num_classes):
                raise DataError(
                    f"{utt}: labels_{self.level} has class ids outside 0..{self.num_classes - 1}; "
                    f"the labels do not belong to {self.lang.dir}"
                )
            self.uttids.append(utt)
            self.lengths.append(len(feats))
            self._feats.append(torch.from_numpy(np.require(feats, np.float32, ["C", "W"])))
            self._labels.append(torch.from_numpy(lab.astype(np.int64)))
        if not self.uttids:
            raise DataError(f"{labels_scp}: no utterance of feats.scp has labels; re-run the labelling stage")
        if self.skipped:
            print(
                f"snnasr: warning: {self.data_dir}: {self.skipped} utterances without labels_{self.level} skipped",
                file=sys.stderr,
            )
        # Labels of utterances this set does not have (and did not drop) belong to another set.
        dropped = read_dropped(self.data_dir)
        foreign = sorted(u for u in set(labels).difference(self.uttids) if u not in dropped)
        if foreign:
            raise DataError(
                f"{labels_scp}: labels for {len(foreign)} utterances that are not in feats.scp (e.g. {foreign[0]}); "
                f"the labels belong to another set: re-run snnasr features or snnasr prep kaldi for this one"
            )
        self.dim = self._feats[0].shape[1] * (2 * context + 1)

    def _cmvn(self, state: dict, hint: str) -> tuple[dict[str, np.ndarray] | None, dict[str, str]]:
        """CMVN stats by key and the utt -> key map the features stage used."""
        mode = state.get("cmvn", "none")
        if mode == "none":
            return None, {}
        scp = require_file(self.data_dir / "cmvn.scp", f"CMVN stats ({mode})", hint)
        stats = {k: np.asarray(v, dtype=np.float64) for k, v in read_mat_scp(scp)}
        utt2key = read_table(self.data_dir / "utt2spk") if mode == "speaker" else {}
        return stats, utt2key

    def __len__(self) -> int:
        return len(self.uttids)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor, torch.Tensor]:
        return self.uttids[i], splice(self._feats[i], self.context), self._labels[i]
