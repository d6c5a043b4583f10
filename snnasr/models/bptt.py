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

ALIF and ScSr (binary threshold neurons, ``s = H(x)`` with a named surrogate ``g``): see
:class:`ALIFKernel` and :class:`ScSrKernel`; they store ``g(x_t)`` per step as the quantised
cells store ``q'``, and sum their per-neuron parameters' gradients over all frames at once.

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
    SURROGATES,
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

    def grad_buffers(self, grads: dict) -> None:
        """Made by the first reverse chunk (the last in time): ``∂pre`` for all frames and, for v2,
        ``Uᵀ`` packed for the per-step ``ḡ U`` products (shared with the native kernel)."""
        if "pre" not in grads:
            pre, u = self.tensors
            assert pre is not None
            b, hid = self.out_shape
            grads["pre"] = pre.new_empty(self.steps, b, 2 * hid)
            grads["rec"] = None if u is None else PackedWeight(u.t().contiguous(), b)

    def backward(self, t0, t1, carry0, saved, adj, grads, cut, gout, ranges):  # type: ignore[no-untyped-def]
        pre, u = self.tensors
        gate, z, qd = saved
        b, hid = self.out_shape
        self.grad_buffers(grads)
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
        self.accumulate_decay_grad(grads, t0, t1, carry0, cur)
        return dcur, dv

    @staticmethod
    def accumulate_decay_grad(grads: dict, t0: int, t1: int, carry0: tuple, cur: Tensor) -> None:
        """Add this chunk's ``∂β = Σ_t ∂I_t I_{t-1}`` to ``grads["decay"]`` once ``grads["j"]`` holds
        its ``∂I``: ``I_{t-1}`` is the chunk's first state, then the saved I's (shared with the
        native kernel)."""
        dj = grads["j"]
        dd = (dj[t0] * carry0[0]).sum(0) + (dj[t0 + 1 : t1] * cur[:-1]).sum(dim=(0, 1))
        grads["decay"] = dd if "decay" not in grads else grads["decay"] + dd

    def finish(self, grads: dict, needs: Sequence[bool]) -> tuple[Tensor | None, ...]:
        return (grads["j"] if needs[0] else None, grads["decay"] if needs[1] else None)


class _BinaryKernel(Kernel):
    """Base of the threshold-neuron cells (binary spikes ``H(x)``, no range quantiser): starts
    from the layer's own initial state, stores ``∂s/∂x = g(x)`` per step (the named surrogate)."""

    def __init__(self, steps: int, shape: tuple[int, ...], state0: tuple, surrogate: str, width: float):
        self.steps, self.out_shape, self.rng0 = steps, shape, None
        self.state0, self.surrogate, self.width = state0, SURROGATES[surrogate], width

    def init_carry(self) -> tuple:
        return self.state0

    def carry_of(self, state0: Any) -> tuple:
        return tuple(state0)  # no range state

    def _zeros(self) -> Tensor:
        return self.out.new_zeros(self.out_shape)

    def _fire(self, x: Tensor, dst: Tensor | None) -> Tensor:
        """``s = 1[x > 0]`` (as :func:`~snnasr.models.spikes.spike`), into ``out`` unless replaying."""
        return torch.gt(x, 0, out=dst) if dst is not None else (x > 0).to(x.dtype)

    def _previous(self, t0: int, t1: int, first: Tensor) -> Tensor:
        """``s_{t-1}`` for t in t0..t1-1: the chunk's first state, then the emitted spikes."""
        return torch.cat((first.unsqueeze(0), self.out[t0 : t1 - 1]))


class ALIFKernel(_BinaryKernel):
    """ALIF (Yin et al.): tensors ``(j, alpha, rho, w_rec)``, carry ``(u, b, s)``; saves ``i``,
    ``b``, ``θ``, ``u`` and ``g(u - θ)``.

    Forward as :func:`snnasr.models.alif.alif_step` (same ops, same spikes); backward, with
    ``x = u - θ``, ``ḡ`` the gradient at ``s_t`` and the adjoints ``δ`` of the next step::

        ∂s_t = ḡ_t + δs;  ∂x = ∂s_t g(x);  ∂u_t = δu + ∂x;  ∂b_t = δb - β (∂x + ∂u_t s_{t-1})
        ∂j_t = (1-α) ∂u_t;  δu = α ∂u_t;  δb = ρ ∂b_t
        δs = W_recᵀ ∂j_t + (1-ρ) ∂b_t - θ_t ∂u_t          (one GEMM per step)
        ∂α = Σ ∂u_t (u_{t-1} - i_t);  ∂ρ = Σ ∂b_t (b_{t-1} - s_{t-1});  ∂W_rec = Σ ∂j_tᵀ s_{t-1}
    """

    def __init__(
        self, steps: int, shape: tuple[int, ...], state0: tuple, b0: float, beta: float, surrogate: str, width: float
    ):
        super().__init__(steps, shape, state0, surrogate, width)
        self.b0, self.beta = b0, beta

    def run(self, t0, t1, carry, rng, ranges, keep):  # type: ignore[no-untyped-def]
        j, alpha, rho, w = self.tensors
        assert j is not None and alpha is not None and rho is not None and w is not None
        u, b, s = carry
        n, b0, beta, g = t1 - t0, self.b0, self.beta, self.surrogate
        oma, omr = 1 - alpha, 1 - rho
        rec = PackedWeight(w, self.out_shape[0])
        bufs = _buffers(keep, j, n, self.out_shape, 4)  # i, b, θ, u
        i_t, b_t, th_t, u_t = (_views(x, n) for x in bufs)
        j_t, out_t, sig = j[t0:t1].unbind(0), _views(self.out[t0:t1] if ranges is None else None, n), []
        for k in range(n):
            i = rec.addmm(j_t[k], s)
            if keep:
                i_t[k].copy_(i)
            b = torch.addcmul(rho * b, omr, s, out=b_t[k])
            th = torch.mul(b, beta, out=th_t[k]).add_(b0)
            u = torch.addcmul(torch.addcmul(alpha * u, oma, i), th, s, value=-1, out=u_t[k])
            x = u - th
            s = self._fire(x, out_t[k])
            if keep:
                sig.append(g(x, self.width))
        saved = (*bufs, sig) if keep else None
        return (u, b, s), None, saved, [0.0] * n

    def backward(self, t0, t1, carry0, saved, adj, grads, cut, gout, ranges):  # type: ignore[no-untyped-def]
        _, alpha, rho, w = self.tensors
        i_buf, b_buf, th_buf, u_buf, sig = saved
        n, beta = t1 - t0, self.beta
        if "j" not in grads:
            for name in ("j", "du", "db"):
                grads[name] = self.out.new_empty(self.out.shape)
            grads["rec"] = PackedWeight(w.t().contiguous(), self.out_shape[0])
        rec, oma, omr = grads["rec"], 1 - alpha, 1 - rho
        dj_t, du_t, db_t = (grads[k][t0:t1].unbind(0) for k in ("j", "du", "db"))
        gout_t, th_t = gout[t0:t1].unbind(0), th_buf.unbind(0)
        s_prev = self._previous(t0, t1, carry0[2])
        sp_t = s_prev.unbind(0)
        zero = self._zeros()
        du_n, db_n, ds_n = (zero, zero, zero) if adj is None else adj
        for k in reversed(range(n)):
            dx = (gout_t[k] + ds_n).mul_(sig[k])
            du = torch.add(du_n, dx, out=du_t[k])
            db = torch.add(db_n, torch.addcmul(dx, du, sp_t[k]), alpha=-beta, out=db_t[k])
            dj = torch.mul(oma, du, out=dj_t[k])
            if cut(t0 + k):
                du_n, db_n, ds_n = zero, zero, zero
            else:
                du_n, db_n = alpha * du, rho * db
                ds_n = rec.addmm(torch.addcmul(omr * db, th_t[k], du, value=-1), dj)
        du, db = grads["du"][t0:t1], grads["db"][t0:t1]
        u_prev = torch.cat((carry0[0].unsqueeze(0), u_buf[:-1]))
        b_prev = torch.cat((carry0[1].unsqueeze(0), b_buf[:-1]))
        _accumulate(grads, "alpha", (du * (u_prev - i_buf)).sum(dim=(0, 1)))
        _accumulate(grads, "rho", (db * (b_prev - s_prev)).sum(dim=(0, 1)))
        _accumulate(grads, "w", mm(grads["j"][t0:t1].reshape(-1, w.shape[0]).t(), s_prev.reshape(-1, w.shape[1])))
        return du_n, db_n, ds_n

    def finish(self, grads: dict, needs: Sequence[bool]) -> tuple[Tensor | None, ...]:
        return tuple(grads[k] if need else None for k, need in zip(("j", "alpha", "rho", "w"), needs))


class ScSrKernel(_BinaryKernel):
    """ScSr (Zhang & Li): tensors ``(i, leak, gain, self_weight)``, carry ``(u, s)``; saves ``u``
    and ``g(u - V)``.

    Forward as :func:`snnasr.models.scsr.scsr_step`; backward (λ leak, γ gain, w self weight,
    ``κ_t = λ (1 - s_{t-1})``)::

        ∂u_t = δu + (ḡ_t + δs) g(u_t - V);  ∂I_t = γ ∂u_t
        δu = κ_t ∂u_t;  δs = ∂u_t (γ w - λ u_{t-1})        (diagonal: no GEMM)
        ∂λ = Σ ∂u_t u_{t-1} (1 - s_{t-1});  ∂γ = Σ ∂u_t (I_t + w s_{t-1});  ∂w = Σ ∂u_t γ s_{t-1}
    """

    def __init__(
        self, steps: int, shape: tuple[int, ...], state0: tuple, threshold: float, surrogate: str, width: float
    ):
        super().__init__(steps, shape, state0, surrogate, width)
        self.threshold = threshold

    def run(self, t0, t1, carry, rng, ranges, keep):  # type: ignore[no-untyped-def]
        i_in, leak, gain, w = self.tensors
        assert i_in is not None and leak is not None and gain is not None and w is not None
        u, s = carry
        n, g, v_th = t1 - t0, self.surrogate, self.threshold
        (u_buf,) = _buffers(keep, i_in, n, self.out_shape, 1)
        u_t, i_t = _views(u_buf, n), i_in[t0:t1].unbind(0)
        out_t, sig = _views(self.out[t0:t1] if ranges is None else None, n), []
        for k in range(n):
            u = torch.addcmul(gain * torch.addcmul(i_t[k], w, s), leak * u, 1 - s, out=u_t[k])
            x = u - v_th
            s = self._fire(x, out_t[k])
            if keep:
                sig.append(g(x, self.width))
        return (u, s), None, ((u_buf, sig) if keep else None), [0.0] * n

    def backward(self, t0, t1, carry0, saved, adj, grads, cut, gout, ranges):  # type: ignore[no-untyped-def]
        i_in, leak, gain, w = self.tensors
        u_buf, sig = saved
        n = t1 - t0
        if "i" not in grads:
            grads["i"], grads["du"] = self.out.new_empty(self.out.shape), self.out.new_empty(self.out.shape)
        di_t, du_t, gout_t = grads["i"][t0:t1].unbind(0), grads["du"][t0:t1].unbind(0), gout[t0:t1].unbind(0)
        s_prev = self._previous(t0, t1, carry0[1])
        u_prev = torch.cat((carry0[0].unsqueeze(0), u_buf[:-1]))
        sp_t, up_t = s_prev.unbind(0), u_prev.unbind(0)
        gw, zero = gain * w, self._zeros()
        du_n, ds_n = (zero, zero) if adj is None else adj
        for k in reversed(range(n)):
            du = torch.addcmul(du_n, gout_t[k] + ds_n, sig[k], out=du_t[k])
            torch.mul(gain, du, out=di_t[k])
            if cut(t0 + k):
                du_n, ds_n = zero, zero
            else:
                du_n = du * torch.addcmul(leak, leak, sp_t[k], value=-1)
                ds_n = du * torch.addcmul(gw, leak, up_t[k], value=-1)
        du = grads["du"][t0:t1]
        _accumulate(grads, "leak", (du * u_prev * (1 - s_prev)).sum(dim=(0, 1)))
        _accumulate(grads, "gain", (du * torch.addcmul(i_in[t0:t1], w, s_prev)).sum(dim=(0, 1)))
        _accumulate(grads, "w", (du * s_prev).sum(dim=(0, 1)) * gain)
        return du_n, ds_n

    def finish(self, grads: dict, needs: Sequence[bool]) -> tuple[Tensor | None, ...]:
        return tuple(grads[k] if need else None for k, need in zip(("i", "leak", "gain", "w"), needs))


def _accumulate(grads: dict, name: str, value: Tensor) -> None:
    """Add one chunk's parameter gradient (chunks run in reverse, each adds its share)."""
    grads[name] = value if name not in grads else grads[name] + value
