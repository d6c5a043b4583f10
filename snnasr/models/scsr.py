"""Skip-connected self-recurrent SNN, ScSr-SNN (Zhang & Li 2020, arXiv:2010.12691).

Per layer, input ``x`` ``[T, B, F]`` (with ``skip``: the layer below's spikes and, concatenated,
those of the layer two below, 0 = the network input), width H, state ``(u, s)`` ``[B, H]``::

    I_t = m ⊙ N(W x_t)                              feedforward (+ skip) drive, N = BN or identity
    λ   = 1 - 1/τ_m                                 τ_m per neuron, learnable, kept in [tau_min, tau_max]
    u_t = λ ⊙ u_{t-1} ⊙ (1 - s_{t-1}) + g ⊙ (I_t + w ⊙ s_{t-1})
    s_t = H(u_t - V_th)                             binary spike (strict >), named surrogate

``w`` is the self-recurrent weight: one learned scalar per neuron, fed back only to that
neuron with a one-step delay (a diagonal recurrence, so gradients through time run along
the diagonal only).  ``g`` is the input gain (membrane resistance), per neuron, learnable,
kept in [gain_min, gain_max]; ``(1 - s_{t-1})`` is a hard reset to 0 after a spike.  τ_m and
``g`` are the intrinsic parameters, trained jointly with the weights by backpropagation
through time (the paper's BIP).  The readout is the shared one (per-frame linear by default);
with ``skip`` it reads the last two layers.

What is known and what was chosen (no full text and no code of the paper exist here;
``design/scsr.md`` separates the two):

- Known (abstract): self-recurrent connections as local memory, skip connections between
  non-adjacent layers, otherwise feed-forward; intrinsic parameters trained by the
  backpropagated gradient of one global loss together with the weights.
- Chosen, the neuron: the authors' TSSL-BP discrete LIF (leak ``1 - 1/τ_m``, hard reset to 0,
  strict threshold) without its synaptic trace, so layer outputs stay binary spikes (ACs
  downstream).  BPTT with a surrogate gradient instead of TSSL-BP's spike-timing gradient:
  one training method for every snnasr architecture.
- Chosen, self recurrence: the spike ``s_{t-1}`` (not a trace) times a per-neuron scalar, as the
  authors' ST-RSBP code (``w_self`` added to the input at t when the neuron fired at t-1);
  init U(-``self_init``, ``self_init``) on every neuron; unconstrained.
- Chosen, skips: span 2 (layer l reads l-1 and l-2), through their own weight block (the
  concatenation), no delay; the readout is a layer too, so it reads the last two hidden layers.
- Chosen, intrinsic parameters: τ_m and the input gain ``g`` (the pair of the authors'
  SpiKL-IP rule), not the threshold: with a hard reset to 0, ``u`` is linear in ``g``, so a
  learnable threshold would only duplicate ``g``.  Ranges keep λ in [0, 1) and the gain
  positive; defaults τ_m ∈ [1, 64] steps (init ``tau_m_init``), g ∈ [0.1, 10] (init 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from snnasr.config import SURROGATES, ScanConfig, _choice
from snnasr.io import ConfigError
from snnasr.models.bptt import ScSrKernel
from snnasr.models.gemm import linear
from snnasr.models.layers import drop_drive, kaiming_uniform_, make_norm
from snnasr.models.registry import Arch, LayerSpec
from snnasr.models.scan import ScanOptions, plain_cell, scan
from snnasr.models.spikes import spike
from snnasr.ops import OpSpec


@dataclass
class ScSrConfig(ScanConfig):
    """``model`` section of ``--arch scsr`` (see the module docstring)."""

    skip: bool = True
    threshold: float = 1.0
    tau_m_init: float = 4.0
    tau_min: float = 1.0
    tau_max: float = 64.0
    gain_min: float = 0.1
    gain_max: float = 10.0
    self_init: float = 0.5
    surrogate: str = "fast-sigmoid"
    surrogate_scale: float = 0.5

    def check(self) -> None:
        super().check()
        _choice("model.surrogate", self.surrogate, SURROGATES)
        if not 1.0 <= self.tau_min <= self.tau_m_init <= self.tau_max:
            raise ConfigError(
                f"model.tau_min/tau_m_init/tau_max = {self.tau_min}/{self.tau_m_init}/{self.tau_max}: "
                f"need 1 <= tau_min <= tau_m_init <= tau_max (steps; keeps the leak in [0, 1))"
            )
        if not 0.0 < self.gain_min <= 1.0 <= self.gain_max:
            raise ConfigError(
                f"model.gain_min/gain_max = {self.gain_min}/{self.gain_max}: need 0 < gain_min <= 1 <= gain_max"
            )
        for name in ("threshold", "surrogate_scale"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name}={getattr(self, name)}: must be positive")
        if self.self_init < 0:
            raise ConfigError(f"model.self_init={self.self_init}: must be >= 0 (half-width of U(-s, s))")


class ScSrState(NamedTuple):
    membrane: Tensor  # u, [B, H]
    spikes: Tensor  # s_{t-1}, [B, H]


class ScSrParams(NamedTuple):
    leak: Tensor  # λ = 1 - 1/τ_m, [H]
    gain: Tensor  # g, [H]
    self_weight: Tensor  # w, [H]
    threshold: float
    surrogate: str
    width: float


def scsr_step(i: Tensor, state: ScSrState, p: ScSrParams) -> tuple[Tensor, ScSrState]:
    """One step: drive ``I_t`` ``[B, H]`` and state in, ``(s_t, new state)`` out; no mutation."""
    u = torch.addcmul(p.gain * torch.addcmul(i, p.self_weight, state.spikes), p.leak * state.membrane, 1 - state.spikes)
    s = spike(u - p.threshold, p.surrogate, p.width)
    return s, ScSrState(u, s)


def _scsr_kernel(inputs: tuple[Tensor], state0: ScSrState, p: ScSrParams, masks: list):  # type: ignore[no-untyped-def]
    (i,) = inputs
    kernel = ScSrKernel(i.shape[0], tuple(i.shape[1:]), tuple(state0), p.threshold, p.surrogate, p.width)
    return kernel, (i, p.leak, p.gain, p.self_weight), lambda carry, rng: ScSrState(*carry)


# The eager step and the fused kernel (hand-derived backward, models/bptt.py) run the same ops.
SCSR = plain_cell("scsr", scsr_step, _scsr_kernel)


class ScSrLayer(nn.Module):
    """``forward(x [T, B, F], mask [T, B]) -> spikes [T, B, H]`` (binary)."""

    def __init__(
        self,
        n_in: int,
        hidden: int,
        *,
        dropout: float,
        batchnorm: bool,
        threshold: float,
        tau_m_init: float,
        tau_range: tuple[float, float],
        gain_range: tuple[float, float],
        self_init: float,
        surrogate: str,
        surrogate_scale: float,
    ) -> None:
        super().__init__()
        self.n_in, self.hidden, self.p = n_in, hidden, dropout
        self.weight = nn.Parameter(kaiming_uniform_(torch.empty(hidden, n_in)))
        self.norm = make_norm(hidden, batchnorm)
        self.self_weight = nn.Parameter(torch.empty(hidden).uniform_(-self_init, self_init))
        self.tau_m = nn.Parameter(torch.full((hidden,), float(tau_m_init)))
        self.gain = nn.Parameter(torch.ones(hidden))
        self.threshold, self.tau_range, self.gain_range = threshold, tau_range, gain_range
        self.surrogate, self.surrogate_scale = surrogate, surrogate_scale
        self.scan_options = ScanOptions()

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, tau_range={self.tau_range}, gain_range={self.gain_range}"

    def spec(self) -> LayerSpec:
        return LayerSpec("scsr", self.n_in, self.hidden, True)

    def init_state(self, x: Tensor) -> ScSrState:
        zero = x.new_zeros(x.shape[1], self.hidden)
        return ScSrState(zero, zero)

    def params(self) -> ScSrParams:
        return ScSrParams(
            1 - 1 / self.tau_m, self.gain, self.self_weight, self.threshold, self.surrogate, self.surrogate_scale
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.forward_state(x, mask)[0]

    def forward_state(self, x: Tensor, mask: Tensor, state: ScSrState | None = None) -> tuple[Tensor, ScSrState]:
        """:meth:`forward` from ``state`` (None = at rest), also returning the state after the
        last step: a stream runs its chunks through this, one after the other."""
        wx = linear(x, self.weight, fast=self.scan_options.backend != "eager")
        i = drop_drive(self.norm(wx, mask), self.hidden, self.p, self.training)
        return self.integrate(i, mask, state)

    def integrate(self, i: Tensor, mask: Tensor, state: ScSrState | None = None) -> tuple[Tensor, ScSrState]:
        """The neurons' time loop over a given drive ``I`` ``[T, B, H]`` (:mod:`snnasr.sparse`
        computes ``I`` event by event)."""
        with torch.no_grad():  # intrinsic parameters kept in range (BIP)
            self.tau_m.clamp_(*self.tau_range)
            self.gain.clamp_(*self.gain_range)
        state0 = self.init_state(i) if state is None else state
        return scan(SCSR, (i,), state0, self.params(), [None] * i.shape[0], self.scan_options)


def _layer(cfg: Any, n_in: int, index: int, backward: bool) -> ScSrLayer:
    return ScSrLayer(
        n_in,
        cfg.hidden,
        dropout=cfg.dropout,
        batchnorm=cfg.batchnorm,
        threshold=cfg.threshold,
        tau_m_init=cfg.tau_m_init,
        tau_range=(cfg.tau_min, cfg.tau_max),
        gain_range=(cfg.gain_min, cfg.gain_max),
        self_init=cfg.self_init,
        surrogate=cfg.surrogate,
        surrogate_scale=cfg.surrogate_scale,
    )


# Per neuron and step: one input matrix over the adjacent and skip inputs together (their
# non-zeros are counted together), the self weight on the neuron's own previous spike
# (nnz_prev ACs), 5 element-wise ops: leak λ·u, reset ·(1-s), gain g·(...), add, fire.
ARCHS = (Arch("scsr", ScSrConfig, _layer, {"scsr": OpSpec(1, 5, "self", 1)}, bench=(("scsr", {}),)),)
