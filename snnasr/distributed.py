"""Data-parallel training on several processes, GPUs or machines, on PyTorch's own engine.

Launch with ``torchrun`` (``torch.distributed.run``); nothing here starts or watches a process::

    torchrun --nproc_per_node 4 -m snnasr train ...                   # 4 GPUs, one machine
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 --rdzv-id RUN -m snnasr train ...   # on each of 2 machines

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`session` joins the process group from them (``nccl`` on CUDA, ``gloo`` on CPU), and
without them is a no-op: a plain ``snnasr train`` is one process, as before.

What :func:`snnasr.train.fit` does with a group of ``world`` ranks, and why:

- The model is wrapped in ``DistributedDataParallel`` (gradients all-reduced during backward);
  each rank runs its shard of the one seeded minibatch plan
  (:class:`snnasr.batching.BucketBatchSampler`), so step ``k`` covers batches
  ``k*world .. k*world + world-1`` of the single-process plan: the *global batch*.
- The loss is divided by the global number of frames (:func:`all_sum` of the ranks' counts),
  so the averaged gradient is the single-process gradient of the global batch (same loss,
  same parameters, up to summation order), whatever the ranks' batch sizes.
- Rank 0 alone writes checkpoints, ``model.pt``, ``metrics.jsonl``, ``train.log`` and
  TensorBoard; checkpoints hold every rank's RNG state and partial sums (:func:`gather`), so all
  ranks resume from the same file, at the same minibatch, exactly.
- A stop request (SIGINT/SIGTERM on any rank) is agreed on by all ranks at the next step
  (:func:`any_rank`), so all stop together and the checkpoint is written once.
- Dev evaluation is sharded the same way and its sums are gathered and added.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from snnasr.io import ConfigError
from snnasr.runtime import resolve_device


@dataclass(frozen=True)
class Group:
    """This process's place in the process group; ``world == 1`` is a plain single process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0


SINGLE = Group()


def current() -> Group:
    """The group this process belongs to (:data:`SINGLE` when none was joined)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def launched() -> bool:
    """Whether torchrun (or an equivalent launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def session(device: str | None = None) -> Iterator[torch.device]:
    """Join torchrun's process group for the duration (no-op without torchrun); yield the device.

    On CUDA each process takes GPU ``LOCAL_RANK`` and the ``nccl`` backend; on CPU ``gloo``.
    Raises ConfigError when CUDA was asked for but a machine has fewer GPUs than processes.
    """
    dev = resolve_device(device)
    if not launched() or dist.is_initialized():
        yield dev
        return
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} GPUs; "
                f"use torchrun --nproc_per_node <= the GPU count (or --device cpu)"
            )
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        yield dev
    finally:
        dist.destroy_process_group()


def backend() -> str:
    return str(dist.get_backend()) if dist.is_initialized() else "none"


def all_sum(value: int, group: Group, device: torch.device) -> int:
    """Sum of an integer over the ranks (the value itself in one process)."""
    if not group.active:
        return value
    t = torch.tensor(value, dtype=torch.long, device=device)
    dist.all_reduce(t)
    return int(t)


def all_true(flag: torch.Tensor, group: Group) -> bool:
    """Whether a boolean (0-dim tensor) holds on every rank, so all ranks take the same branch."""
    if not group.active:
        return bool(flag)
    t = flag.to(torch.long).reshape(())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t)


def any_rank(flag: bool, group: Group, device: torch.device) -> bool:
    """Whether a flag is set on any rank (a stop request reaches one process, or all)."""
    if not group.active:
        return flag
    t = torch.tensor(int(flag), dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t)


def gather(obj: Any, group: Group) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not group.active:
        return [obj]
    out: list[Any] = [None] * group.world
    dist.all_gather_object(out, obj)
    return out


def barrier(group: Group) -> None:
    if group.active:
        dist.barrier()


def sync_buffers(model: torch.nn.Module, group: Group) -> None:
    """Rank 0's buffers (BN running stats, quantiser ranges) on every rank.

    DDP copies them at the start of each training forward, but that forward then updates each
    rank's copy from its own batch: before evaluating, all ranks take rank 0's, the ones saved.
    """
    if group.active:
        for b in model.buffers():
            dist.broadcast(b.data, 0)


def wrap(model: torch.nn.Module, group: Group, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` in a group (rank 0's weights broadcast), else ``model``."""
    if not group.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
