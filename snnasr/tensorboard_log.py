"""TensorBoard logging of a training run (``log.tensorboard: true`` or ``train --tensorboard``).

``metrics.jsonl`` stays the record the rest of snnasr reads; this writes the same numbers, per
epoch, as TensorBoard event files under ``exp/<run>/tensorboard/`` for people to look at:
``loss/{train,dev}``, ``accuracy/{train,dev}``, ``lr``, ``frames_per_s``, ``zeros_pct/<set>/layer<n>``
(% exact zeros of each hidden layer's output), and per hidden layer two histograms from one dev
minibatch: ``spike_rate/layer<n>`` (each neuron's fraction of frames with a non-zero output) and
``spike_level/layer<n>`` (the values of the non-zero outputs: one bar for binary spikes, the
multi-bit spikes' levels otherwise).  Needs the ``tensorboard`` package (extra
``[tensorboard]``); asking for it without the package is an error before training starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from snnasr.io import ConfigError

SUBDIR = "tensorboard"


class TrainingBoard:
    """One run's TensorBoard writer; :meth:`epoch` after each epoch's metrics row."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
        except ImportError:
            raise ConfigError(
                "log.tensorboard=true: the tensorboard package is not installed; "
                "pip install 'snnasr[tensorboard]' or train without --tensorboard"
            ) from None
        self.dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.dir))

    def epoch(self, row: dict, model: torch.nn.Module, probe: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Scalars of a metrics row; histograms from ``probe`` = one dev minibatch ``(x, mask)``."""
        n, w = row["epoch"], self.writer
        w.add_scalar("loss/train", row["loss"], n)
        w.add_scalar("loss/dev", row["dev_loss"], n)
        w.add_scalar("accuracy/train", row["acc"], n)
        w.add_scalar("accuracy/dev", row["dev_acc"], n)
        w.add_scalar("lr", row["lr"], n)
        w.add_scalar("frames_per_s", row["frames_per_s"], n)
        for name, key in (("train", "zero_pct"), ("dev", "dev_zero_pct")):
            for layer, pct in enumerate(row.get(key) or []):
                w.add_scalar(f"zeros_pct/{name}/layer{layer}", pct, n)
        if probe is not None:
            for layer, (rate, levels) in enumerate(spike_statistics(model, *probe)):
                w.add_histogram(f"spike_rate/layer{layer}", rate, n)
                if levels.numel():
                    w.add_histogram(f"spike_level/layer{layer}", levels, n)
        w.flush()

    def close(self) -> None:
        self.writer.close()


@torch.no_grad()
def spike_statistics(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> list[tuple[Any, Any]]:
    """Per hidden layer: each neuron's non-zero rate over valid frames, and the non-zero values."""
    was_training = model.training
    model.eval()
    try:
        out = model(x, mask)
    finally:
        model.train(was_training)
    valid = mask.unsqueeze(-1)
    stats = []
    for h in out.layer_outputs:
        fired = (h != 0) & valid
        rate = fired.sum((0, 1)).double() / valid.sum().clamp_min(1)
        stats.append((rate.cpu(), h[fired].detach().float().cpu()))
    return stats


def open_board(exp_dir: str | os.PathLike, enabled: bool) -> TrainingBoard | None:
    """The run's board under ``exp_dir/tensorboard`` when ``enabled``, else None."""
    return TrainingBoard(Path(exp_dir) / SUBDIR) if enabled else None
