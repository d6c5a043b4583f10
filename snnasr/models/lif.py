"""Vanilla spiking layer (seed's "traditional" SNN, models.md §1), multi-bit output.

Per layer, input ``x`` ``[T, B, F]``, width H, state ``(I, v)`` of shape ``[B, H]``, zero at t=0::

    J_t  = m ⊙ BN(W x_t)              all frames in one GEMM, W: F → H without bias
    I_t  = J_t + β ⊙ I_{t-1}          β ∈ [0, 1]^H per neuron, learnable (init: see below)
    v'_t = v_{t-1} + I_t              no membrane leak (as the seed's code)
    s_t  = Q(v'_t)                    multi-bit spike; fires when |v'| >= (k+1)Δ
    v_t  = v'_t - s_t                 soft reset by subtracting what was emitted (``reset: subtract``)
    v_t  = v'_t ⊙ 1[s_t = 0]          or reset to 0 where it fired (``reset: zero``, as NIR's
                                      neurons reset: with ``n_bits: 1`` and no input encoder
                                      the layer is exactly NIR Affine → LI/I → IF, see nir_export)

``m`` is the time-shared dropout mask (training only).  Output: ``s`` ``[T, B, H]``.

Initial β (``lif_decay_init``, default 0.9; ``lif_decay_init_max`` draws it per neuron from
U[init, max] instead).  The official code sets β = 1: the synaptic current is then a perfect
integrator feeding a non-leaky membrane, a double integrator.  Its output spikes track
``I_t = Σ_{u<=t} J_u`` (the soft reset makes s a sigma-delta code of I), a random walk whose
size grows with √t.  Measured on the demo (2 x 128, 8 epochs): ``|v'|`` and the tracked range
R reach 15-330 with R ≈ 10x the mean ``|v'|``, so the step Δ = R/32 and the dead zone 4Δ
swallow most of the signal; a range frozen at the end of training does not fit longer
evaluation utterances (clipping, residuals that keep growing); the gradient reaching ``J_t`` is
the undecayed sum of every later frame's.  The network spends its epochs learning β down
(1.0 → 0.84) and reaches 36 % dev frame accuracy, against 56-57 % when β starts at 0.5-0.8.
Too short a memory hurts word-length targets (FSDD: 36.6 % at β = 0.5, 56.5 % at 1.0, 58.0 % at
0.9), so the default starts every neuron at 0.9 (a memory of about 10 frames, one phone) and
lets it learn.  A spread U[0.5, 1] is worse on the demo (45.0 %): the range is one per layer,
and the slow neurons' large currents set it, so the fast ones fall into the dead zone.
``lif_decay_init: 1.0`` is the official setting (``conf/train_lif_official.yaml`` in the
recipes); README, "What we changed from the official code and why", has the tables.

β is kept in [0, 1] (the seed's clamp was a no-op): the parameter is clamped in place, outside
autograd, at the start of every forward, i.e. right before each use.  Gradients are those of
the unclamped expression, exactly as "clamp after each optimiser step"; a value an optimiser
step pushed out of range is never used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from snnasr.config import MultiBitConfig
from snnasr.io import ConfigError
from snnasr.models.bptt import LIFKernel
from snnasr.models.encoding import input_encoder, multibit_quantizer
from snnasr.models.gemm import linear
from snnasr.models.layers import drop_drive, kaiming_uniform_, make_norm
from snnasr.models.native import NativeLIFKernel
from snnasr.models.registry import Arch, LayerSpec
from snnasr.models.scan import Cell, ScanMasks, ScanOptions, scan, step_masks
from snnasr.models.spikes import QuantConfig, Quantizer, RangeState, StepMask, spike_step
from snnasr.ops import OpSpec

RESETS = ("subtract", "zero")


@dataclass
class LIFConfig(MultiBitConfig):
    """``model`` section of ``--arch lif``.

    Initial per-neuron synaptic decay β, kept in [0, 1]: lif_decay_init for every neuron
    (default 0.9), or U[lif_decay_init, lif_decay_init_max] when that is set.  The official
    code's exact setting is lif_decay_init: 1.0 (the module docstring says why it is not the
    default).  ``reset``: after a spike the membrane loses what it emitted (``subtract``, the
    seed) or is set to 0 (``zero``, NIR's reset: with ``n_bits: 1`` and ``input_encoding: none``
    the model exports to NIR exactly).
    """

    lif_decay_init: float = 0.9
    lif_decay_init_max: float | None = None
    reset: str = "subtract"

    def check(self) -> None:
        super().check()
        if self.reset not in RESETS:
            raise ConfigError(f"model.reset={self.reset!r}: choose one of {', '.join(RESETS)}")
        if not 0.0 <= self.lif_decay_init <= 1.0:
            raise ConfigError(f"model.lif_decay_init={self.lif_decay_init}: must be in [0, 1]")
        hi = self.lif_decay_init_max
        if hi is not None and not self.lif_decay_init <= hi <= 1.0:
            raise ConfigError(
                f"model.lif_decay_init_max={hi}: must be in [lif_decay_init, 1] = [{self.lif_decay_init}, 1] (or null)"
            )


class LIFState(NamedTuple):
    current: Tensor  # I, [B, H]
    membrane: Tensor  # v, [B, H]
    range: RangeState  # the quantiser's EMA range


class LIFParams(NamedTuple):
    decay: Tensor  # β [H]
    quant: QuantConfig


def _integrate(x: tuple[Tensor], state: LIFState, params: LIFParams, m: StepMask):  # type: ignore[no-untyped-def]
    i = torch.addcmul(x[0], params.decay, state.current)
    v = state.membrane + i
    s, rng = spike_step(v, state.range, m, params.quant)
    return i, v, s, rng


def lif_step(x: tuple[Tensor], state: LIFState, params: LIFParams, m: StepMask) -> tuple[Tensor, LIFState]:
    """One frame: drive ``x = (J_t,)`` ``[B, H]`` and state in, ``(s_t, new state)`` out; no mutation."""
    i, v, s, rng = _integrate(x, state, params, m)
    return s, LIFState(i, v - s, rng)


def lif_reset_zero_step(x: tuple[Tensor], state: LIFState, params: LIFParams, m: StepMask) -> tuple[Tensor, LIFState]:
    """:func:`lif_step` with ``reset: zero``: the membrane of a neuron that fired is set to 0."""
    i, v, s, rng = _integrate(x, state, params, m)
    return s, LIFState(i, torch.where(s != 0, torch.zeros_like(v), v), rng)


def _lif_kernel(inputs: tuple[Tensor], state0: LIFState, params: LIFParams, masks: list[StepMask], kind=LIFKernel):  # type: ignore[no-untyped-def]
    (j,) = inputs
    kernel = kind(j.shape[0], tuple(j.shape[1:]), masks, params.quant, state0.range)
    return kernel, (j, params.decay), lambda carry, rng: LIFState(*carry, rng)  # type: ignore[call-arg]


LIF = Cell("lif", lif_step, _lif_kernel, NativeLIFKernel)
# No fused kernel: its hand-derived backward is for reset by subtraction; scan runs this eagerly.
LIF_RESET_ZERO = Cell("lif-reset-zero", lif_reset_zero_step)


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
        decay_init_max: float | None = None,
        reset: str = "subtract",
    ) -> None:
        super().__init__()
        self.n_in, self.hidden, self.p = n_in, hidden, dropout
        self.reset = reset
        self.weight = nn.Parameter(kaiming_uniform_(torch.empty(hidden, n_in)))
        self.norm = make_norm(hidden, batchnorm)
        decay = torch.full((hidden,), float(decay_init))
        if decay_init_max is not None:  # per-neuron spread of memories, U[decay_init, decay_init_max]
            decay.uniform_(float(decay_init), float(decay_init_max))
        self.decay = nn.Parameter(decay)
        self.quantizer = quantizer
        self.scan_options = ScanOptions()

    def spec(self) -> LayerSpec:
        return LayerSpec("lif", self.n_in, self.hidden, False)

    def init_state(self, x: Tensor) -> LIFState:
        zero = x.new_zeros(x.shape[1], self.hidden)
        return LIFState(zero, zero, self.quantizer.start(x.dtype))

    def drive(self, x: Tensor, mask: Tensor) -> Tensor:
        """``J = m ⊙ BN(W x)`` for all frames ``[T, B, H]``."""
        j = self.norm(linear(x, self.weight, fast=self.scan_options.backend != "eager"), mask)
        return drop_drive(j, self.hidden, self.p, self.training)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.forward_state(x, mask)[0]

    def forward_state(self, x: Tensor, mask: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        """:meth:`forward` from ``state`` (None = at rest), also returning the state after the
        last step: a stream runs its chunks through this, one after the other."""
        return self.integrate(self.drive(x, mask), mask, state)

    def integrate(self, j: Tensor, mask: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        """The neurons' time loop over a given drive ``J`` ``[T, B, H]`` (:mod:`snnasr.sparse`
        computes ``J`` event by event)."""
        with torch.no_grad():
            self.decay.clamp_(0.0, 1.0)
        steps = step_masks(ScanMasks.of(mask), self.quantizer)
        params = LIFParams(self.decay, self.quantizer.config())
        cell = LIF_RESET_ZERO if self.reset == "zero" else LIF
        state0 = self.init_state(j) if state is None else state
        out, state = scan(cell, (j,), state0, params, steps, self.scan_options)
        self.quantizer.commit(state.range, steps)
        return out, state


def _layer(cfg: Any, n_in: int, index: int, backward: bool) -> LIFLayer:
    return LIFLayer(
        n_in,
        cfg.hidden,
        dropout=cfg.dropout,
        batchnorm=cfg.batchnorm,
        decay_init=cfg.lif_decay_init,
        decay_init_max=cfg.lif_decay_init_max,
        quantizer=multibit_quantizer(cfg),
        reset=cfg.reset,
    )


# Per neuron and step: one input matrix, 6 element-wise ops (the seed's counter).
ARCHS = (Arch("lif", LIFConfig, _layer, {"lif": OpSpec(1, 6)}, encoder=input_encoder, bench=(("lif", {}),)),)
