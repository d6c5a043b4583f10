"""Fused scans with hand-derived backpropagation through time for the built-in spiking cells.

Each kernel (see :class:`snnasr.models.scan.Kernel`) runs exactly the ops of its cell's eager
``step`` (same order, so the same spikes) under ``no_grad``, writing into preallocated
``[T, B, H]`` buffers only what the backward needs, and differentiates by hand:

Sigma-delta output stage, shared by all cells (``a = r_{t-1} + x_t``, ``s = Q(a)``,
``r_t = a - s``, ``q'_t = ∂s/∂a``; ``ḡ`` is the gradient arriving at ``s_t``)::

    ∂a_t = ∂r_t + (ḡ_t - ∂r_t) q'_t,    ∂r_{t-1} = ∂a_t,    ∂x_t = ∂a_t

Gated (proposed) cell, ``h = c + z(h_{t-1} - c)``, ``z = σ(g_z)``, ``c = m·ReLU(g_c)``,
``g = P_t + U s_{t-1}`` (v2; v1 has no U)::

    ∂h_t += ∂a_t;   ∂g_z = ∂h_t (h_{t-1} - c) z(1-z);   ∂g_c = ∂h_t (1-z) m 1[c > 0]
    ∂h_{t-1} = ∂h_t z;   ḡ_{t-1} += ∂g_t U   (one GEMM per step);   ∂U = Σ_t ∂g_tᵀ s_{t-1}

LIF cell, ``I = J + β I_{t-1}``, ``v' = v_{t-1} + I``, output stage on ``v'``::

    ∂I_t += ∂v'_t;   ∂J_t = ∂I_t;   ∂I_{t-1} = β ∂I_t;   ∂v_{t-1} = ∂v'_t;   ∂β = Σ_t ∂I_t I_{t-1}

The per-step factors that do not depend on the adjoint (``q'``, the gate derivatives) are
computed in the forward loop, while that step's small ``[B, H]`` tensors are still in cache,
and stored instead of the raw states; the reverse loop is left with about six small ops per
step.  (Computing them for all frames at once before the reverse loop was slower: each such op
streams a ``[T, B, H]`` tensor through memory, which on a shared machine costs more than the
per-step dispatch.)  The range R_t of each step is the one the forward used (R is a constant
of the backward, as in the seed's straight-through quantiser).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from snnasr.models.gemm import PackedWeight, mm
from snnasr.models.scan import Kernel
from snnasr.models.spikes import QuantConfig, RangeState, StepMask, quantize_at, spike_grad, track_range


def _emit(
    a: Tensor, rng: RangeState | None, m: StepMask, cfg: QuantConfig, fixed: Tensor | None, out: Tensor | None
) -> tuple[Tensor, RangeState | None, Tensor]:
    """Output stage of one step: range update (or replayed R), Q(a) into ``out``."""
    if fixed is None:
        assert rng is not None
        rng = track_range(a, rng, m, cfg)
        r = rng.range
    else:
        r = fixed
    return quantize_at(a, r, cfg.n_bits, cfg.threshold, out=out), rng, r


def _q_grad(a: Tensor, r: Tensor, cfg: QuantConfig, out: Tensor | None) -> None:
    """Store ``q' = ∂s/∂a`` of one step (kept for the backward) into ``out``."""
    if out is None:
        return
    if cfg.surrogate == "ste-box":  # spike_grad's 1[|a| <= R], converted by the copy itself
        out.copy_(a.abs() <= r)
    else:
        out.copy_(spike_grad(a, r, cfg.n_bits, cfg.threshold, cfg.surrogate, cfg.width))


def _buffers(keep: bool, ref: Tensor, n: int, shape: tuple[int, ...], count: int) -> list[Any]:
    return [ref.new_empty(n, *shape) if keep else None for _ in range(count)]


def _at(buf: Tensor | None, i: int) -> Tensor | None:
    return None if buf is None else buf[i]


class _SpikingKernel(Kernel):
    def __init__(self, steps: int, shape: tuple[int, ...], masks: list[StepMask], cfg: QuantConfig, rng0: RangeState):
        self.steps, self.out_shape, self.masks, self.cfg, self.rng0 = steps, shape, masks, cfg, rng0

    def _dst(self, t: int, ranges: Tensor | None) -> Tensor | None:
        return self.out[t] if ranges is None else None

    def _zeros(self) -> Tensor:
        return self.out.new_zeros(self.out_shape)


class SigmaDeltaKernel(_SpikingKernel):
    """Sigma-delta encoder: tensors ``(x,)``, carry ``(r,)``; saves ``q'``."""

    def init_carry(self) -> tuple:
        return (self._zeros(),)

    def run(self, t0, t1, carry, rng, ranges, keep):  # type: ignore[no-untyped-def]
        (x,) = self.tensors
        assert x is not None
        (r,) = carry
        (q_buf,) = _buffers(keep, x, t1 - t0, self.out_shape, 1)
        rs = []
        for i, t in enumerate(range(t0, t1)):
            a = r + x[t]
            s, rng, rt = _emit(
                a, rng, self.masks[t], self.cfg, None if ranges is None else ranges[i], self._dst(t, ranges)
            )
            _q_grad(a, rt, self.cfg, _at(q_buf, i))
            r = a - s
            rs.append(rt)
        return (r,), rng, q_buf, rs

    def backward(self, t0, t1, carry0, saved, adj, grads, cut, gout, ranges):  # type: ignore[no-untyped-def]
        qd = saved
        dx = grads.setdefault("x", self.out.new_empty(self.out.shape))
        dr = self._zeros() if adj is None else adj
        for i in reversed(range(t1 - t0)):
            t = t0 + i
            da = torch.addcmul(dr, gout[t] - dr, qd[i], out=dx[t])
            dr = self._zeros() if cut(t) else da
        return dr

    def finish(self, grads: dict, needs: Sequence[bool]) -> tuple[Tensor | None, ...]:
        return (grads["x"] if needs[0] else None,)


class GatedKernel(_SpikingKernel):
    """Gated SNN v2 (``weight_rec`` given) or v1: tensors ``(pre, weight_rec)``, carry ``(h, r, s)``."""

    def __init__(
        self,
        steps: int,
        shape: tuple[int, ...],
        masks: list[StepMask],
        cfg: QuantConfig,
        rng0: RangeState,
        drop: Tensor | None,
    ):
        super().__init__(steps, shape, masks, cfg, rng0)
        self.drop = drop

    def init_carry(self) -> tuple:
        return (self._zeros(), self._zeros(), self._zeros())

    def run(self, t0, t1, carry, rng, ranges, keep):  # type: ignore[no-untyped-def]
        pre, u = self.tensors
        assert pre is not None
        b, hid = self.out_shape
        drop = self.drop
        h, r, s = carry
        n = t1 - t0
        rs = []
        rec = None if u is None else PackedWeight(u, b)
        # Saved per step: gate = (∂h/∂g_z, ∂h/∂g_c) [n, B, 2, H], z, q'.
        gate_buf = pre.new_empty(n, b, 2, hid) if keep else None
        z_buf, q_buf = _buffers(keep, pre, n, self.out_shape, 2)
        for i, t in enumerate(range(t0, t1)):
            h_prev = h
            if rec is None:  # v1: the gates see only the layer input (same ops as the eager step)
                z = torch.sigmoid(pre[t, :, :hid], out=_at(z_buf, i))
                c = torch.relu(pre[t, :, hid:])
                if drop is not None:
                    c = c * drop
                h = torch.addcmul((1 - z) * c, z, h)
            else:
                g = rec.addmm(pre[t], s)
                z = torch.sigmoid(g[:, :hid], out=_at(z_buf, i))
                c = torch.relu(g[:, hid:])
                if drop is not None:
                    c = c * drop
                d = h - c
                h = torch.addcmul(c, z, d)
            a = r + h
            s, rng, rt = _emit(
                a, rng, self.masks[t], self.cfg, None if ranges is None else ranges[i], self._dst(t, ranges)
            )
            r = a - s
            rs.append(rt)
            if keep:
                _q_grad(a, rt, self.cfg, q_buf[i])
                one_minus_z = 1 - z
                d = (h_prev - c) if rec is None else d  # v2 has h_{t-1} - c already
                torch.mul(d.mul_(z), one_minus_z, out=gate_buf[i, :, 0])
                gc = torch.mul(one_minus_z, c > 0, out=gate_buf[i, :, 1])
                if drop is not None:
                    gc.mul_(drop)
        saved = (gate_buf, z_buf, q_buf) if keep else None
        return (h, r, s), rng, saved, rs

    def backward(self, t0, t1, carry0, saved, adj, grads, cut, gout, ranges):  # type: ignore[no-untyped-def]
        pre, u = self.tensors
        gate, z, qd = saved
        b, hid = self.out_shape
        dpre = grads.setdefault("pre", pre.new_empty(self.steps, b, 2 * hid))
        if u is not None:
            rec = grads.setdefault("rec", PackedWeight(u.t().contiguous(), b))
        dh, dr, dg = (self._zeros(), self._zeros(), None) if adj is None else adj
        for i in reversed(range(t1 - t0)):
            t = t0 + i
            ds = gout[t] if dg is None or u is None else rec.addmm(gout[t], dg)
            da = torch.addcmul(dr, ds - dr, qd[i])
            dht = dh + da
            torch.mul(gate[i], dht.unsqueeze(1), out=dpre[t].view(b, 2, hid))
            if cut(t):
                dh, dr, dg = self._zeros(), self._zeros(), None
            else:
                dh, dr, dg = dht * z[i], da, dpre[t]
        return dh, dr, dg

    def finish(self, grads: dict, needs: Sequence[bool]) -> tuple[Tensor | None, ...]:
        dpre = grads["pre"]
        du = None
        if needs[1]:
            s = self.out
            du = mm(dpre[1:].reshape(-1, dpre.shape[-1]).t(), s[:-1].reshape(-1, s.shape[-1]))
        return (dpre if needs[0] else None, du)


class LIFKernel(_SpikingKernel):
    """Vanilla LIF: tensors ``(j, decay)``, carry ``(I, v)``; saves ``I`` and ``q'``."""

    def init_carry(self) -> tuple:
        return (self._zeros(), self._zeros())

    def run(self, t0, t1, carry, rng, ranges, keep):  # type: ignore[no-untyped-def]
        j, decay = self.tensors
        assert j is not None and decay is not None
        cur, v = carry
        i_buf, q_buf = _buffers(keep, j, t1 - t0, self.out_shape, 2)
        rs = []
        for i, t in enumerate(range(t0, t1)):
            cur = torch.addcmul(j[t], decay, cur, out=_at(i_buf, i))
            vp = v + cur
            s, rng, rt = _emit(
                vp, rng, self.masks[t], self.cfg, None if ranges is None else ranges[i], self._dst(t, ranges)
            )
            _q_grad(vp, rt, self.cfg, _at(q_buf, i))
            v = vp - s
            rs.append(rt)
        return (cur, v), rng, ((i_buf, q_buf) if keep else None), rs

    def backward(self, t0, t1, carry0, saved, adj, grads, cut, gout, ranges):  # type: ignore[no-untyped-def]
        _, decay = self.tensors
        cur, qd = saved
        dj = grads.setdefault("j", self.out.new_empty(self.out.shape))
        dcur, dv = (self._zeros(), self._zeros()) if adj is None else adj
        for i in reversed(range(t1 - t0)):
            t = t0 + i
            dvp = torch.addcmul(dv, gout[t] - dv, qd[i])
            dit = torch.add(dcur, dvp, out=dj[t])
            if cut(t):
                dcur, dv = self._zeros(), self._zeros()
            else:
                dcur, dv = dit * decay, dvp
        # ∂β = Σ_t ∂I_t I_{t-1}: I_{t-1} is the chunk's first state, then the saved I's.
        dd = (dj[t0] * carry0[0]).sum(0) + (dj[t0 + 1 : t1] * cur[:-1]).sum(dim=(0, 1))
        grads["decay"] = dd if "decay" not in grads else grads["decay"] + dd
        return dcur, dv

    def finish(self, grads: dict, needs: Sequence[bool]) -> tuple[Tensor | None, ...]:
        return (grads["j"] if needs[0] else None, grads["decay"] if needs[1] else None)
