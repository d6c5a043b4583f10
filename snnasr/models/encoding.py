"""Sigma-delta input encoder (seed, models.md §1): features in, multi-bit spikes out.

Per frame, with ``x_t`` of shape ``[B, F]`` and its own quantiser ``Q_x``
(``input_n_bits``, ``input_threshold``; see :mod:`snnasr.models.spikes`)::

    a_t = a_{t-1} - s_{t-1} + x_t,   s_t = Q_x(a_t),   a_0 = s_0 = 0

i.e. the residual ``r_t = a_t - s_t`` carries what has not been emitted yet, so the spike
train's running sum tracks the input's running sum.  The same step is the output stage of the
gated SNN, which encodes its synaptic trace ``h`` this way.  ``input_encoding: none`` passes
the features through unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from snnasr.models.spikes import Quantizer


def sigma_delta_step(
    x: Tensor, residual: Tensor, quantizer: Quantizer, valid: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(s_t, r_t)`` from ``x_t`` and ``r_{t-1}``: ``a = r + x``, ``s = Q(a)``, ``r = a - s``."""
    a = residual + x
    s = quantizer(a, valid)
    return s, a - s


class SigmaDeltaEncoder(nn.Module):
    """``forward(x [T, B, F], mask [T, B]) -> spikes [T, B, F]``; state starts at 0 per minibatch."""

    def __init__(self, n_bits: int, threshold: int, momentum: float) -> None:
        super().__init__()
        self.quantizer = Quantizer(n_bits, threshold, momentum)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        residual = torch.zeros_like(x[0])
        out = []
        for x_t, valid in zip(x.unbind(0), step_masks(mask)):
            s, residual = sigma_delta_step(x_t, residual, self.quantizer, valid)
            out.append(s)
        return torch.stack(out)


def step_masks(mask: Tensor) -> list[Tensor | None]:
    """Per-step ``[B]`` masks for the quantisers' range tracking; None for steps with no padding.

    None selects the quantiser's cheaper unmasked update; one host sync per sequence decides it.
    """
    full = mask.all(dim=1).tolist()
    return [None if f else m for f, m in zip(full, mask.unbind(0))]


def multibit_quantizer(cfg: Any) -> Quantizer:
    """A hidden layer's quantiser from a :class:`snnasr.config.MultiBitConfig` section."""
    return Quantizer(cfg.n_bits, cfg.threshold, cfg.ema_momentum, cfg.surrogate, cfg.surrogate_scale)


def input_encoder(cfg: Any) -> nn.Module | None:
    """The section's input encoder: sigma-delta with its own quantiser, or None (``none``)."""
    if cfg.input_encoding == "none":
        return None
    return SigmaDeltaEncoder(cfg.input_n_bits, cfg.input_threshold, cfg.ema_momentum)
