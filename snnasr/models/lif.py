"""Vanilla spiking layer (seed's "traditional" SNN, models.md §1), multi-bit output.

Per layer, input ``x`` ``[T, B, F]``, width H, state ``(I, v)`` of shape ``[B, H]``, zero at t=0::

    J_t  = m ⊙ BN(W x_t)              all frames in one GEMM, W: F → H without bias
    I_t  = J_t + β ⊙ I_{t-1}          β ∈ [0, 1]^H per neuron, learnable, init ``lif_decay_init``
    v'_t = v_{t-1} + I_t              no membrane leak (as the seed's code)
    s_t  = Q(v'_t)                    multi-bit spike; fires when |v'| >= (k+1)Δ
    v_t  = v'_t - s_t                 soft reset by subtracting what was emitted (``reset: subtract``)
    v_t  = v'_t ⊙ 1[s_t = 0]          or reset to 0 where it fired (``reset: zero``, as NIR's
                                      neurons reset: with ``n_bits: 1`` and no input encoder
                                      the layer is exactly NIR Affine → LI/I → IF, see nir_export)

``m`` is the time-shared dropout mask (training only).  Output: ``s`` ``[T, B, H]``.

β is kept in [0, 1] (the seed's clamp was a no-op): the parameter is clamped in place, outside
autograd, at the start of every forward, i.e. right before each use.  Gradients are those of
the unclamped expression, exactly as "clamp after each optimiser step"; a value an optimiser
step pushed out of range is never used.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnasr.models.encoding import step_masks
from snnasr.models.layers import dropout_mask, kaiming_uniform_, make_norm
from snnasr.models.spikes import Quantizer


class LIFState(NamedTuple):
    current: Tensor  # I, [B, H]
    membrane: Tensor  # v, [B, H]


def lif_step(
    j: Tensor,
    state: LIFState,
    decay: Tensor,
    quantizer: Quantizer,
    valid: Tensor | None = None,
    reset_to_zero: bool = False,
) -> tuple[Tensor, LIFState]:
    """One frame: drive ``J_t`` ``[B, H]`` and state in, ``(s_t, new state)`` out; no mutation."""
    i = torch.addcmul(j, decay, state.current)
    v = state.membrane + i
    s = quantizer(v, valid)
    return s, LIFState(i, torch.where(s != 0, torch.zeros_like(v), v) if reset_to_zero else v - s)


class LIFLayer(nn.Module):
    """``forward(x [T, B, F], mask [T, B]) -> spikes [T, B, H]``."""

    def __init__(
        self,
        n_in: int,
        hidden: int,
        *,
        dropout: float,
        batchnorm: bool,
        decay_init: float,
        quantizer: Quantizer,
        reset: str = "subtract",
    ) -> None:
        super().__init__()
        self.n_in, self.hidden, self.p = n_in, hidden, dropout
        self.reset = reset
        self.weight = nn.Parameter(kaiming_uniform_(torch.empty(hidden, n_in)))
        self.norm = make_norm(hidden, batchnorm)
        self.decay = nn.Parameter(torch.full((hidden,), float(decay_init)))
        self.quantizer = quantizer

    def init_state(self, x: Tensor) -> LIFState:
        zero = x.new_zeros(x.shape[1], self.hidden)
        return LIFState(zero, zero)

    def drive(self, x: Tensor, mask: Tensor) -> Tensor:
        """``J = m ⊙ BN(W x)`` for all frames ``[T, B, H]``."""
        j = self.norm(F.linear(x, self.weight), mask)
        m = dropout_mask(x, self.hidden, self.p, self.training)
        return j if m is None else j * m

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        with torch.no_grad():
            self.decay.clamp_(0.0, 1.0)
        state = self.init_state(x)
        out = []
        for j, valid in zip(self.drive(x, mask).unbind(0), step_masks(mask)):
            s, state = lif_step(j, state, self.decay, self.quantizer, valid, self.reset == "zero")
            out.append(s)
        return torch.stack(out)
