"""Multi-bit spikes: the seed's fake-quantiser Q, and surrogate gradients chosen by name.

Quantiser (Ponghiran & Roy 2021, official ``fake_spike_quantization.py``; models.md §3).
Per call on a tensor ``a`` of any shape (one time step, ``[B, H]``), with a per-tensor,
symmetric range ``R``::

    n_b   = 2^(b-1)  for b >= 2,   n_b = 2 for b = 1
    scale = n_b (1 - 1e-4) / R     (R = 0 is replaced by n_b),   Δ = 1 / scale ≈ R / n_b
    q     = trunc(clip(a, -R, R) · scale)          toward zero, |q| <= n_b - 1
    q     = max(q, 0)                               only for b = 1
    q     = 0  where |q| <= k                       dead zone, k = ``threshold`` in level units
    s     = q Δ

How levels map to bits (``q`` is the integer a spike carries; ``s = qΔ`` its value):

- b >= 2: signed levels ``q ∈ {-(2^(b-1)-1) .. 2^(b-1)-1}``, i.e. a b-bit two's-complement
  integer without its most negative code; the dead zone removes ``1..k``, so a neuron fires
  when ``|a| >= (k+1)Δ``.  b=6, k=3 (the seed) gives ``|q| ∈ {0, 4..31}``; b=2 gives
  ``{-1, 0, 1}`` with Δ ≈ R/2.
- b = 1: one unsigned level, ``q ∈ {0, 1}``: a binary spike of amplitude Δ ≈ R/2 that fires
  when ``a >= Δ``.  It is b=2 with the negative level dropped.  (The official code uses
  n_b = 1 here, so ``|a|·scale < 1`` and every output is 0; we do not copy that.)  A dead
  zone would silence the only level, so b = 1 requires k = 0.  Negative inputs never fire,
  so b = 1 suits the non-negative hidden signals of the gated SNN, not signed features.

Range tracking (training mode only; eval uses the frozen ``R``): per call,
``M ← (1-μ)M + μ·(min(a), max(a))`` with μ = ``momentum`` (0.1), call counter n,
``M̂ = M / (1 - (1-μ)^n)`` (bias correction), ``R = max(|M̂_min|, |M̂_max|)``.  The state lives in
buffers (saved in ``state_dict``), but a time loop reads it once, threads it through the steps
as an explicit :class:`RangeState` (:func:`track_range`, tensor ops only, so no GPU→CPU sync
per step) and writes it back once; the bias corrections of all steps are computed up front.
Unlike the seed, min/max skip the rows of padded frames (``valid``), and a step with no valid
row leaves the state alone, so padding cannot move R.

Backward: with ``ste-box`` (the seed) ``∂s/∂a = 1[|a| <= R]``: straight through the staircase,
zero where the clip saturates.  Any other surrogate ``g`` treats the staircase as a sum of
unit steps at the firing levels ``j = k+1 .. top`` and differentiates each with ``g`` in level
units, keeping the two levels nearest to ``|a|/Δ``: ``∂s/∂a = Σ_j g(|a|/Δ - j)``, zero outside
the range.

Surrogates ``g(x, width)`` are pseudo-derivatives of the unit step H(x) at x = 0, each with
integral 1 over x (multi-gaussian: 0.425, as Yin et al.'s), ``width`` (``surrogate_scale``)
stretching x.  :func:`spike` is a Heaviside with a named surrogate for threshold neurons.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from snnasr.io import ConfigError

Surrogate = Callable[[Tensor, float], Tensor]


def _ste_box(x: Tensor, width: float) -> Tensor:
    return (x.abs() <= width / 2).to(x.dtype) / width


def _fast_sigmoid(x: Tensor, width: float) -> Tensor:
    return 1.0 / (2 * width * (1 + x.abs() / width) ** 2)


def _triangle(x: Tensor, width: float) -> Tensor:
    return torch.clamp(1 - x.abs() / width, min=0) / width


def _multi_gaussian(x: Tensor, width: float) -> Tensor:
    """Yin et al. 2021: ``γ[(1+h) N(x; 0, σ) - h N(x; σ, sσ) - h N(x; -σ, sσ)]`` with σ 0.5,
    h 0.15, s 6, γ 0.5 (integral 0.425); width stretches σ.  Written as three ``exp`` of
    in-place-built arguments, with the constants folded: the fused ALIF scan evaluates it every
    step, where the literal form took twice as long (measured at [8, 550])."""
    sigma, h, s, gamma = 0.5 * width, 0.15, 6.0, 0.5
    a, b = 1 / (2 * sigma**2), 1 / (2 * (s * sigma) ** 2)
    c0 = gamma * (1 + h) / (math.sqrt(2 * math.pi) * sigma)
    c1 = gamma * h / (math.sqrt(2 * math.pi) * s * sigma)
    side = torch.exp((x - sigma).square_().mul_(-b)).add_(torch.exp((x + sigma).square_().mul_(-b)))
    return torch.exp(x.square().mul_(-a)).mul_(c0).sub_(side, alpha=c1)


def _atan(x: Tensor, width: float) -> Tensor:
    return 1.0 / (math.pi * width * (1 + (x / width) ** 2))


SURROGATES: dict[str, Surrogate] = {
    "ste-box": _ste_box,
    "fast-sigmoid": _fast_sigmoid,
    "triangle": _triangle,
    "multi-gaussian": _multi_gaussian,
    "atan": _atan,
}


def get_surrogate(name: str) -> Surrogate:
    """The pseudo-derivative ``g(x, width)`` called ``name``; ConfigError listing the choices."""
    try:
        return SURROGATES[name]
    except KeyError:
        raise ConfigError(f"surrogate {name!r} is unknown; choose one of {', '.join(SURROGATES)}") from None


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, name: str, width: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.name, ctx.width = name, width
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * SURROGATES[ctx.name](x, ctx.width), None, None


def spike(x: Tensor, surrogate: str = "atan", width: float = 1.0) -> Tensor:
    """Heaviside ``H(x) = 1[x > 0]`` whose backward is the named surrogate ``g(x, width)``."""
    get_surrogate(surrogate)
    return _Spike.apply(x, surrogate, width)


def n_levels(n_bits: int) -> int:
    """``n_b``: Δ = R / n_b.  b = 1 shares b = 2's step (see the module docstring)."""
    return 2 ** (n_bits - 1) if n_bits > 1 else 2


def top_level(n_bits: int) -> int:
    """Largest integer level |q| a b-bit spike can carry."""
    return n_levels(n_bits) - 1


def effective_range(r: Tensor, n_bits: int) -> Tensor:
    """R with R = 0 replaced by n_b (official code); every other function takes this R."""
    return torch.where(r > 0, r, float(n_levels(n_bits)))


def quant_scale(r: Tensor, n_bits: int) -> Tensor:
    """``scale = 1/Δ = n_b (1 - 1e-4) / R``, with R = 0 replaced by n_b (official code)."""
    return n_levels(n_bits) * (1 - 1e-4) / effective_range(r, n_bits)


def quantize(a: Tensor, r: Tensor, n_bits: int, threshold: int) -> Tensor:
    """Forward math of Q for a fixed range ``r`` (0-dim tensor; R = 0 allowed): ``s = qΔ``."""
    return quantize_at(a, effective_range(r, n_bits), n_bits, threshold)


def quantize_at(
    a: Tensor,
    r: Tensor | float,
    n_bits: int,
    threshold: int,
    out: Tensor | None = None,
    a_min: float | None = None,
) -> Tensor:
    """Q at an effective range ``r`` (> 0; a float, a 0-dim tensor or broadcastable to ``a``),
    optionally into ``out``.

    ``trunc(clip(a, -R, R)·scale)`` is computed as ``clamp(trunc(a·scale), lo, top)``: the same
    levels (``R·scale < n_b`` truncates to the top level) in fewer kernels; the dead zone is one
    ``hardshrink`` (q is an integer, so ``|q| <= k`` is exactly what it zeroes).  ``trunc`` is
    ``floor`` where that gives the same levels: when the lowest level is 0 (b = 1: the clamp lifts
    every negative value to 0 either way) or every ``a`` is known to be >= 0 (``a_min``, the
    step's minimum, when the caller has it); on CPU ``floor`` is a vectorised kernel, ``trunc``
    is not (3.5x slower at [8, 550]).
    """
    scale = n_levels(n_bits) * (1 - 1e-4) / r
    top = top_level(n_bits)
    lo = 0 if n_bits == 1 else -top
    q = torch.mul(a, scale)
    q = q.floor_() if lo == 0 or (a_min is not None and a_min >= 0) else q.trunc_()
    q = q.clamp_(lo, top)
    if threshold > 0:
        q = torch.nn.functional.hardshrink(q, float(threshold))
    return torch.div(q, scale, out=out)


def spike_grad(a: Tensor, r: Tensor | float, n_bits: int, threshold: int, surrogate: str, width: float) -> Tensor:
    """``∂s/∂a`` of Q at ``a`` for the range ``r`` (effective, broadcastable to ``a``).

    One home for the backward maths: the per-step autograd node and the fused scans' vectorised
    backward call it, so every backend differentiates Q identically.
    """
    inside = (a.abs() <= r).to(a.dtype)
    if surrogate == "ste-box":
        return inside
    g = SURROGATES[surrogate]
    scale = n_levels(n_bits) * (1 - 1e-4) / r
    lo, hi = threshold + 1, top_level(n_bits)
    u = a.abs() * scale if n_bits > 1 else a * scale
    j0 = torch.floor(u).clamp(lo, hi)
    j1 = (j0 + 1).clamp(max=hi)
    d = g(u - j0, width) + torch.where(j1 > j0, g(u - j1, width), torch.zeros_like(u))
    return d * inside


class QuantConfig(NamedTuple):
    """A quantiser's static settings, as the time loops need them (no module, no buffers)."""

    n_bits: int
    threshold: int
    surrogate: str
    width: float
    momentum: float
    training: bool  # track the range per step (True) or use the frozen R (False)


class _Quantize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, r: Tensor | float, cfg: QuantConfig) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a)
        ctx.r, ctx.cfg = (r.detach() if isinstance(r, Tensor) else r), cfg
        return quantize_at(a, r, cfg.n_bits, cfg.threshold)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (a,) = ctx.saved_tensors
        c = ctx.cfg
        return grad * spike_grad(a, ctx.r, c.n_bits, c.threshold, c.surrogate, c.width), None, None


class RangeState(NamedTuple):
    """The EMA range state a scan threads through time (explicit, never mutated in place).

    On CPU the three values are Python floats (:meth:`Quantizer.start` decides): the per-step
    update is then a few float operations on the host instead of ~10 dispatched 0-dim tensor
    ops, and reading the step's min/max costs no device sync.  On other devices they are 0-dim
    tensors, so that the loop never syncs with the host.  Both forms follow the same equations.
    """

    lo: Tensor | float  # M_min, not bias-corrected
    hi: Tensor | float  # M_max
    range: Tensor | float  # effective R of the last step


class StepMask(NamedTuple):
    """What one step's range update needs: computed once per batch, before the time loop."""

    rows: Tensor | None  # [B] valid rows; None = every row valid (cheaper unmasked min/max)
    corr: Tensor | float  # bias correction 1 - (1-μ)^n for this step's call count n
    seen: bool  # False: no valid row, the state is left alone (padding cannot move R)
    fill: int = 0  # a valid row of this step: padded rows are replaced by it for the min/max


def batch_min_max(a: Tensor, m: StepMask) -> tuple[Tensor, Tensor]:
    """``(min a, max a)`` over the step's valid rows, as 0-dim tensors (exact: the seed's
    batch-wide range).  Padded rows are replaced by a valid row, which leaves both unchanged
    and needs one ``where`` and one fused ``aminmax`` instead of two of each."""
    if m.rows is not None:
        a = torch.where(m.rows.reshape(-1, *([1] * (a.dim() - 1))), a, a[m.fill])
    return torch.aminmax(a)


def _lerp(a: float, b: float, w: float) -> float:
    """torch.lerp's formula, on host floats."""
    return a + w * (b - a) if w < 0.5 else b - (b - a) * (1 - w)


def update_range(
    state: RangeState, mn: Tensor | float, mx: Tensor | float, m: StepMask, cfg: QuantConfig
) -> RangeState:
    """``M ← lerp(M, (mn, mx), μ)``, ``R = max|M / corr|`` (R = 0 replaced by n_b), from the step's
    min/max; floats in and out on the host path (see :class:`RangeState`)."""
    if isinstance(state.lo, float):
        lo, hi = _lerp(state.lo, float(mn), cfg.momentum), _lerp(float(state.hi), float(mx), cfg.momentum)
        r = max(abs(lo), abs(hi)) / float(m.corr)
        return RangeState(lo, hi, r if r > 0 else float(n_levels(cfg.n_bits)))
    assert isinstance(state.lo, Tensor) and isinstance(state.hi, Tensor)
    assert isinstance(mn, Tensor) and isinstance(mx, Tensor)
    lo_t = state.lo.lerp(mn.to(state.lo.dtype), cfg.momentum)
    hi_t = state.hi.lerp(mx.to(state.hi.dtype), cfg.momentum)
    r_t = effective_range(torch.maximum(lo_t.abs(), hi_t.abs()) / m.corr, cfg.n_bits)
    return RangeState(lo_t, hi_t, r_t.to(mn.dtype))


def track_range(a: Tensor, state: RangeState, m: StepMask, cfg: QuantConfig) -> RangeState:
    """One EMA update from step ``a`` ``[B, ...]``: ``M ← lerp(M, (min a, max a), μ)``, R = max|M̂|.

    The min/max over the whole batch every step is the seed's semantics and stays exact.
    """
    if not (cfg.training and m.seen):
        return state
    mn, mx = batch_min_max(a.detach(), m)
    if isinstance(state.lo, float):
        return update_range(state, mn.item(), mx.item(), m, cfg)
    return update_range(state, mn, mx, m, cfg)


def spike_step(a: Tensor, state: RangeState, m: StepMask, cfg: QuantConfig) -> tuple[Tensor, RangeState]:
    """Differentiable Q of one step (range update, then quantise): the eager reference."""
    state = track_range(a, state, m, cfg)
    return _Quantize.apply(a, state.range, cfg), state


class Quantizer(nn.Module):
    """Q's settings and EMA range state (buffers, saved in ``state_dict``); maths above.

    A time loop reads the state once (:meth:`start`), threads it through every step as a
    :class:`RangeState` and writes it back once (:meth:`commit`); ``forward(a)`` quantises a
    single tensor the same way (a one-step loop).
    """

    ema: Tensor  # buffers (registered in __init__)
    calls: Tensor
    range: Tensor

    def __init__(
        self,
        n_bits: int = 6,
        threshold: int = 3,
        momentum: float = 0.1,
        surrogate: str = "ste-box",
        surrogate_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not 1 <= n_bits <= 16:
            raise ConfigError(f"n_bits={n_bits}: must be between 1 and 16")
        if threshold < 0 or threshold >= max(top_level(n_bits), 1):
            raise ConfigError(
                f"threshold={threshold}: with n_bits={n_bits} the dead zone must be in "
                f"[0, {max(top_level(n_bits), 1) - 1}] so that some level can fire"
            )
        get_surrogate(surrogate)
        self.n_bits, self.threshold, self.momentum = n_bits, threshold, momentum
        self.surrogate, self.surrogate_scale = surrogate, surrogate_scale
        self.register_buffer("ema", torch.zeros(2))  # (M_min, M_max), not bias-corrected
        self.register_buffer("calls", torch.zeros(()))  # n, as float to stay on-device
        self.register_buffer("range", torch.zeros(()))  # R used in eval (frozen)

    def extra_repr(self) -> str:
        return f"n_bits={self.n_bits}, threshold={self.threshold}, momentum={self.momentum}, surrogate={self.surrogate}"

    def config(self) -> QuantConfig:
        return QuantConfig(
            self.n_bits, self.threshold, self.surrogate, self.surrogate_scale, self.momentum, self.training
        )

    def host(self) -> bool:
        """Whether loops keep the range state as host floats (CPU; see :class:`RangeState`)."""
        return self.calls.device.type == "cpu"

    def plan(self, seen: list[bool]) -> list[StepMask]:
        """Per-step bias corrections for a loop whose step t has a valid row iff ``seen[t]``.

        ``(1-μ)^n`` for every step in one vectorised op (not once per step); rows are set by
        the caller (:func:`snnasr.models.scan.step_masks`).
        """
        counts, n = [], 0
        for s in seen:
            n += s
            counts.append(n)
        calls = self.calls + torch.tensor(counts, dtype=self.calls.dtype, device=self.calls.device)
        corr = (1 - (1 - self.momentum) ** calls).clamp_min(1e-12)
        per_step = corr.tolist() if self.host() else corr.unbind(0)
        return [StepMask(None, c, s) for c, s in zip(per_step, seen)]

    def start(self, dtype: torch.dtype) -> RangeState:
        r = effective_range(self.range, self.n_bits)
        if self.host():
            lo, hi = self.ema.tolist()
            return RangeState(lo, hi, r.item())
        return RangeState(self.ema[0], self.ema[1], r.to(dtype))

    @torch.no_grad()
    def commit(self, state: RangeState, steps: list[StepMask]) -> None:
        """Write a training loop's final range state back (once per loop, not per step)."""
        if not self.training:
            return
        n = sum(m.seen for m in steps)
        if n:
            if isinstance(state.lo, float):
                self.ema.copy_(torch.tensor((state.lo, state.hi), dtype=self.ema.dtype))
                self.range.fill_(float(state.range))
            else:
                self.ema.copy_(torch.stack((torch.as_tensor(state.lo), torch.as_tensor(state.hi))))
                self.range.copy_(torch.as_tensor(state.range))
            self.calls.add_(n)

    def forward(self, a: Tensor, valid: Tensor | None = None) -> Tensor:
        """Quantise one step ``a`` ``[B, ...]``; ``valid`` ``[B]`` (None = all) masks the EMA update."""
        seen = valid is None or bool(valid.any())
        (m,) = self.plan([seen])
        if valid is not None and seen:
            m = m._replace(rows=valid, fill=int(valid.to(torch.uint8).argmax()))
        s, state = spike_step(a, self.start(a.dtype), m, self.config())
        self.commit(state, [m])
        return s
