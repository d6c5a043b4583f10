"""Matrix products of the spiking layers on oneDNN (CPU, float32), falling back to torch.

Why: on this project's CPUs (AMD EPYC) torch's default float32 GEMM (MKL) runs the spiking
layers' shapes 2.5-3x slower than oneDNN, which ``nn.LSTM`` uses internally; measured with
``snnasr bench``.  The per-step recurrent product ``s_{t-1} Uᵀ`` (batch-sized rows, the same
weight for every step) goes through a weight packed once per sequence (:class:`PackedWeight`);
the all-frames projections and weight gradients through :func:`linear` / :func:`mm`.

oneDNN is used only for float32 CPU tensors when torch was built with it (``mkldnn`` ops
present); everything else (float64 tests, CUDA, other builds) takes the plain torch op, so the
code is device-agnostic.  Results differ from torch's GEMM by float32 rounding only.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.cache
def _onednn_works() -> bool:
    """The oneDNN linear ops exist and agree with torch on a tiny product (checked once)."""
    try:
        ops = torch.ops.mkldnn
        if not torch.backends.mkldnn.is_available():
            return False
        x, w = torch.linspace(-1, 1, 15).reshape(3, 5), torch.linspace(2, -1, 20).reshape(4, 5)  # no RNG draw
        y = ops._linear_pointwise(x, ops._reorder_linear_weight(w, 3), None, "none", [], "")
        return bool(torch.allclose(y, x @ w.t(), atol=1e-5))
    except (AttributeError, RuntimeError):
        return False


def onednn(*tensors: Tensor) -> bool:
    """Whether a product of these tensors goes through oneDNN (CPU float32 only)."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and _onednn_works()


def _onednn_linear(x: Tensor, w: Tensor) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")


# Per-step products smaller than this many multiply-adds stay on torch's GEMM: measured on the
# 2-core CPU (one thread, CPU time, torch 2.14), oneDNN's call costs more than it saves at
# 0.26 M (8 x 128 -> 256: 0.56x) and wins from ~1 M on (8 x 256 -> 512: 1.3x; 16..32 rows x
# 256: 1.1x; 8 x 550 -> 550, ALIF's: 1.8x; 8 x 550 -> 1100, gated v2's: 2.4x).  A fixed rule, not
# a timing at run time, so that the same shapes always take the same arithmetic.
PACKED_MIN_MACS = 1 << 20


class PackedWeight:
    """``w`` ``[O, I]`` prepared for many ``x @ wᵀ`` with ``rows``-row inputs (one per time step)."""

    def __init__(self, w: Tensor, rows: int) -> None:
        self.w = w
        big = rows * w.shape[0] * w.shape[1] >= PACKED_MIN_MACS
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), rows) if big and onednn(w) else None

    def addmm(self, bias: Tensor, x: Tensor) -> Tensor:
        """``bias + x @ wᵀ`` (no autograd)."""
        if self.packed is None:
            return torch.addmm(bias, x, self.w.t())
        return torch.ops.mkldnn._linear_pointwise.binary(x, bias, self.packed, None, "add")


def mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` (no autograd), on oneDNN when it applies."""
    if not onednn(a, b):
        return a @ b
    return _onednn_linear(a.contiguous(), b.t().contiguous())


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w)
        flat = x.reshape(-1, x.shape[-1])
        return _onednn_linear(flat.contiguous(), w.detach().contiguous()).reshape(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, w = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        flat = x.reshape(-1, x.shape[-1])
        dx = mm(g, w).reshape(x.shape) if ctx.needs_input_grad[0] else None
        dw = mm(g.t(), flat) if ctx.needs_input_grad[1] else None
        return dx, dw


def linear(x: Tensor, w: Tensor, fast: bool = True) -> Tensor:
    """``F.linear(x, w)`` without bias, forward and backward on oneDNN when ``fast`` and it applies."""
    if fast and onednn(x, w):
        return _Linear.apply(x, w)
    return F.linear(x, w)
