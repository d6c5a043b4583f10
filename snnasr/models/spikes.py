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
buffers (saved in ``state_dict``) and is updated with tensor ops only, so calling Q once per
time step never forces a GPU→CPU sync.  Unlike the seed, min/max skip the rows of padded frames
(``valid``), and a step with no valid row leaves the state alone, so padding cannot move R.

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


def _gauss(x: Tensor, mu: float, sigma: float) -> Tensor:
    return torch.exp(-((x - mu) ** 2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)


def _multi_gaussian(x: Tensor, width: float) -> Tensor:
    # Yin et al. 2021: sigma 0.5, h 0.15, s 6, gamma 0.5 (integral 0.425); width stretches sigma.
    sigma, h, s, gamma = 0.5 * width, 0.15, 6.0, 0.5
    return gamma * (
        (1 + h) * _gauss(x, 0.0, sigma) - h * _gauss(x, sigma, s * sigma) - h * _gauss(x, -sigma, s * sigma)
    )


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


def quant_scale(r: Tensor, n_bits: int) -> Tensor:
    """``scale = 1/Δ = n_b (1 - 1e-4) / R``, with R = 0 replaced by n_b (official code)."""
    nb = n_levels(n_bits)
    r = torch.where(r > 0, r, torch.full_like(r, float(nb)))
    return nb * (1 - 1e-4) / r


def quantize(a: Tensor, r: Tensor, n_bits: int, threshold: int) -> Tensor:
    """Forward math of Q for a fixed range ``r`` (0-dim tensor): returns ``s = qΔ``."""
    r = torch.where(r > 0, r, torch.full_like(r, float(n_levels(n_bits))))
    scale = quant_scale(r, n_bits)
    q = torch.trunc(torch.clamp(a, -r, r) * scale)
    if n_bits == 1:
        q = q.clamp_(min=0)
    if threshold > 0:
        q = q.masked_fill_(q.abs() <= threshold, 0.0)
    return q / scale


class _Quantize(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        a: Tensor,
        r: Tensor,
        n_bits: int,
        threshold: int,  # type: ignore[override]
        surrogate: str,
        width: float,
    ) -> Tensor:
        r = torch.where(r > 0, r, torch.full_like(r, float(n_levels(n_bits))))
        inside = a.abs() <= r
        if surrogate == "ste-box":
            ctx.save_for_backward(inside)
        else:
            ctx.save_for_backward(inside, a, quant_scale(r, n_bits))
        ctx.cfg = (n_bits, threshold, surrogate, width)
        return quantize(a, r, n_bits, threshold)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        n_bits, threshold, surrogate, width = ctx.cfg
        if surrogate == "ste-box":
            (inside,) = ctx.saved_tensors
            return grad * inside, None, None, None, None, None
        inside, a, scale = ctx.saved_tensors
        g = SURROGATES[surrogate]
        lo, hi = threshold + 1, top_level(n_bits)
        u = a.abs() * scale if n_bits > 1 else a * scale
        j0 = torch.floor(u).clamp(lo, hi)
        j1 = (j0 + 1).clamp(max=hi)
        d = g(u - j0, width) + torch.where(j1 > j0, g(u - j1, width), torch.zeros_like(u))
        return grad * d * inside, None, None, None, None, None


class Quantizer(nn.Module):
    """Q with its EMA range state in buffers; see the module docstring for the maths.

    ``forward(a)`` quantises one time step ``[B, H]`` (any shape works; min/max are per tensor).
    """

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

    @torch.no_grad()
    def _track(self, a: Tensor, valid: Tensor | None) -> Tensor:
        a = a.detach()
        if valid is None:
            mn, mx = torch.aminmax(a)
            self.ema.lerp_(torch.stack((mn, mx)).to(self.ema.dtype), self.momentum)
            self.calls.add_(1)
        else:  # rows of padded frames must not move the range; an all-padding step is skipped
            rows = valid.reshape(-1, *([1] * (a.dim() - 1)))
            mn = torch.where(rows, a, float("inf")).amin()
            mx = torch.where(rows, a, float("-inf")).amax()
            seen = valid.any()
            new = self.ema.lerp(torch.stack((mn, mx)).to(self.ema.dtype), self.momentum)
            self.ema.copy_(torch.where(seen, new, self.ema))
            self.calls.add_(seen.to(self.calls.dtype))
        corr = (1 - (1 - self.momentum) ** self.calls).clamp_min(1e-12)
        r = self.ema.abs().max() / corr
        self.range.copy_(r)
        return r

    def forward(self, a: Tensor, valid: Tensor | None = None) -> Tensor:
        """Quantise one step ``a`` ``[B, ...]``; ``valid`` ``[B]`` (None = all) masks the EMA update."""
        r = self._track(a, valid) if self.training else self.range
        return _Quantize.apply(a, r.to(a.dtype), self.n_bits, self.threshold, self.surrogate, self.surrogate_scale)
