"""``snnasr plot``: one utterance through a trained model, as an SNN researcher first looks at it.

One PNG, every panel on the same time axis (seconds, from the set's frame shift):

1. the features the model sees (CMVN applied, context spliced), dims x frames;
2. per hidden layer, its output: a spike raster for binary spikes (black = fired), a heat map of
   the signed spike levels for multi-bit spikes (``q = s/Δ``, red > 0 > blue), or the hidden
   state for LSTM/GRU; the title gives the layer's % zeros on this utterance;
3. the posteriorgram: per-frame class posteriors (softmax of the logits) at the trained level;
4. reference and decoded segments at the scoring level (the frame argmax folded there, runs
   collapsed into segments, silence in grey), so insertions and boundary errors show at a glance.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnasr.io import DataError, atomic_write

MAX_TICK_LABELS = 40  # posteriorgram rows get symbol labels up to this many classes


def segments(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of equal labels as ``(start, end, label)`` frame ranges (end exclusive); -1 = no label."""
    if labels.size == 0:
        return []
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [labels.size]])
    return [(int(a), int(b), int(labels[a])) for a, b in zip(starts, ends)]


def _layer_image(h: np.ndarray, quantizer: Any) -> tuple[np.ndarray, str, str, tuple[float, float] | None]:
    """What to draw for a hidden layer's output ``h`` ``[T, H]``: (image [H, T], cmap, kind, vmin/vmax)."""
    if quantizer is None:
        if np.isin(h, (0.0, 1.0)).all():  # binary spikes without a quantiser (ALIF, ScSr)
            return h.T, "gray_r", "spike raster", (0.0, 1.0)
        m = float(np.abs(h).max()) or 1.0
        return h.T, "RdBu_r", "hidden state", (-m, m)
    from snnasr.models.spikes import quant_scale

    q = np.rint(h * float(quant_scale(quantizer.range.double(), quantizer.n_bits))).T
    if quantizer.n_bits == 1:
        return (q != 0).astype(float), "gray_r", "spike raster", (0.0, 1.0)
    m = float(np.abs(q).max()) or 1.0
    return q, "RdBu_r", f"{quantizer.n_bits}-bit spike levels", (-m, m)


def plot_utterance(
    exp: str | os.PathLike,
    recipe_dir: str | os.PathLike,
    set_name: str,
    utt: str,
    out: str | os.PathLike | None = None,
) -> Path:
    """Write the PNG for ``utt`` of ``data/<set_name>`` under ``exp``'s model; return its path.

    Default ``out``: ``<exp>/plots/<set>_<utt>.png``.  Raises DataError for an unknown set or
    utterance (naming a few that exist) and the usual errors of a missing model or features.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from snnasr.checkpoint import load_model
    from snnasr.dataset import UtteranceDataset
    from snnasr.evaluate import level_folds, resolve_exp
    from snnasr.features import read_feature_state
    from snnasr.lang import load_lang

    recipe_dir = Path(recipe_dir)
    exp_dir = resolve_exp(Path(exp), recipe_dir)
    data_dir = recipe_dir / "data" / set_name
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such set; give --set a prepared data dir name")
    model: Any
    model, cfg, meta = load_model(exp_dir, device="cpu")
    lang = load_lang(recipe_dir / "data" / "lang")
    level = meta["level"]
    data = UtteranceDataset(data_dir, level=level, norm_vars=cfg.data.norm_vars, context=cfg.data.context)
    if utt not in data.uttids:
        raise DataError(
            f"{data_dir}: no labelled utterance {utt!r} (e.g. {', '.join(data.uttids[:3])}); pick one from its feats.scp"
        )
    _, feats, labels = data[data.uttids.index(utt)]
    with torch.no_grad():
        res = model(feats.float()[:, None, :], torch.ones(feats.shape[0], 1, dtype=torch.bool))
    post = torch.softmax(res.logits[:, 0], -1).numpy()
    hidden = [h[:, 0].numpy() for h in res.layer_outputs]
    folds = level_folds(lang, level)
    score = lang.score if lang.score in folds else level
    fold = folds[score]
    ref = np.where(labels.numpy() >= 0, fold[np.clip(labels.numpy(), 0, None)], -1)
    hyp = fold[post.argmax(1)]
    shift = float(read_feature_state(data_dir).get("frame_shift", 0.01))
    t_end = feats.shape[0] * shift

    heights = [2.0] + [1.6] * len(hidden) + [1.8, 0.9]
    fig, axes = plt.subplots(len(heights), 1, figsize=(12, sum(heights) + 0.8), sharex=True, height_ratios=heights)
    extent = (0.0, t_end)

    def image(ax, img, cmap, vlim, ylabel):
        lo, hi = vlim if vlim is not None else (None, None)
        ax.imshow(img, aspect="auto", origin="lower", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest",
                  extent=(*extent, -0.5, img.shape[0] - 0.5))  # fmt: skip
        ax.set_ylabel(ylabel)

    image(axes[0], feats.numpy().T, "viridis", None, "feature dim")
    axes[0].set_title(f"{utt} ({set_name}), {exp_dir.name}: {cfg.model.arch}, trained on {level}")
    quantizers = [getattr(layer, "quantizer", None) for layer in model.layers]
    for n, (h, quant) in enumerate(zip(hidden, quantizers)):
        img, cmap, kind, vlim = _layer_image(h, quant)
        image(axes[1 + n], img, cmap, vlim, f"layer {n}\nneuron")
        axes[1 + n].set_title(f"layer {n}: {kind}, {100.0 * float((h == 0).mean()):.1f} % zeros", fontsize=9)
    ax_post = axes[1 + len(hidden)]
    image(ax_post, post.T, "magma", (0.0, 1.0), f"{level}\nposterior")
    symbols = lang.symbols(level)
    if len(symbols) <= MAX_TICK_LABELS:
        ax_post.set_yticks(range(len(symbols)), symbols, fontsize=6)
    _draw_segments(axes[-1], {"decoded": hyp, "reference": ref}, lang.symbols(score), lang.silence_ids(score), shift)
    axes[-1].set_xlabel("time (s)")
    axes[-1].set_xlim(*extent)

    path = Path(out) if out is not None else exp_dir / "plots" / f"{set_name}_{utt}.png"
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _draw_segments(ax: Any, rows: dict[str, np.ndarray], symbols: list[str], silence: set[int], shift: float) -> None:
    """One row of labelled boxes per frame-label sequence (silence grey, others by class colour)."""
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab20")
    for y, labels in enumerate(rows.values()):
        for a, b, lab in segments(labels):
            if lab < 0:
                continue
            colour = "0.85" if lab in silence else colours(lab % 20)
            ax.broken_barh([(a * shift, (b - a) * shift)], (y - 0.4, 0.8), facecolors=colour, edgecolor="0.3", lw=0.4)
            if (b - a) >= 3:
                ax.text((a + b) / 2 * shift, y, symbols[lab], ha="center", va="center", fontsize=7, clip_on=True)
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_ylim(-0.6, len(rows) - 0.4)
