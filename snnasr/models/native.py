"""The ``native`` scan backend: the fused kernels with each step's element-wise work in one C call.

Why: after :mod:`snnasr.models.bptt` cut the per-step graph, a fused gated v2 step was still
~20 small torch ops forward and ~6 backward on ``[B, H]`` tensors; at B 8 their dispatch (a few
µs each) cost more than their arithmetic and about as much as the step's GEMMs.  Here every
step is the GEMM (``torch.addmm`` / oneDNN, kept) plus ONE call into ``native_scan.c`` doing
the rest of that step: gates, leaky integration, the sigma-delta stage, the batch-wide min/max
and EMA range update, quantisation, and storing ``q'`` and the gate derivatives for the
backward; the backward is likewise one GEMM and one call per step.  Cells without a recurrent
product (gated v1, LIF, the sigma-delta encoder) run their whole loop, forward or backward, in
one call.

How the implementation was chosen (measured on this project's 2-core AMD EPYC, one thread,
float64 [8, 550]): a call through ``ctypes`` with ten integer arguments costs 0.67 µs, a
``numba`` ``@njit`` dispatch with eight arrays 0.39 µs (4.4 µs if each tensor is converted
with ``.numpy()`` per call); but numba's ``exp`` is scalar (14.6 µs for the step's sigmoid),
while gcc with glibc's vector maths (libmvec) gives 2.65 µs (torch's Sleef sigmoid: 3.05 µs).
The sigmoid dominates the step's element-wise arithmetic, so C through ctypes wins, and needs no
new dependency (:mod:`snnasr.models.compiled` builds it at first use).  Running the v2 loop
entirely in compiled code with the GEMM inside (BLAS from C) would save only the per-step call
(~1-2 µs of a ~150 µs step) and would bring a second BLAS and thread pool; not done.

Rounding: every operation is the fused kernel's, in its order, in the tensor's dtype, each
``addcmul`` a fused multiply-add exactly where torch's is (see :mod:`snnasr.models.compiled`),
so results agree with torch's bit for bit except for ``exp``: libmvec's and torch's (Sleef, and
libm for a row's tail) differ by up to a few ulp in about 20 % of the sigmoids.  Measured on the
bench's model (2 x 550, T 800, B 8, one forward, 3.5 M spikes per layer): LIF and the encoder are
bit-identical to ``fused`` in float64 and float32; the gated v1/v2 in float64 have no spike that
differs (values within 4e-13); in float32 their trajectories diverge after a first flipped
spike (step 3-9), as ``fused`` and ``eager`` already do (from step 3: oneDNN against MKL
products), so float32 runs agree statistically, not bit for bit.

Supported (else :func:`snnasr.models.scan.scan` falls back to ``fused``, automatically): CPU,
float32 and float64, the ``ste-box`` surrogate, the host-float range state, truncated BPTT;
not ``time_chunk`` recomputation (it replays ranges into a second forward).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from snnasr.models.bptt import GatedKernel, LIFKernel, SigmaDeltaKernel, _SpikingKernel
from snnasr.models.compiled import library
from snnasr.models.gemm import PackedWeight
from snnasr.models.spikes import RangeState

_LONG, _INT, _PTR = ctypes.c_long, ctypes.c_int, ctypes.c_void_p


class _QuantPlan(ctypes.Structure):
    """``quant_t`` of the C file: the quantiser's settings and a batch's per-step plan."""

    _fields_ = [
        ("n_bits", _INT),
        ("threshold", _INT),
        ("training", _INT),
        ("momentum", ctypes.c_double),
        ("corr", _PTR),
        ("seen", _PTR),
        ("rows", _PTR),
        ("rng", _PTR),
        ("rs", _PTR),
    ]


# Argument types of the C functions (without the dtype suffix); pointers are data_ptr() ints.
_PLAN = ctypes.POINTER(_QuantPlan)
_SIGNATURES = {
    "gated_forward": [_LONG] * 4 + [_INT] + [_PTR] * 5 + [_INT] + [_PTR] * 3 + [_PLAN],
    "gated_backward": [_LONG] * 3 + [_PTR] * 8,
    "lif_forward": [_LONG] * 4 + [_PTR] * 5 + [_INT] + [_PTR] * 2 + [_PLAN],
    "lif_backward": [_LONG] * 3 + [_PTR] * 7,
    "sigma_delta_forward": [_LONG] * 4 + [_PTR] * 3 + [_INT] + [_PTR] + [_PLAN],
    "sigma_delta_backward": [_LONG] * 3 + [_PTR] * 5,
}
_SUFFIX = {torch.float32: "_f", torch.float64: "_d"}


@functools.cache
def _functions(dtype: torch.dtype) -> dict[str, Any] | None:
    """The C functions for ``dtype`` with their argument types set, once per process (every scan's
    support check asks)."""
    lib = library()
    if lib is None or dtype not in _SUFFIX:
        return None
    out = {}
    for name, args in _SIGNATURES.items():
        fn = getattr(lib, name + _SUFFIX[dtype])
        fn.argtypes, fn.restype = args, None
        out[name] = fn
    return out


def available() -> bool:
    """Whether the native library could be built and loaded here (see :mod:`snnasr.models.compiled`)."""
    return library() is not None


def _ptr(x: Tensor | None) -> int | None:
    return None if x is None else x.data_ptr()


class _NativeKernel(_SpikingKernel):
    """What the native kernels share: the support check and the quantiser's per-batch plan."""

    backend = "native"
    fn: dict[str, Any]

    def supports(self, tensors: Sequence[Tensor | None], options: Any) -> bool:
        """Whether this batch can run natively (see the module docstring); else the scan runs ``fused``."""
        present = [t for t in (*tensors, getattr(self, "drop", None)) if t is not None]
        ref = present[0]
        fn = _functions(ref.dtype)
        if fn is None or options.time_chunk or self.cfg.surrogate != "ste-box" or not isinstance(self.rng0.lo, float):
            return False
        if not all(t.device.type == "cpu" and t.dtype == ref.dtype and t.is_contiguous() for t in present):
            return False
        self.fn = fn
        return True

    def _plan(self, rng: RangeState) -> tuple[_QuantPlan, Tensor, Tensor, tuple]:
        """The C plan for this batch, its range state (in/out) and per-step R (out) arrays."""
        masks, cfg = self.masks, self.cfg
        corr = torch.tensor([float(m.corr) for m in masks], dtype=torch.float64)
        seen = torch.tensor([m.seen for m in masks], dtype=torch.uint8)
        rows = None
        if any(m.rows is not None for m in masks):
            every = torch.ones(self.out_shape[0], dtype=torch.bool)
            rows = torch.stack([every if m.rows is None else m.rows.cpu() for m in masks]).to(torch.uint8)
        state = torch.tensor([rng.lo, rng.hi, float(rng.range)], dtype=torch.float64)
        rs = torch.empty(self.steps, dtype=torch.float64)
        plan = _QuantPlan(
            cfg.n_bits, cfg.threshold, int(cfg.training), cfg.momentum, *map(_ptr, (corr, seen, rows, state, rs))
        )
        return plan, state, rs, (corr, seen, rows)  # the last keeps the arrays alive

    @staticmethod
    def _cuts(cut: Any, t0: int, t1: int) -> Tensor:
        return torch.tensor([cut(t) for t in range(t0, t1)], dtype=torch.uint8)


def _own(x: Tensor) -> Tensor:
    """A contiguous copy of a carried state, which the C code updates in place."""
    return x.clone(memory_format=torch.contiguous_format)


def _range_out(state: Tensor) -> RangeState:
    lo, hi, r = state.tolist()
    return RangeState(lo, hi, r)


class NativeGatedKernel(_NativeKernel, GatedKernel):
    """:class:`~snnasr.models.bptt.GatedKernel` with each step's element-wise work in one C call."""

    def run(self, t0, t1, carry, rng, ranges, keep):  # type: ignore[no-untyped-def]
        assert ranges is None  # no replay: time_chunk is not supported (see supports)
        pre, u = self.tensors
        assert pre is not None
        b, hid = self.out_shape
        n = t1 - t0
        h, r, s = _own(carry[0]), _own(carry[1]), carry[2]
        gate_buf = pre.new_empty(n, b, 2, hid) if keep else None
        z_buf, q_buf = (pre.new_empty(n, b, hid) if keep else None for _ in range(2))
        plan, state, rs, _alive = self._plan(rng)
        fwd, drop = self.fn["gated_forward"], _ptr(self.drop)
        hp, rp, zp, gp, qp = h.data_ptr(), r.data_ptr(), _ptr(z_buf), _ptr(gate_buf), _ptr(q_buf)
        out = self.out[t0:t1]
        if u is None:  # v1: no recurrent product, the whole loop in one call
            fwd(t0, n, b, hid, 0, pre[t0:t1].data_ptr(), hp, rp, out.data_ptr(), drop, keep, zp, gp, qp, plan)
            s = out[-1]
        else:
            rec = PackedWeight(u, b)
            pre_t, out_t = pre[t0:t1].unbind(0), out.unbind(0)
            stride, o0 = b * hid * pre.element_size(), out.data_ptr()
            for i in range(n):  # per step: the GEMM, then one call (pointer arithmetic: no per-step views)
                g = rec.addmm(pre_t[i], s)
                o = i * stride
                fwd(t0 + i, 1, b, hid, 1, g.data_ptr(), hp, rp, o0 + o, drop, keep, zp and zp + o, gp and gp + 2 * o, qp and qp + o, plan)  # fmt: skip
                s = out_t[i]
        saved = (gate_buf, z_buf, q_buf) if keep else None
        return (h, r, s), _range_out(state), saved, rs[t0:t1].tolist()

    def backward(self, t0, t1, carry0, saved, adj, grads, cut, gout, ranges):  # type: ignore[no-untyped-def]
        pre, u = self.tensors
        gate, z, qd = saved
        b, hid = self.out_shape
        self.grad_buffers(grads)
        rec, n, bwd = grads["rec"], t1 - t0, self.fn["gated_backward"]
        gout = gout[t0:t1].contiguous()
        dpre = grads["pre"][t0:t1]
        cuts = self._cuts(cut, t0, t1)
        dh, dr, dg = (self._zeros(), self._zeros(), None) if adj is None else (_own(adj[0]), _own(adj[1]), adj[2])
        hp, rp = dh.data_ptr(), dr.data_ptr()
        if rec is None:  # v1: the whole reverse loop in one call
            bwd(
                n,
                b,
                hid,
                gout.data_ptr(),
                qd.data_ptr(),
                gate.data_ptr(),
                z.data_ptr(),
                hp,
                rp,
                dpre.data_ptr(),
                cuts.data_ptr(),
            )
            return dh, dr, None
        gout_t, dpre_t = gout.unbind(0), dpre.unbind(0)
        stride, cut_at = b * hid * pre.element_size(), cuts.tolist()
        qp, gp, zp, cp, dp0 = qd.data_ptr(), gate.data_ptr(), z.data_ptr(), cuts.data_ptr(), dpre.data_ptr()
        for i in reversed(range(n)):
            ds = gout_t[i] if dg is None else rec.addmm(gout_t[i], dg)
            o = i * stride
            bwd(1, b, hid, ds.data_ptr(), qp + o, gp + 2 * o, zp + o, hp, rp, dp0 + 2 * o, cp + i)
            dg = None if cut_at[i] else dpre_t[i]
        return dh, dr, dg


class NativeLIFKernel(_NativeKernel, LIFKernel):
    """:class:`~snnasr.models.bptt.LIFKernel`, its loops (forward, backward) each one C call."""

    def run(self, t0, t1, carry, rng, ranges, keep):  # type: ignore[no-untyped-def]
        assert ranges is None
        j, decay = self.tensors
        assert j is not None and decay is not None
        cur, v = _own(carry[0]), _own(carry[1])
        n, (b, hid) = t1 - t0, self.out_shape
        i_buf, q_buf = (j.new_empty(n, b, hid) if keep else None for _ in range(2))
        plan, state, rs, _alive = self._plan(rng)
        self.fn["lif_forward"](
            t0, n, b, hid, j[t0:t1].data_ptr(), decay.data_ptr(), cur.data_ptr(), v.data_ptr(),
            self.out[t0:t1].data_ptr(), keep, _ptr(i_buf), _ptr(q_buf), plan,
        )  # fmt: skip
        return (cur, v), _range_out(state), ((i_buf, q_buf) if keep else None), rs[t0:t1].tolist()

    def backward(self, t0, t1, carry0, saved, adj, grads, cut, gout, ranges):  # type: ignore[no-untyped-def]
        _, decay = self.tensors
        cur, qd = saved
        dj = grads.setdefault("j", self.out.new_empty(self.out.shape))
        dcur, dv = (self._zeros(), self._zeros()) if adj is None else (_own(adj[0]), _own(adj[1]))
        n, (b, hid) = t1 - t0, self.out_shape
        cuts = self._cuts(cut, t0, t1)
        self.fn["lif_backward"](
            n, b, hid, gout[t0:t1].contiguous().data_ptr(), qd.data_ptr(), decay.data_ptr(), dcur.data_ptr(),
            dv.data_ptr(), dj[t0:t1].data_ptr(), cuts.data_ptr(),
        )  # fmt: skip
        self.accumulate_decay_grad(grads, t0, t1, carry0, cur)
        return dcur, dv


class NativeSigmaDeltaKernel(_NativeKernel, SigmaDeltaKernel):
    """:class:`~snnasr.models.bptt.SigmaDeltaKernel`, its loops (forward, backward) each one C call."""

    def run(self, t0, t1, carry, rng, ranges, keep):  # type: ignore[no-untyped-def]
        assert ranges is None
        (x,) = self.tensors
        assert x is not None
        r = _own(carry[0])
        n, (b, f) = t1 - t0, self.out_shape
        q_buf = x.new_empty(n, b, f) if keep else None
        plan, state, rs, _alive = self._plan(rng)
        self.fn["sigma_delta_forward"](
            t0, n, b, f, x[t0:t1].data_ptr(), r.data_ptr(), self.out[t0:t1].data_ptr(), keep, _ptr(q_buf), plan
        )
        return (r,), _range_out(state), q_buf, rs[t0:t1].tolist()

    def backward(self, t0, t1, carry0, saved, adj, grads, cut, gout, ranges):  # type: ignore[no-untyped-def]
        dx = grads.setdefault("x", self.out.new_empty(self.out.shape))
        dr = self._zeros() if adj is None else _own(adj)
        n, (b, f) = t1 - t0, self.out_shape
        cuts = self._cuts(cut, t0, t1)
        self.fn["sigma_delta_backward"](
            n, b, f, gout[t0:t1].contiguous().data_ptr(), saved.data_ptr(), dr.data_ptr(), dx[t0:t1].data_ptr(),
            cuts.data_ptr(),
        )  # fmt: skip
        return dr
