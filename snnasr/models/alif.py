"""Adaptive spiking recurrent network (Yin, Corradi & Bohté 2020/2021; models.md §6).

ALIF neuron j of a recurrent layer, per simulation step t (dt = 1), input ``x`` ``[T, B, F]``,
width H, state ``(u, b, s)`` of shape ``[B, H]``::

    α = exp(-1/τ_m),  ρ = exp(-1/τ_adp)               per neuron, learnable
    I_t = m ⊙ N(W x_t + b) + W_rec s_{t-1}             own spikes, one-step delay; N = BN or identity
    b_t = ρ b_{t-1} + (1 - ρ) s_{t-1}                  adaptation trace
    θ_t = b0 + β b_t                                    adaptive threshold
    u_t = α u_{t-1} + (1 - α) I_t - θ_t s_{t-1}         soft reset by the current threshold
    s_t = H(u_t - θ_t)                                  binary spike (strict >), multi-Gaussian surrogate

Initial state as the authors' code: ``u_0 = 0``, ``s_0 = 0``, ``b_0 = b0``.  ``W`` Xavier-uniform,
``W_rec`` orthogonal, bias 0 (their SHD script; one bias stands for their two, which only ever
appear summed).  ``m`` is the time-shared dropout mask (training only).

Constants (``model.preset``): ``speech`` = b0 1.6, β 0.184 (their TIMIT/GSC code) with the TIMIT
"multi-normal" τ init (the neurons split into 4 contiguous groups, each drawn from its own
normal: τ_m means 20, σ 1/5/5/5; τ_adp means 200/200/250/200, σ 5/50/100/50; the backward copy
of a bidirectional layer: τ_m σ 5, τ_adp means 200/200/150/200, σ 5/50/30/10); ``shd`` = b0 0.01,
β 1.8, τ_m ~ N(20, 5), τ_adp ~ N(150, 10) (their SHD code).  ``model.b0`` / ``model.beta``
override the preset.  Groups are as equal as possible, so any width works (their initialiser
required H divisible by 4).

Differences from the code, on purpose: τ_m and τ_adp are kept >= ``tau_min`` (an in-place
clamp before each forward, as the LIF decay): their trained TIMIT checkpoint holds negative
τ_adp, i.e. ρ > 1 and an unstable trace.  Both τ are trained with the weights (``learn_tau``;
their final TIMIT stage froze them, their SHD script trains them).  Frame repetition (their
TIMIT model holds each frame for 5 steps), the bidirectional pair and the leaky-integrator
readout are the shared wiring options ``steps_per_frame``, ``bidirectional``, ``readout``
(defaults here: 1 step, unidirectional, integrator).  Their backward stream's one-step shift
(an operator-precedence slip, models.md §7) is not copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from snnasr.config import SURROGATES, ScanConfig, _choice
from snnasr.io import ConfigError
from snnasr.models.bptt import ALIFKernel
from snnasr.models.gemm import linear
from snnasr.models.layers import drop_drive, make_norm
from snnasr.models.registry import Arch, LayerSpec
from snnasr.models.scan import ScanOptions, plain_cell, scan
from snnasr.models.spikes import spike
from snnasr.ops import OpSpec

Groups = tuple[tuple[float, float], ...]  # (mean, sd) per contiguous neuron group


@dataclass(frozen=True)
class Preset:
    b0: float
    beta: float
    tau_m: Groups
    tau_adp: Groups
    tau_m_backward: Groups
    tau_adp_backward: Groups


PRESETS = {
    "speech": Preset(
        1.6,
        0.184,
        ((20, 1), (20, 5), (20, 5), (20, 5)),
        ((200, 5), (200, 50), (250, 100), (200, 50)),
        ((20, 5),) * 4,
        ((200, 5), (200, 50), (150, 30), (200, 10)),
    ),
    "shd": Preset(0.01, 1.8, ((20, 5),), ((150, 10),), ((20, 5),), ((150, 10),)),
}


@dataclass
class ALIFConfig(ScanConfig):
    """``model`` section of ``--arch alif`` (see the module docstring for the constants)."""

    batchnorm: bool = False
    readout: str = "integrator"
    preset: str = "speech"
    b0: float | None = None
    beta: float | None = None
    surrogate: str = "multi-gaussian"
    surrogate_scale: float = 1.0
    learn_tau: bool = True
    tau_min: float = 1.0

    def check(self) -> None:
        super().check()
        _choice("model.preset", self.preset, tuple(PRESETS))
        _choice("model.surrogate", self.surrogate, SURROGATES)
        if self.tau_min <= 0:
            raise ConfigError(f"model.tau_min={self.tau_min}: must be positive (steps)")
        if self.surrogate_scale <= 0:
            raise ConfigError(f"model.surrogate_scale={self.surrogate_scale}: must be positive")
        if self.b0 is not None and self.b0 <= 0:
            raise ConfigError(f"model.b0={self.b0}: the baseline threshold must be positive")


class ALIFState(NamedTuple):
    membrane: Tensor  # u, [B, H]
    adaptation: Tensor  # b, [B, H]
    spikes: Tensor  # s_{t-1}, [B, H]


class ALIFParams(NamedTuple):
    alpha: Tensor  # exp(-1/τ_m), [H]
    rho: Tensor  # exp(-1/τ_adp), [H]
    weight_rec: Tensor  # W_rec, [H, H]
    b0: float
    beta: float
    surrogate: str
    width: float


def alif_step(j: Tensor, state: ALIFState, p: ALIFParams) -> tuple[Tensor, ALIFState]:
    """One step: feedforward current ``j`` = ``m ⊙ N(W x_t + b)`` ``[B, H]`` and state in,
    ``(s_t, new state)`` out; no mutation."""
    return alif_update(torch.addmm(j, state.spikes, p.weight_rec.t()), state, p)


def alif_update(i: Tensor, state: ALIFState, p: ALIFParams) -> tuple[Tensor, ALIFState]:
    """The rest of :func:`alif_step` once the input current ``I_t`` (with ``W_rec s_{t-1}``) is
    known (the event-driven path of :mod:`snnasr.sparse` computes the recurrent term itself)."""
    b = torch.addcmul(p.rho * state.adaptation, 1 - p.rho, state.spikes)
    theta = torch.mul(b, p.beta) + p.b0
    u = torch.addcmul(torch.addcmul(p.alpha * state.membrane, 1 - p.alpha, i), theta, state.spikes, value=-1)
    s = spike(u - theta, p.surrogate, p.width)
    return s, ALIFState(u, b, s)


def _alif_kernel(inputs: tuple[Tensor], state0: ALIFState, p: ALIFParams, masks: list):  # type: ignore[no-untyped-def]
    (j,) = inputs
    kernel = ALIFKernel(j.shape[0], tuple(j.shape[1:]), tuple(state0), p.b0, p.beta, p.surrogate, p.width)
    return kernel, (j, p.alpha, p.rho, p.weight_rec), lambda carry, rng: ALIFState(*carry)


# The eager step and the fused kernel (hand-derived backward, models/bptt.py) run the same ops.
ALIF = plain_cell("alif", alif_step, _alif_kernel)


def multi_normal(n: int, groups: Groups, generator: torch.Generator | None = None) -> Tensor:
    """``n`` values in contiguous, as-equal-as-possible groups, group g drawn from N(mean_g, sd_g)."""
    sizes = [len(c) for c in torch.arange(n).tensor_split(len(groups))]
    parts = [torch.randn(k, generator=generator) * sd + mean for k, (mean, sd) in zip(sizes, groups)]
    return torch.cat(parts)


class ALIFLayer(nn.Module):
    """``forward(x [T, B, F], mask [T, B]) -> spikes [T, B, H]`` (binary)."""

    def __init__(
        self,
        n_in: int,
        hidden: int,
        *,
        dropout: float,
        batchnorm: bool,
        b0: float,
        beta: float,
        tau_m: Tensor,
        tau_adp: Tensor,
        learn_tau: bool,
        tau_min: float,
        surrogate: str,
        surrogate_scale: float,
    ) -> None:
        super().__init__()
        self.n_in, self.hidden, self.p = n_in, hidden, dropout
        self.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(hidden, n_in)))
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.weight_rec = nn.Parameter(nn.init.orthogonal_(torch.empty(hidden, hidden)))
        self.norm = make_norm(hidden, batchnorm)
        self.tau_m = nn.Parameter(tau_m.clone(), requires_grad=learn_tau)
        self.tau_adp = nn.Parameter(tau_adp.clone(), requires_grad=learn_tau)
        self.b0, self.beta, self.tau_min = b0, beta, tau_min
        self.surrogate, self.surrogate_scale = surrogate, surrogate_scale
        self.scan_options = ScanOptions()

    def extra_repr(self) -> str:
        return f"b0={self.b0}, beta={self.beta}, surrogate={self.surrogate}"

    def spec(self) -> LayerSpec:
        return LayerSpec("alif", self.n_in, self.hidden, True)

    def init_state(self, x: Tensor) -> ALIFState:
        zero = x.new_zeros(x.shape[1], self.hidden)
        return ALIFState(zero, torch.full_like(zero, self.b0), zero)

    def params(self) -> ALIFParams:
        return ALIFParams(
            torch.exp(-1.0 / self.tau_m),
            torch.exp(-1.0 / self.tau_adp),
            self.weight_rec,
            self.b0,
            self.beta,
            self.surrogate,
            self.surrogate_scale,
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.forward_state(x, mask)[0]

    def forward_state(self, x: Tensor, mask: Tensor, state: ALIFState | None = None) -> tuple[Tensor, ALIFState]:
        """:meth:`forward` from ``state`` (None = the initial state), also returning the state
        after the last step: a stream runs its chunks through this, one after the other."""
        with torch.no_grad():
            self.tau_m.clamp_(min=self.tau_min)
            self.tau_adp.clamp_(min=self.tau_min)
        j = self.norm(linear(x, self.weight, fast=self.scan_options.backend != "eager") + self.bias, mask)
        j = drop_drive(j, self.hidden, self.p, self.training)
        state0 = self.init_state(x) if state is None else state
        return scan(ALIF, (j,), state0, self.params(), [None] * j.shape[0], self.scan_options)


def _layer(cfg: Any, n_in: int, index: int, backward: bool) -> ALIFLayer:
    preset = PRESETS[cfg.preset]
    tau_m = preset.tau_m_backward if backward else preset.tau_m
    tau_adp = preset.tau_adp_backward if backward else preset.tau_adp
    return ALIFLayer(
        n_in,
        cfg.hidden,
        dropout=cfg.dropout,
        batchnorm=cfg.batchnorm,
        b0=preset.b0 if cfg.b0 is None else cfg.b0,
        beta=preset.beta if cfg.beta is None else cfg.beta,
        tau_m=multi_normal(cfg.hidden, tau_m),
        tau_adp=multi_normal(cfg.hidden, tau_adp),
        learn_tau=cfg.learn_tau,
        tau_min=cfg.tau_min,
        surrogate=cfg.surrogate,
        surrogate_scale=cfg.surrogate_scale,
    )


# Per neuron and step: one input matrix, recurrent weights on the layer's own (binary) spikes
# of the previous step, 8 element-wise ops: adaptation trace 2, threshold 1, membrane 3
# (α·u, (1-α)·I, -θ·s), bias 1, firing comparison 1.
ARCHS = (
    Arch(
        "alif",
        ALIFConfig,
        _layer,
        {"alif": OpSpec(1, 8, "sparse", 1)},
        bench=(("alif", {}),),
    ),
)
