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
from snnasr.models.spikes import (
    QuantConfig,
    RangeState,
    StepMask,
    batch_min_max,
    quantize_at,
    spike_grad,
    update_range,
)


def _emit(
    a: Tensor,
    rng: RangeState | None,
    m: StepMask,
    cfg: QuantConfig,
    fixed: Tensor | float | None,
    out: Tensor | None,
    qd: Tensor | None,
) -> tuple[Tensor, RangeState | None, Tensor | float]:
    """Output stage of one step: range update (or the replayed R), ``s = Q(a)`` into ``out`` and,
    with ``qd``, ``q' = ∂s/∂a`` into it.  Host floats on CPU (see
    :class:`~snnasr.models.spikes.RangeState`): there the step's minimum is known, which lets Q
    and q' take cheaper, equal forms (:func:`quantize_at`)."""
    a_min = None
    if fixed is not None:
        r = fixed
    else:
        assert rng is not None
        if cfg.training and m.seen:
            mn, mx = batch_min_max(a, m)
            if isinstance(rng.lo, float):
                lo, hi = mn.item(), mx.item()
                a_min = lo if m.rows is None else None  # padded rows are not bounded by their min
                rng = update_range(rng, lo, hi, m, cfg)
            else:
                rng = update_range(rng, mn, mx, m, cfg)
        r = rng.range
    s = quantize_at(a, r, cfg.n_bits, cfg.threshold, out=out, a_min=a_min)
    if qd is not None:
        if cfg.surrogate != "ste-box":
            qd.copy_(spike_grad(a, r, cfg.n_bits, cfg.threshold, cfg.surrogate, cfg.width))
        elif a_min is not None and a_min >= -float(r):  # spike_grad's 1[|a| <= R]: here |a| <= R iff a <= R
            torch.le(a, r, out=qd)
        else:
            torch.le(a.abs(), r, out=qd)
    return s, rng, r


def _buffers(keep: bool, ref: Tensor, n: int, shape: tuple[int, ...], count: int) -> list[Any]:
    return [ref.new_empty(n, *shape) if keep else None for _ in range(count)]


def _at(buf: Tensor | None, i: Any) -> Tensor | None:
    return None if buf is None else buf[i]


def _views(buf: Tensor | None, n: int) -> Sequence[Tensor | None]:
    """``buf``'s ``n`` per-step views (one ``unbind``: cheaper than indexing every step), or Nones."""
    return [None] * n if buf is None else buf.unbind(0)


def _fixed(ranges: list | None, n: int) -> Sequence[Any]:
    return [None] * n if ranges is None else ranges


class _SpikingKernel(Kernel):
    def __init__(self, steps: int, shape: tuple[int, ...], masks: list[StepMask], cfg: QuantConfig, rng0: RangeState):
        self.steps, self.out_shape, self.masks, self.cfg, self.rng0 = steps, shape, masks, cfg, rng0

    def _out_views(self, t0: int, t1: int, ranges: list | None) -> Sequence[Tensor | None]:
        """Where steps t0..t1-1 write their spikes: ``out``, except when replaying (recomputation)."""
        return _views(self.out[t0:t1] if ranges is None else None, t1 - t0)

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
        n, masks, cfg = t1 - t0, self.masks, self.cfg
        x_t, out_t, fix_t, q_t = (
            x[t0:t1].unbind(0),
            self._out_views(t0, t1, ranges),
            _fixed(ranges, n),
            _views(q_buf, n),
        )
        rs = []
        for i in range(n):
            a = r + x_t[i]
            s, rng, rt = _emit(a, rng, masks[t0 + i], cfg, fix_t[i], out_t[i], q_t[i])
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
        drop, masks, cfg = self.drop, self.masks, self.cfg
        h, r, s = carry
        n = t1 - t0
        rs = []
        rec = None if u is None else PackedWeight(u, b)
        # Saved per step: gate = (∂h/∂g_z, ∂h/∂g_c) [n, B, 2, H], z, q'.
        gate_buf = pre.new_empty(n, b, 2, hid) if keep else None
        z_buf, q_buf = _buffers(keep, pre, n, self.out_shape, 2)
        # Per-step views made once (one unbind), not indexed inside the loop.
        pre_t, out_t, fix_t = pre[t0:t1].unbind(0), self._out_views(t0, t1, ranges), _fixed(ranges, n)
        z_t, q_t = _views(z_buf, n), _views(q_buf, n)
        gates = (None, None) if gate_buf is None else gate_buf.unbind(2)
        gz_t, gc_t = _views(gates[0], n), _views(gates[1], n)
        for i in range(n):
            h_prev = h
            if rec is None:  # v1: the gates see only the layer input (same ops as the eager step)
                z = torch.sigmoid(pre_t[i][:, :hid], out=z_t[i])
                c = torch.relu(pre_t[i][:, hid:])
                if drop is not None:
                    c = c * drop
                h = torch.addcmul((1 - z) * c, z, h)
            else:
                g = rec.addmm(pre_t[i], s)  # a new tensor: its candidate half is rectified in place
                z = torch.sigmoid(g[:, :hid], out=z_t[i])
                c = g[:, hid:].relu_()
                if drop is not None:
                    c = c.mul_(drop)
                d = h - c
                h = torch.addcmul(c, z, d)
            a = r + h
            s, rng, rt = _emit(a, rng, masks[t0 + i], cfg, fix_t[i], out_t[i], q_t[i])
            r = a - s
            rs.append(rt)
            if keep:
                # ∂h/∂g_z = (h_{t-1} - c) z (1 - z);  ∂h/∂g_c = (1 - z) m 1[c > 0], 1[c > 0] = sign(c)
                d = (h_prev - c) if rec is None else d  # v2 has h_{t-1} - c already
                torch.mul(d, torch.addcmul(z, z, z, value=-1), out=gz_t[i])
                sc = torch.sign(c)
                gc = torch.addcmul(sc, sc, z, value=-1, out=gc_t[i])
                if drop is not None:
                    gc.mul_(drop)
        saved = (gate_buf, z_buf, q_buf) if keep else None
        return (h, r, s), rng, saved, rs

    def backward(self, t0, t1, carry0, saved, adj, grads, cut, gout, ranges):  # type: ignore[no-untyped-def]
        pre, u = self.tensors
        gate, z, qd = saved
        b, hid = self.out_shape
        if "pre" not in grads:
            grads["pre"] = pre.new_empty(self.steps, b, 2 * hid)
            grads["rec"] = None if u is None else PackedWeight(u.t().contiguous(), b)
        rec, n = grads["rec"], t1 - t0
        dpre_t = grads["pre"][t0:t1].unbind(0)
        gout_t, gate_t, z_t, q_t = gout[t0:t1].unbind(0), gate.unbind(0), z.unbind(0), qd.unbind(0)
        dh, dr, dg = (self._zeros(), self._zeros(), None) if adj is None else adj
        for i in reversed(range(n)):
            ds = gout_t[i] if dg is None or rec is None else rec.addmm(gout_t[i], dg)
            da = torch.addcmul(dr, ds - dr, q_t[i])
            dht = dh + da
            dg = dpre_t[i]
            torch.mul(gate_t[i], dht.unsqueeze(1), out=dg.view(b, 2, hid))
            if cut(t0 + i):
                dh, dr, dg = self._zeros(), self._zeros(), None
            else:
                dh, dr = dht * z_t[i], da
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
        n, masks, cfg = t1 - t0, self.masks, self.cfg
        j_t, out_t, fix_t = j[t0:t1].unbind(0), self._out_views(t0, t1, ranges), _fixed(ranges, n)
        i_t, q_t = _views(i_buf, n), _views(q_buf, n)
        rs = []
        for i in range(n):
            cur = torch.addcmul(j_t[i], decay, cur, out=i_t[i])
            vp = v + cur
            s, rng, rt = _emit(vp, rng, masks[t0 + i], cfg, fix_t[i], out_t[i], q_t[i])
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
