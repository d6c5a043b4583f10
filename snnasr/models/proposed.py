"""Gated SNN with multi-bit spikes (Ponghiran & Roy 2021; official v2 / v1, models.md §2).

Per layer, input ``x`` ``[T, B, F]``, width H, state ``(h, r, s)`` of shape ``[B, H]``, zero at t=0::

    P^z_t, P^c_t = BN_z(W_z x_t), BN_c(W_c x_t)     one GEMM W: F → 2H (no bias) for all frames,
                                                     split in halves, each with its own masked BN
    z_t  = σ(P^z_t + U_z s_{t-1})                    forget gate     (v1: no U term)
    c_t  = ReLU(P^c_t + U_c s_{t-1})                 candidate       (v1: no U term)
    h_t  = z_t ⊙ h_{t-1} + (1 - z_t) ⊙ c_t ⊙ m       gated leaky integrator, never reset
    a'_t = r_{t-1} + h_t,  s_t = Q(a'_t),  r_t = a'_t - s_t    sigma-delta output, soft reset

``U``: H → 2H without bias or BN, orthogonal init with gain √2, applied to the layer's own
previous spikes (``recurrent: true`` = v2 = the paper's equations).  ``recurrent: false`` = v1
has no ``U`` at all, so every gate is computed for all frames before the loop and the per-step
work is element-wise only.  ``m`` is the time-shared dropout mask (training only).  Since
``c >= 0``, ``h``, ``a`` and the output spikes ``s`` ``[T, B, H]`` are non-negative.

Weights: ``2(F·H + H²)`` (v2) or ``2F·H`` (v1), against ``4(F·H + H²)`` for an LSTM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from snnasr.config import MultiBitConfig
from snnasr.models.bptt import GatedKernel
from snnasr.models.encoding import input_encoder, multibit_quantizer, sigma_delta_step
from snnasr.models.gemm import linear
from snnasr.models.layers import batch_norm_blocks, dropout_mask, kaiming_uniform_, make_norm
from snnasr.models.native import NativeGatedKernel
from snnasr.models.registry import Arch, LayerSpec
from snnasr.models.scan import Cell, ScanMasks, ScanOptions, scan, step_masks
from snnasr.models.spikes import QuantConfig, Quantizer, RangeState, StepMask
from snnasr.ops import OpSpec


@dataclass
class ProposedConfig(MultiBitConfig):
    """``model`` section of ``--arch proposed``: ``recurrent`` true = gates also see the layer's
    own previous output (the paper's equations, official v2); false = v1."""

    recurrent: bool = True


class GatedState(NamedTuple):
    trace: Tensor  # h, [B, H]
    residual: Tensor  # r = a - s, [B, H]
    spikes: Tensor  # s_{t-1}, [B, H]
    range: RangeState  # the output quantiser's EMA range


class GatedParams(NamedTuple):
    recurrent: Tensor | None  # U [2H, H] (v2) or None (v1)
    drop: Tensor | None  # time-shared dropout mask [B, H] on the candidate, or None
    quant: QuantConfig


def gated_step(x: tuple[Tensor], state: GatedState, params: GatedParams, m: StepMask) -> tuple[Tensor, GatedState]:
    """One frame from ``x = (pre,)``, ``pre`` = ``[P^z_t | P^c_t]`` ``[B, 2H]``; no mutation.

    v1 (no U) computes ``h`` as ``(1 - z) c + z h`` and v2 as ``c + z (h - c)``: the same value,
    each in the form its fused kernel evaluates fastest (v1 precomputes ``(1 - z) c`` for
    every frame), so the eager and fused backends emit identical spikes.
    """
    (pre,) = x
    if params.recurrent is not None:
        pre = torch.addmm(pre, state.spikes, params.recurrent.t())
    return gated_update(pre, state, params, m, params.recurrent is not None)


def gated_update(
    g: Tensor, state: GatedState, params: GatedParams, m: StepMask, recurrent: bool
) -> tuple[Tensor, GatedState]:
    """The rest of :func:`gated_step` once the gates' inputs ``g = P_t (+ U s_{t-1})`` are known
    (the event-driven path of :mod:`snnasr.sparse` computes ``U s_{t-1}`` itself)."""
    gz, gc = g.chunk(2, dim=1)
    z = torch.sigmoid(gz)
    c = torch.relu(gc)
    if params.drop is not None:
        c = c * params.drop
    if not recurrent:
        h = torch.addcmul((1 - z) * c, z, state.trace)
    else:
        h = torch.addcmul(c, z, state.trace - c)
    s, residual, rng = sigma_delta_step(h, state.residual, state.range, params.quant, m)
    return s, GatedState(h, residual, s, rng)


def _gated_kernel(
    inputs: tuple[Tensor], state0: GatedState, params: GatedParams, masks: list[StepMask], kind=GatedKernel
):  # type: ignore[no-untyped-def]
    (pre,) = inputs
    t, b, h2 = pre.shape
    kernel = kind(t, (b, h2 // 2), masks, params.quant, state0.range, params.drop)
    return kernel, (pre, params.recurrent), lambda carry, rng: GatedState(*carry, rng)  # type: ignore[call-arg]


GATED = Cell("proposed", gated_step, _gated_kernel, NativeGatedKernel)


class GatedSpikingLayer(nn.Module):
    """``forward(x [T, B, F], mask [T, B]) -> spikes [T, B, H]``."""

    def __init__(
        self, n_in: int, hidden: int, *, recurrent: bool, dropout: float, batchnorm: bool, quantizer: Quantizer
    ) -> None:
        super().__init__()
        self.n_in, self.hidden, self.p, self.recurrent = n_in, hidden, dropout, recurrent
        self.weight = nn.Parameter(kaiming_uniform_(torch.empty(2 * hidden, n_in)))
        self.norm_z = make_norm(hidden, batchnorm)
        self.norm_c = make_norm(hidden, batchnorm)
        if recurrent:
            self.weight_rec = nn.Parameter(torch.empty(2 * hidden, hidden))
            nn.init.orthogonal_(self.weight_rec, gain=2**0.5)
        else:
            self.register_parameter("weight_rec", None)
        self.quantizer = quantizer
        self.scan_options = ScanOptions()

    def spec(self) -> LayerSpec:
        return LayerSpec("proposed", self.n_in, self.hidden, self.recurrent)

    def init_state(self, x: Tensor) -> GatedState:
        zero = x.new_zeros(x.shape[1], self.hidden)
        return GatedState(zero, zero, zero, self.quantizer.start(x.dtype))

    def projections(self, x: Tensor, mask: Tensor) -> Tensor:
        """``[BN_z(W_z x) | BN_c(W_c x)]`` for all frames, ``[T, B, 2H]``: one GEMM, then both
        batch norms in one call (:meth:`normalise`)."""
        return self.normalise(linear(x, self.weight, fast=self.scan_options.backend != "eager"), mask)

    def normalise(self, wx: Tensor, mask: Tensor) -> Tensor:
        """:meth:`projections` from the product ``W x`` ``[T, B, 2H]`` (:func:`batch_norm_blocks`)."""
        return batch_norm_blocks(wx, mask, (self.norm_z, self.norm_c))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.forward_state(x, mask)[0]

    def forward_state(self, x: Tensor, mask: Tensor, state: GatedState | None = None) -> tuple[Tensor, GatedState]:
        """:meth:`forward` from ``state`` (None = at rest), also returning the state after the
        last step: a stream runs its chunks through this, one after the other."""
        return self.integrate(self.projections(x, mask), mask, state)

    def integrate(self, pre: Tensor, mask: Tensor, state: GatedState | None = None) -> tuple[Tensor, GatedState]:
        """The gated loop over given projections ``pre`` ``[T, B, 2H]`` (see :meth:`projections`)."""
        drop = dropout_mask(pre, self.hidden, self.p, self.training)
        steps = step_masks(ScanMasks.of(mask), self.quantizer)
        params = GatedParams(self.weight_rec, drop, self.quantizer.config())
        state0 = self.init_state(pre) if state is None else state
        out, state = scan(GATED, (pre,), state0, params, steps, self.scan_options)
        self.quantizer.commit(state.range, steps)
        return out, state


def _layer(cfg: Any, n_in: int, index: int, backward: bool) -> GatedSpikingLayer:
    return GatedSpikingLayer(
        n_in,
        cfg.hidden,
        recurrent=cfg.recurrent,
        dropout=cfg.dropout,
        batchnorm=cfg.batchnorm,
        quantizer=multibit_quantizer(cfg),
    )


def _label(cfg: Any) -> str:
    return "proposed" if cfg.recurrent else "proposed (v1)"


# Per neuron and step: forget + candidate input matrices, the same two on the own previous
# spikes (v2 only), 8 element-wise ops; under the official convention the seed code's
# recurrent term reads the input's non-zeros (see snnasr.ops).
ARCHS = (
    Arch(
        "proposed",
        ProposedConfig,
        _layer,
        {"proposed": OpSpec(2, 8, "sparse", 2, official_input_recurrent=2)},
        encoder=input_encoder,
        bench=(("proposed", {"recurrent": True}), ("proposed-v1", {"recurrent": False})),
        label=_label,
    ),
)
