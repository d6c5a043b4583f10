"""Length-sorted minibatches for time-first sequence models, with the seed's length curriculum.

Why this shape: the recurrent models run step by step over time, so a minibatch costs
``max_len x batch`` steps whatever its content.  Sorting pieces by length keeps padding
(wasted compute) small.  A minibatch is closed by either of two limits, each optional:
``batch_size`` sequences (the seed: 64, so early curriculum epochs with short pieces take as
many optimiser steps as the seed's) and ``batch_frames`` *padded* frames (a memory budget under
which the batch size adapts to the length: fewer, larger-in-time steps).  Pieces of one epoch are a pure function of
``(seed, epoch)``, so a run resumed from a checkpoint sees exactly the same minibatches.

The corpus is never in memory: an epoch's plan is a list of batches of ``(utterance, start,
end)`` pieces computed from the lengths alone, and :func:`batch_loader` reads the pieces of
each batch through a ``torch.utils.data.DataLoader`` (worker processes, pinned memory when the
device is CUDA, ``prefetch_factor`` batches ahead), so only a few batches are in host memory.
:class:`BucketBatchSampler` hands a rank its shard of the plan under ``torchrun``.

Cutting rule (as in the seed, PyTorch-Kaldi): an utterance longer than ``1.25 * max_len`` has
``max_len``-frame pieces cut from its start until at most ``1.25 * max_len`` frames remain;
that tail is kept as one piece.  So every piece has at most ``floor(1.25 * max_len)`` frames.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from snnasr.config import parse_curriculum
from snnasr.runtime import STOP_SIGNALS

TAIL_FACTOR = 1.25
Piece = tuple[int, int, int]  # (utterance index, start frame, end frame)


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


def epoch_plan(
    lengths: Sequence[int],
    max_len: int,
    batch_frames: int | None,
    seed: int | None,
    batch_size: int | None = None,
) -> list[list[Piece]]:
    """Minibatch plan of one epoch; ``seed=None`` means evaluation order (no shuffling)."""
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    return plan_batches(lengths, max_len, batch_frames, gen, batch_size)


class BucketBatchSampler(Sampler[list[Piece]]):
    """The batches of a plan that one rank runs, from minibatch ``start`` on.

    With ``world`` ranks, rank ``r`` takes batches ``r, r + world, ...`` of the (same, seeded)
    plan: disjoint shards, deterministic per epoch, and the same number of batches on every rank
    (the last ``len(plan) % world`` batches are left out of a training epoch, as
    ``DistributedSampler(drop_last=True)`` does, so every step has a batch on every rank).
    ``drop_last=False`` keeps them (evaluation: uneven shards are fine without a collective per
    batch).  ``start`` skips minibatches already run (a resumed epoch) without reading them.
    """

    def __init__(self, plan: list[list[Piece]], rank: int = 0, world: int = 1, start: int = 0, drop_last: bool = True):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} of world size {world}")
        usable = len(plan) // world * world if drop_last else len(plan)
        self.batches = plan[rank:usable:world][start:]

    def __iter__(self) -> Iterator[list[Piece]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class Minibatch:
    """Right-padded model input: ``x [T, B, F]`` (0 on padding), ``y [T, B]`` (-1 on padding),
    ``mask [T, B]`` (True on real frames); ``utts``: dataset index of each column;
    ``n_frames``: real frames, counted on the host (no device sync)."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    utts: list[int]
    n_frames: int

    def pin_memory(self) -> Minibatch:
        """Called by the DataLoader's pinning thread (``pin_memory=True``)."""
        return Minibatch(self.x.pin_memory(), self.y.pin_memory(), self.mask.pin_memory(), self.utts, self.n_frames)

    def to(self, device: torch.device | str) -> Minibatch:
        """On ``device``; asynchronous from pinned memory, so the copy overlaps compute."""
        return Minibatch(
            self.x.to(device, non_blocking=True),
            self.y.to(device, non_blocking=True),
            self.mask.to(device, non_blocking=True),
            self.utts,
            self.n_frames,
        )


def collate(items: list[tuple[int, torch.Tensor, torch.Tensor]]) -> Minibatch:
    """``(utterance index, feats [T_i, F], labels [T_i])`` pieces -> one :class:`Minibatch`."""
    xs = [x.float() for _, x, _ in items]
    x = torch.nn.utils.rnn.pad_sequence(xs)
    y = torch.nn.utils.rnn.pad_sequence([lab.long() for _, _, lab in items], padding_value=-1)
    lens = torch.tensor([len(v) for v in xs])
    mask = torch.arange(x.shape[0])[:, None] < lens[None, :]
    return Minibatch(x, y, mask, [u for u, _, _ in items], int(lens.sum()))


class Pieces(Dataset):
    """A dataset addressed by piece: ``[(u, start, end)] -> (u, feats, labels)``.

    Uses ``dataset.piece`` (:class:`snnasr.dataset.UtteranceDataset` reads only what the piece
    needs) and else slices ``dataset[u]``, so any ``(uttid, feats, labels)`` dataset works.
    """

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __getitem__(self, piece: Piece) -> tuple[int, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        u, start, end = piece
        if hasattr(self.dataset, "piece"):
            return (u, *self.dataset.piece(u, start, end))
        _, x, y = self.dataset[u]
        return u, x[start:end], y[start:end]


def batch_loader(dataset: Any, sampler: Sampler[list[Piece]], workers: int = 0, device: torch.device | str = "cpu"):
    """A DataLoader over ``sampler``'s batches of ``dataset`` (see :class:`Pieces`).

    ``workers`` processes read and collate ahead (``prefetch_factor`` 2 each; 0 = in this
    process); memory is pinned when ``device`` is CUDA.
    """
    return DataLoader(
        Pieces(dataset),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=torch.device(device).type == "cuda",
        worker_init_fn=_ignore_stop_signals if workers else None,
        # Its own generator: starting an iterator draws a seed from it, which from the global
        # RNG would shift dropout and make a resumed epoch differ from an uninterrupted one.
        generator=torch.Generator().manual_seed(0),
    )


def _ignore_stop_signals(_worker_id: int) -> None:
    """Ctrl-C (and a scheduler's SIGTERM) reach the whole process group: the training process
    alone decides to stop (it finishes the step and checkpoints), which needs its workers still
    serving batches.  Workers still end: told so by the DataLoader, or when the parent dies."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
