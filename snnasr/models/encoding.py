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

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from snnasr.models.bptt import SigmaDeltaKernel
from snnasr.models.native import NativeSigmaDeltaKernel
from snnasr.models.scan import Cell, ScanMasks, ScanOptions, scan, step_masks
from snnasr.models.spikes import QuantConfig, Quantizer, RangeState, StepMask, spike_step


def sigma_delta_step(
    x: Tensor, residual: Tensor, rng: RangeState, cfg: QuantConfig, m: StepMask
) -> tuple[Tensor, Tensor, RangeState]:
    """``(s_t, r_t, range)`` from ``x_t`` and ``r_{t-1}``: ``a = r + x``, ``s = Q(a)``, ``r = a - s``."""
    a = residual + x
    s, rng = spike_step(a, rng, m, cfg)
    return s, a - s, rng


class SigmaDeltaState(NamedTuple):
    residual: Tensor  # r, [B, F]
    range: RangeState


def _encoder_step(
    x: tuple[Tensor], state: SigmaDeltaState, cfg: QuantConfig, m: StepMask
) -> tuple[Tensor, SigmaDeltaState]:
    s, residual, rng = sigma_delta_step(x[0], state.residual, state.range, cfg, m)
    return s, SigmaDeltaState(residual, rng)


def _encoder_kernel(
    inputs: tuple[Tensor], state0: SigmaDeltaState, cfg: QuantConfig, masks: list[StepMask], kind=SigmaDeltaKernel
):  # type: ignore[no-untyped-def]
    (x,) = inputs
    kernel = kind(x.shape[0], tuple(x.shape[1:]), masks, cfg, state0.range)
    return kernel, (x,), lambda carry, rng: SigmaDeltaState(carry[0], rng)


SIGMA_DELTA = Cell("sigma-delta", _encoder_step, _encoder_kernel, NativeSigmaDeltaKernel)


class SigmaDeltaEncoder(nn.Module):
    """``forward(x [T, B, F], mask [T, B]) -> spikes [T, B, F]``; state starts at 0 per minibatch."""

    def __init__(self, n_bits: int, threshold: int, momentum: float) -> None:
        super().__init__()
        self.quantizer = Quantizer(n_bits, threshold, momentum)
        self.scan_options = ScanOptions()

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.forward_state(x, mask)[0]

    def forward_state(
        self, x: Tensor, mask: Tensor, state: SigmaDeltaState | None = None
    ) -> tuple[Tensor, SigmaDeltaState]:
        """:meth:`forward` from ``state`` (None = residual 0), also returning the final state (streaming)."""
        steps = step_masks(ScanMasks.of(mask), self.quantizer)
        if state is None:
            state = SigmaDeltaState(torch.zeros_like(x[0]), self.quantizer.start(x.dtype))
        out, state = scan(SIGMA_DELTA, (x,), state, self.quantizer.config(), steps, self.scan_options)
        self.quantizer.commit(state.range, steps)
        return out, state


def multibit_quantizer(cfg: Any) -> Quantizer:
    """A hidden layer's quantiser from a :class:`snnasr.config.MultiBitConfig` section."""
    return Quantizer(cfg.n_bits, cfg.threshold, cfg.ema_momentum, cfg.surrogate, cfg.surrogate_scale)


def input_encoder(cfg: Any) -> nn.Module | None:
    """The section's input encoder: sigma-delta with its own quantiser, or None (``none``)."""
    if cfg.input_encoding == "none":
        return None
    return SigmaDeltaEncoder(cfg.input_n_bits, cfg.input_threshold, cfg.ema_momentum)
