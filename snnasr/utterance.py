"""Utterance classification (``task: utterance``): one label per utterance from the frame readout.

Every architecture keeps its per-frame readout (logits ``[T, B, C]``); the utterance's scores
``[B, C]`` pool them over its valid frames ``t >= burn_in`` (an utterance no longer than the
burn-in keeps its last frame), as ``utterance.pool`` says:

``last``         the logits of the last valid frame (a leaky-integrator readout's final state);
``mean``         their mean;
``max``          their maximum, per class;
``softmax-sum``  the sum of per-frame softmax (Yin et al.'s SHD readout, whose code feeds this
                 sum to a cross-entropy loss as if it were logits; done the same here).

The loss is the cross-entropy of the scores against the utterance's class; accuracy is per
utterance.  Frame labels carry the class on every frame (:mod:`snnasr.dataset`), so batching,
cutting and resuming are those of frame training; a piece cut by the length curriculum is
classified on its own, so utterance recipes set the curriculum above their longest utterance.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from snnasr.io import ConfigError


class UtterancePool(NamedTuple):
    """How frame logits become utterance scores (``utterance`` config section)."""

    pool: str = "mean"
    burn_in: int = 0

    def scores(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pool_logits(logits, mask, self.pool, self.burn_in)

    def loss_correct(
        self, logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy over the utterances of a batch and the number classified right.

        ``y`` ``[T, B]`` holds each utterance's class on its valid frames (-1 on padding).
        """
        scores = self.scores(logits, mask)
        labels = y[0]
        loss = F.cross_entropy(scores, labels, reduction="sum")
        return loss, (scores.argmax(-1) == labels).sum()


def pool_logits(logits: torch.Tensor, mask: torch.Tensor, pool: str, burn_in: int = 0) -> torch.Tensor:
    """``[T, B, C]`` frame logits -> ``[B, C]`` utterance scores over valid frames after ``burn_in``.

    ``mask`` ``[T, B]`` marks valid frames, a prefix of each column (right padding).
    """
    lengths = mask.sum(0)
    t = torch.arange(mask.shape[0], device=mask.device)[:, None]
    start = torch.minimum(torch.full_like(lengths, burn_in), lengths - 1)
    use = mask & (t >= start[None, :])
    if pool == "last":
        idx = (lengths - 1).clamp(min=0)
        return logits.gather(0, idx[None, :, None].expand(1, *logits.shape[1:]))[0]
    w = use[..., None].to(logits.dtype)
    if pool == "mean":
        return (logits * w).sum(0) / w.sum(0).clamp(min=1)
    if pool == "max":
        return logits.masked_fill(~use[..., None], float("-inf")).amax(0)
    if pool == "softmax-sum":
        return (logits.softmax(-1) * w).sum(0)
    raise ConfigError(f"utterance.pool={pool!r}: choose one of last, mean, max, softmax-sum")


def confusion_matrix(refs: list[int], hyps: list[int], n_classes: int) -> np.ndarray:
    """``[reference, hypothesis]`` counts."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(refs, dtype=np.int64), np.asarray(hyps, dtype=np.int64)), 1)
    return m


def plot_confusion(matrix: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    """The confusion matrix as a PNG (rows: reference, columns: hypothesis), counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from snnasr.report import _save

    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90, fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("hypothesis")
    ax.set_ylabel("reference")
    top = matrix.max() if matrix.size else 0
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
    return _save(fig, ax, title, path)
