"""Length-sorted minibatches for time-first sequence models, with the seed's length curriculum.

Why this shape: the recurrent models run step by step over time, so a minibatch costs
``max_len x batch`` steps whatever its content.  Sorting pieces by length keeps padding
(wasted compute) small.  A minibatch is closed by either of two limits, each optional:
``batch_size`` sequences (the seed: 64, so early curriculum epochs with short pieces take as
many optimiser steps as the seed's) and ``batch_frames`` *padded* frames (a memory budget under
which the batch size adapts to the length: fewer, larger-in-time steps).  Pieces of one epoch are a pure function of
``(seed, epoch)``, so a run resumed from a checkpoint sees exactly the same minibatches.

Corpus frames live once in a :class:`Packed` tensor (all utterances concatenated, plus one
padding row at the end); a minibatch is only an index tensor ``idx [T, B]`` into it.  The
model input is gathered with one indexing kernel on the device: ``x = feats[idx]``.

Cutting rule (as in the seed, PyTorch-Kaldi): an utterance longer than ``1.25 * max_len`` has
``max_len``-frame pieces cut from its start until at most ``1.25 * max_len`` frames remain;
that tail is kept as one piece.  So every piece has at most ``floor(1.25 * max_len)`` frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from snnasr.config import parse_curriculum
from snnasr.io import DataError

TAIL_FACTOR = 1.25


@dataclass
class Packed:
    """A corpus as two flat tensors; row ``pad`` (the last) is the padding frame.

    feats: [N + 1, F] float; labels: [N + 1] long (padding label -1);
    starts/lengths: per utterance offsets into the rows, in dataset order.
    """

    feats: torch.Tensor
    labels: torch.Tensor
    starts: list[int]
    lengths: list[int]
    uttids: list[str]

    @property
    def pad(self) -> int:
        return self.feats.shape[0] - 1

    @property
    def num_frames(self) -> int:
        return self.feats.shape[0] - 1

    def to(self, device: torch.device | str) -> Packed:
        return Packed(self.feats.to(device), self.labels.to(device), self.starts, self.lengths, self.uttids)


def pack(items: Iterable[tuple[str, torch.Tensor, torch.Tensor]], num_classes: int) -> Packed:
    """Concatenate ``(uttid, feats [T, F], labels [T])`` items; check labels are class ids.

    Raises DataError naming the utterance when feats and labels disagree in length or a label
    is outside ``0..num_classes-1`` (a label file from another level or lang).
    """
    feats, labels, starts, lengths, uttids = [], [], [], [], []
    offset = 0
    for uttid, x, y in items:
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"utterance {uttid}: {x.shape[0]} feature frames but {y.shape[0]} labels; "
                f"re-run snnasr features for this set"
            )
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise DataError(
                f"utterance {uttid}: label ids outside 0..{num_classes - 1}; the labels do not "
                f"match data/lang (re-run snnasr features)"
            )
        feats.append(x.float())
        labels.append(y.long())
        starts.append(offset)
        lengths.append(x.shape[0])
        uttids.append(uttid)
        offset += x.shape[0]
    if not feats:
        raise DataError("no utterances to train on")
    dim = feats[0].shape[1]
    feats.append(torch.zeros(1, dim))
    labels.append(torch.full((1,), -1, dtype=torch.long))
    return Packed(torch.cat(feats), torch.cat(labels), starts, lengths, uttids)


def curriculum_max_len(spec: str, epoch: int) -> int:
    """Maximum piece length for 0-based ``epoch``; past the schedule the last length holds."""
    schedule = parse_curriculum(spec)
    for length, n in schedule:
        if epoch < n:
            return length
        epoch -= n
    return schedule[-1][0]


def cut(length: int, max_len: int) -> list[tuple[int, int]]:
    """``(start, end)`` pieces of one utterance under the cutting rule of the module docstring."""
    pieces, start = [], 0
    while length - start > TAIL_FACTOR * max_len:
        pieces.append((start, start + max_len))
        start += max_len
    if length > start:
        pieces.append((start, length))
    return pieces


def plan_batches(
    lengths: Sequence[int],
    max_len: int,
    batch_frames: int | None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> list[list[tuple[int, int, int]]]:
    """Group utterance pieces into minibatches of at most ``batch_size`` pieces and ``batch_frames`` padded frames.

    Returns batches of ``(utterance index, start, end)``.  Pieces are sorted by length (ties in
    random order when ``generator`` is given, else in utterance order) and filled greedily; a
    limit of None is no limit, and a single piece longer than ``batch_frames`` gets a batch of
    its own.  With a generator the
    batch order is shuffled too; without one (evaluation) it is shortest first.
    """
    pieces = [(u, s, e) for u, n in enumerate(lengths) for s, e in cut(n, max_len)]
    if generator is not None:
        order = torch.randperm(len(pieces), generator=generator).tolist()
        pieces = [pieces[i] for i in order]
    pieces.sort(key=lambda p: p[2] - p[1])  # stable: ties keep the (shuffled) order
    batches: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    for piece in pieces:
        # Sorted ascending, so the new piece is the longest: padded size = its length x count.
        full = batch_size is not None and len(current) >= batch_size
        if current and (
            full or (batch_frames is not None and (piece[2] - piece[1]) * (len(current) + 1) > batch_frames)
        ):
            batches.append(current)
            current = []
        current.append(piece)
    if current:
        batches.append(current)
    if generator is not None:
        order = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in order]
    return batches


@dataclass
class Batch:
    """Index minibatch: ``idx [T, B]`` rows of a :class:`Packed` (padding -> its pad row)."""

    idx: torch.Tensor
    n_frames: int

    def gather(self, data: Packed) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x [T, B, F]``, ``y [T, B]`` (-1 on padding), ``mask [T, B]`` on ``data``'s device."""
        y = data.labels[self.idx]
        return data.feats[self.idx], y, y >= 0


def index_batches(
    plan: list[list[tuple[int, int, int]]], data: Packed, device: torch.device | str = "cpu"
) -> list[Batch]:
    """Turn a plan into right-padded index tensors on ``device`` (one transfer per batch)."""
    pin = torch.device(device).type == "cuda"
    out = []
    for pieces in plan:
        starts = torch.tensor([data.starts[u] + s for u, s, _ in pieces])
        lens = torch.tensor([e - s for _, s, e in pieces])
        steps = torch.arange(int(lens.max()))[:, None]
        idx = torch.where(steps < lens[None, :], starts[None, :] + steps, data.pad)
        if pin:
            idx = idx.pin_memory()
        out.append(Batch(idx.to(device, non_blocking=True), int(lens.sum())))
    return out


def epoch_batches(
    data: Packed,
    max_len: int,
    batch_frames: int | None,
    seed: int | None,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
) -> list[Batch]:
    """Minibatches of one epoch; ``seed=None`` means evaluation order (no shuffling)."""
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    return index_batches(plan_batches(data.lengths, max_len, batch_frames, gen, batch_size), data, device)
