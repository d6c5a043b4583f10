"""``scan``: every spiking layer's time loop, one abstraction with pluggable backends.

A spiking layer is a :class:`Cell`: a readable, differentiable ``step`` (one frame) and,
optionally, a ``kernel`` factory for a fused whole-sequence implementation.  ``scan(cell,
inputs, state0, params, masks)`` runs the recurrence over time with a backend:

- ``eager``: the reference.  A Python loop over ``cell.step``; autograd records every op of
  every step.  Tests compare every other backend against it.
- ``fused``: the cell's :class:`Kernel`: the forward runs the whole loop under ``no_grad``
  (nothing recorded), keeping only what the backward needs (O(T·B·H)); the backward is a
  hand-derived reverse loop over time (one GEMM per step for a recurrent weight, weight
  gradients in one GEMM after the loop).  Plain torch ops: the same code runs on CPU and CUDA.
- ``native``: the fused kernel with each step's element-wise work in one compiled C call
  (:mod:`snnasr.models.native`: CPU, float32/float64; gated v1/v2, LIF, sigma-delta encoder).
  Where the cell has no native kernel, the library cannot be built, or a batch uses an option
  it does not support (another surrogate, ``time_chunk``, the device range state), that scan
  runs ``fused``.
- ``auto`` (default): ``native`` where it applies, else ``fused`` when the cell has a kernel,
  else ``eager`` (a clean fallback, also for ``fused`` asked of a cell without one, e.g. a new
  architecture).

Why this shape (measured, see ``snnasr bench`` and README "Performance"): the eager loop's
cost is per-op overhead (autograd graph and dispatch) of ~40 small ops per step; the fused
kernel runs ~20 ops per step forward and ~6 backward, with no graph and with Python's cyclic
garbage collector paused (:func:`_no_cyclic_gc`); the native kernel runs one GEMM (v2 only) and
one compiled call per step, after which the GEMMs are ~70 % of a gated v2 training step.

Masks (:func:`step_masks`) are computed once per batch with one host sync, before the loop; the
quantiser's range state is explicit (:class:`~snnasr.models.spikes.RangeState`, threaded
through the steps and written back once by the layer).

Options (:class:`ScanOptions`, from ``model.scan_backend``, ``model.time_chunk``,
``model.tbptt``): ``time_chunk = K`` keeps the fused kernel's saved state for K steps only and
recomputes each chunk in the backward from its first state (activation checkpointing over
time: memory O(K·B·H) + the outputs, one extra forward of compute); ``tbptt = K`` truncates
backpropagation through time every K steps (the state entering step t is detached when
``t % K == 0``; weight gradients still sum over every step).  Neither changes the forward.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor

from snnasr.config import SCAN_BACKENDS
from snnasr.io import ConfigError
from snnasr.models.spikes import Quantizer, StepMask


class ScanOptions(NamedTuple):
    backend: str = "auto"
    time_chunk: int = 0  # fused: recompute the saved state in chunks of this many steps (0 = off)
    tbptt: int = 0  # truncate backpropagation through time every this many steps (0 = off)

    def check(self) -> ScanOptions:
        if self.backend not in SCAN_BACKENDS:
            raise ConfigError(f"model.scan_backend={self.backend!r}: choose one of {', '.join(SCAN_BACKENDS)}")
        if self.time_chunk < 0 or self.tbptt < 0:
            raise ConfigError(f"model.time_chunk={self.time_chunk}, model.tbptt={self.tbptt}: must be >= 0")
        return self


DEFAULT_OPTIONS = ScanOptions()


class Kernel:
    """A cell's fused scan (one subclass per cell); tensors arrive via :meth:`bind`.

    ``run`` steps ``t0..t1-1`` from ``carry`` (the recurrent state) under ``no_grad``, writing
    outputs into ``out[t]`` and, if ``keep``, returning what :meth:`backward` needs for those
    steps; with ``ranges`` (one R per step) it replays them instead of tracking, for
    recomputation, and leaves ``out`` alone.  ``backward`` consumes one chunk's saved tensors in
    reverse, carries the adjoint state ``adj`` to the chunk before and writes gradients into
    ``grads``; ``finish`` returns the gradients of the bound tensors (None where not needed).
    Set by the subclass: ``out_shape`` (one step's output), ``rng0`` (range state at t=0).
    ``carry0``: the carry at t=0 when it is not :meth:`init_carry`'s zeros (set by :func:`scan`
    from ``state0``, so that a stream can continue from where its previous chunk stopped).
    """

    backend = "fused"  # the backend name this kernel class implements
    out_shape: tuple[int, ...]
    rng0: Any
    carry0: tuple | None = None
    tensors: tuple[Tensor | None, ...]
    out: Tensor
    final: tuple[tuple, Any]

    def bind(self, tensors: tuple[Tensor | None, ...], out: Tensor) -> None:
        self.tensors, self.out = tensors, out

    def release(self) -> None:
        """Drop the bound tensors: the autograd context holds the kernel, so a kernel still holding
        ``out`` (whose ``grad_fn`` is that context) would be a cycle through torch's C++ graph that
        Python's collector cannot free: every training step's activations leaked (~3.5 MB a step)."""
        self.tensors, self.out = (), None  # type: ignore[assignment]

    def init_carry(self) -> tuple:
        raise NotImplementedError

    def carry_of(self, state0: Any) -> tuple:
        """The carry at t=0 from the cell's state ``(*carry, range)`` (see :func:`scan`)."""
        return tuple(state0[:-1])

    def run(
        self, t0: int, t1: int, carry: tuple, rng: Any, ranges: list | None, keep: bool
    ) -> tuple[tuple, Any, Any, list]:
        """-> ``(carry, rng, saved or None, [R_t of each step])``"""
        raise NotImplementedError

    def backward(
        self,
        t0: int,
        t1: int,
        carry0: tuple,
        saved: Any,
        adj: Any,
        grads: dict,
        cut: Callable[[int], bool],
        gout: Tensor,
        ranges: list,
    ) -> Any:
        raise NotImplementedError

    def finish(self, grads: dict, needs: Sequence[bool]) -> tuple[Tensor | None, ...]:
        raise NotImplementedError


class Cell(NamedTuple):
    """One spiking recurrence: ``step(x_t, state, params, m_t) -> (s_t, state)`` and an optional
    ``kernel(inputs, state0, params, masks[, kind]) -> (Kernel, tensors, final_state(carry, rng))``;
    ``native``: the :mod:`snnasr.models.native` subclass of its kernel, which ``kernel`` builds
    when passed as ``kind``."""

    name: str
    step: Callable[..., tuple[Tensor, Any]]
    kernel: Callable[..., tuple[Kernel, tuple, Callable]] | None = None
    native: type | None = None


def plain_cell(
    name: str,
    step: Callable[[Tensor, Any, Any], tuple[Tensor, Any]],
    kernel: Callable[..., tuple[Kernel, tuple, Callable]] | None = None,
) -> Cell:
    """A :class:`Cell` for ``step(x_t, state, params)``: one input and no per-step mask (binary
    spikes, no range quantiser; ALIF, ScSr); scan it with ``masks=[None] * T``."""
    return Cell(name, lambda x, state, params, m: step(x[0], state, params), kernel)


class ScanMasks(NamedTuple):
    """A batch's padding as the loops need it, computed once (one host sync) per batch."""

    mask: Tensor  # [T, B], True = real frame
    full: list[bool]  # step t has no padding
    seen: list[bool]  # step t has a real frame
    fill: list[int]  # a real row of step t (0 where none)

    @classmethod
    def of(cls, mask: Tensor) -> ScanMasks:
        full, seen, fill = torch.stack(
            (mask.all(dim=1).long(), mask.any(dim=1).long(), mask.to(torch.uint8).argmax(dim=1).long())
        ).tolist()
        return cls(mask, [bool(f) for f in full], [bool(v) for v in seen], fill)


def step_masks(masks: ScanMasks, quantizer: Quantizer) -> list[StepMask]:
    """Per-step range-update masks of ``quantizer`` for this batch (rows only where padded)."""
    plan = quantizer.plan(masks.seen)
    if all(masks.full):
        return plan
    rows = masks.mask.unbind(0)
    return [m if f else m._replace(rows=rows[t], fill=masks.fill[t]) for t, (m, f) in enumerate(zip(plan, masks.full))]


def resolve_backend(cell: Cell, options: ScanOptions) -> str:
    """The backend that will run: ``auto``/``fused`` fall back to ``eager`` without a kernel;
    ``auto``/``native`` take ``native`` where the cell has one and its library could be built
    (a batch it does not support still runs ``fused``, see :func:`scan`)."""
    if options.backend == "eager" or cell.kernel is None:
        return "eager"
    if options.backend in ("auto", "native") and cell.native is not None:
        from snnasr.models.native import available  # here: native imports the kernels, which import this module

        if available():
            return "native"
    return "fused"


def _detach(state: Any) -> Any:
    return type(state)(
        *(v.detach() if isinstance(v, Tensor) else _detach(v) if isinstance(v, tuple) else v for v in state)
    )


def eager_scan(
    cell: Cell, inputs: tuple[Tensor, ...], state: Any, params: Any, masks: Sequence[StepMask | None], tbptt: int = 0
) -> tuple[Tensor, Any]:
    """The reference: ``cell.step`` frame by frame under autograd; ``[T, B, H]`` outputs, final state."""
    out = []
    for t, (x_t, m_t) in enumerate(zip(zip(*(x.unbind(0) for x in inputs)), masks)):
        if tbptt and t and t % tbptt == 0:
            state = _detach(state)
        s, state = cell.step(x_t, state, params, m_t)
        out.append(s)
    return torch.stack(out), state


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Python's cyclic garbage collector paused around a fused loop.

    Why: each step creates a few dozen short-lived objects (tensors, views, tuples), which
    triggers a generation-0 collection every ~700 allocations; profiled (perf, v1 layer at
    [8, 550]) the collector took ~20 % of the loop's time.  The loop creates no reference
    cycles (every object is freed by its reference count), so nothing is left for the collector
    to find; its previous state is restored afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _FusedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel: Kernel, options: ScanOptions, grad_wanted: bool, *tensors: Tensor | None) -> Tensor:  # type: ignore[override]
        with _no_cyclic_gc():
            return _FusedScan._forward(ctx, kernel, options, grad_wanted, tensors)

    @staticmethod
    def _forward(ctx, kernel: Kernel, options: ScanOptions, grad_wanted: bool, tensors: tuple) -> Tensor:  # type: ignore[no-untyped-def]
        ref = next(x for x in tensors if x is not None)
        t_len = kernel.steps  # type: ignore[attr-defined]
        out = ref.new_empty(t_len, *kernel.out_shape)
        kernel.bind(tensors, out)
        keep = grad_wanted and any(ctx.needs_input_grad[3:])
        chunk = options.time_chunk if keep and options.time_chunk else t_len
        carry, rng = kernel.carry0 if kernel.carry0 is not None else kernel.init_carry(), kernel.rng0
        starts, saved, ranges = [], [], []
        for t0 in range(0, t_len, chunk):
            starts.append(carry)
            carry, rng, sv, rs = kernel.run(
                t0, min(t_len, t0 + chunk), carry, rng, None, keep and not options.time_chunk
            )
            saved.append(sv)
            ranges.extend(rs)
        kernel.final = (carry, rng)
        kernel.release()
        if keep:
            ctx.kernel, ctx.options, ctx.chunk = kernel, options, chunk
            ctx.starts, ctx.saved, ctx.ranges = starts, saved, ranges
            ctx.save_for_backward(out, *tensors)
        return out

    @staticmethod
    def backward(ctx, gout: Tensor):  # type: ignore[override]
        with _no_cyclic_gc():
            return _FusedScan._backward(ctx, gout)

    @staticmethod
    def _backward(ctx, gout: Tensor):  # type: ignore[no-untyped-def]
        out, *tensors = ctx.saved_tensors
        kernel, chunk, tb = ctx.kernel, ctx.chunk, ctx.options.tbptt
        kernel.bind(tuple(tensors), out)

        def cut(t: int) -> bool:  # the state entering step t is detached (truncated BPTT)
            return bool(tb) and t > 0 and t % tb == 0

        grads: dict = {}
        adj = None
        for k in reversed(range(len(ctx.starts))):
            t0, t1 = k * chunk, min(out.shape[0], (k + 1) * chunk)
            saved = ctx.saved[k]
            if saved is None:  # recompute this chunk from its first state, replaying its ranges
                _, _, saved, _ = kernel.run(t0, t1, ctx.starts[k], None, ctx.ranges[t0:t1], True)
            ctx.saved[k] = None
            adj = kernel.backward(t0, t1, ctx.starts[k], saved, adj, grads, cut, gout, ctx.ranges[t0:t1])
        result = kernel.finish(grads, ctx.needs_input_grad[3:])
        kernel.release()
        ctx.kernel = ctx.starts = ctx.saved = ctx.ranges = None
        return (None, None, None, *result)


def scan(
    cell: Cell,
    inputs: tuple[Tensor, ...],
    state0: Any,
    params: Any,
    masks: Sequence[StepMask | None],
    options: ScanOptions = DEFAULT_OPTIONS,
) -> tuple[Tensor, Any]:
    """Run ``cell`` over time: ``inputs`` ``[T, B, *]`` tensors, ``masks`` from :func:`step_masks`.

        Returns the outputs ``[T, B, H]`` and the final state (its range state is what the layer
        commits to its quantiser).  Fused backends give no gradient through the final state, nor to
        ``state0``; a fused cell's state is ``(*carry, range)`` (the kernel's carry, then the range),
    or the carry alone for cells without a range quantiser (:meth:`Kernel.carry_of`).
    """
    backend = resolve_backend(cell, options)
    if backend == "eager":
        return eager_scan(cell, inputs, state0, params, masks, options.tbptt)
    assert cell.kernel is not None
    kernel, tensors, final = cell.kernel(inputs, state0, params, masks, *([cell.native] if backend == "native" else []))
    if backend == "native" and not kernel.supports(tensors, options):  # type: ignore[attr-defined]
        kernel, tensors, final = cell.kernel(inputs, state0, params, masks)  # this batch: fused
    kernel.carry0 = kernel.carry_of(state0)
    # Under no_grad, needs_input_grad still reports the parameters' requires_grad: pass the mode.
    for ran in _RECORDERS:
        ran.append(kernel.backend)
    out = _FusedScan.apply(kernel, options, torch.is_grad_enabled(), *tensors)
    return out, final(*kernel.final)


_RECORDERS: list[list[str]] = []


@contextlib.contextmanager
def backends_run() -> Iterator[list[str]]:
    """The backend (``native``, ``fused``) of every kernel scan run inside, in order: which one a
    model really ran, after the automatic fallbacks (``snnasr bench`` rows, tests)."""
    ran: list[str] = []
    _RECORDERS.append(ran)
    try:
        yield ran
    finally:
        _RECORDERS.remove(ran)


def configure(model: torch.nn.Module, options: ScanOptions) -> None:
    """Set the scan options of every layer of ``model`` that has them."""
    options.check()
    for m in model.modules():
        if hasattr(m, "scan_options"):
            cast(Any, m).scan_options = options
