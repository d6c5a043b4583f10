"""Building blocks shared by every architecture: masked BatchNorm and time-shared dropout.

Shapes are time-first: ``x`` is ``[T, B, F]``, ``mask`` is ``[T, B]`` (True = real frame).

Masked BN: BatchNorm1d over all (time × batch) frames, as the seed, but statistics (and the
running estimates) come from the valid frames only: the seed let padded zero frames into
them, which shifts the statistics with the amount of padding.  Padded frames come out as 0.

Dropout (seed, models.md §4): one inverted Bernoulli mask ``m`` of shape ``[B, H]`` per layer
and minibatch, shared by every frame: ``m = Bernoulli(1-p) / (1-p)`` in training, 1 in eval.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """``forward(x [T, B, F], mask [T, B]) -> [T, B, F]``; stats from valid frames only."""

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        t, b, f = x.shape
        flat = x.reshape(t * b, f)
        if not self.training or bool(mask.all()):
            return super().forward(flat).reshape(t, b, f)
        idx = mask.reshape(-1).nonzero().squeeze(1)
        valid = super().forward(flat.index_select(0, idx))
        return flat.new_zeros(t * b, f).index_copy(0, idx, valid).reshape(t, b, f)


def batch_norm_blocks(x: Tensor, mask: Tensor, norms: Sequence[nn.Module]) -> Tensor:
    """``cat(norm_k(x_k), dim=2)`` for consecutive, equal feature blocks ``x_k`` of ``x`` ``[T, B, F]``.

    Why: batch norm is per feature, so k norms over k blocks are one norm over all of ``x`` with
    their weights and statistics side by side; one call instead of k strided slices, k copies to
    make them contiguous and a ``cat`` (and their backward copies), which cost ~1/3 of the gated
    layer's projections on CPU.  Each module's running statistics and batch count are updated
    as its own call would update them.  Other norm modules run one by one.
    """
    if all(isinstance(n, NoNorm) for n in norms):
        return x
    if not _standard_bns(norms):
        return torch.cat([n(part.contiguous(), mask) for n, part in zip(norms, x.chunk(len(norms), dim=2))], dim=2)
    bns = cast(list[MaskedBatchNorm1d], list(norms))
    first = bns[0]
    t, b, f = x.shape
    flat = x.reshape(t * b, f)
    weight = torch.cat([n.weight for n in bns])
    bias = torch.cat([n.bias for n in bns])
    mean = torch.cat([cast(Tensor, n.running_mean) for n in bns])
    var = torch.cat([cast(Tensor, n.running_var) for n in bns])
    if not first.training:
        return F.batch_norm(flat, mean, var, weight, bias, False, 0.0, first.eps).reshape(t, b, f)
    for n in bns:
        cast(Tensor, n.num_batches_tracked).add_(1)
    full = bool(mask.all())
    idx = None if full else mask.reshape(-1).nonzero().squeeze(1)
    rows = flat if idx is None else flat.index_select(0, idx)
    y = F.batch_norm(rows, mean, var, weight, bias, True, cast(float, first.momentum), first.eps)
    with torch.no_grad():
        for n, m, v in zip(bns, mean.chunk(len(bns)), var.chunk(len(bns))):
            cast(Tensor, n.running_mean).copy_(m)
            cast(Tensor, n.running_var).copy_(v)
    if idx is not None:
        y = flat.new_zeros(t * b, f).index_copy(0, idx, y)
    return y.reshape(t, b, f)


def _standard_bns(norms: Sequence[nn.Module]) -> bool:
    """Masked BNs with affine weights and running statistics, all with the same settings."""
    settings = {(n.training, n.eps, n.momentum) for n in norms if isinstance(n, MaskedBatchNorm1d)}
    return len(settings) == 1 and all(
        type(n) is MaskedBatchNorm1d and n.affine and n.track_running_stats and n.momentum is not None for n in norms
    )


class NoNorm(nn.Module):
    """Stands in for :class:`MaskedBatchNorm1d` when ``batchnorm: false``."""

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return x


def make_norm(features: int, enabled: bool) -> nn.Module:
    return MaskedBatchNorm1d(features) if enabled else NoNorm()


def dropout_mask(x: Tensor, hidden: int, p: float, training: bool) -> Tensor | None:
    """Inverted ``[B, hidden]`` mask shared over time for a ``[T, B, *]`` input; None = no dropout."""
    if not training or p <= 0:
        return None
    keep = torch.full((x.shape[1], hidden), 1 - p, dtype=x.dtype, device=x.device)
    return torch.bernoulli(keep) / (1 - p)


def drop_drive(j: Tensor, hidden: int, p: float, training: bool) -> Tensor:
    """``m ⊙ j`` for a layer's drive ``j`` ``[T, B, hidden]``, ``m`` from :func:`dropout_mask`
    (one mask per sequence, shared over time); ``j`` itself when there is no dropout."""
    m = dropout_mask(j, hidden, p, training)
    return j if m is None else j * m


def kaiming_uniform_(w: Tensor) -> Tensor:
    """Seed init of feedforward weights: U(±√(3/fan_in)) (Kaiming, gain 1)."""
    bound = (3.0 / w.shape[1]) ** 0.5
    return nn.init.uniform_(w, -bound, bound)


class Readout(nn.Module):
    """Per-frame ``BN(W_o s)``, W_o: H → C without bias, init U(±√(0.01/(H+C))) (seed)."""

    elementwise_ops = 0  # per class and frame, for op counting

    def __init__(self, hidden: int, n_out: int, batchnorm: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, hidden))
        bound = (0.01 / (hidden + n_out)) ** 0.5
        nn.init.uniform_(self.weight, -bound, bound)
        self.norm = make_norm(n_out, batchnorm)

    def forward(self, s: Tensor, mask: Tensor) -> Tensor:
        return self.norm(F.linear(s, self.weight), mask)

    def forward_state(self, s: Tensor, mask: Tensor, state: None = None) -> tuple[Tensor, None]:
        """Per frame, so no state: :meth:`forward` in the stateful form a stream calls."""
        return self.forward(s, mask), None


class IntegratorReadout(nn.Module):
    """Leaky-integrator readout (Yin et al. 2021), one non-spiking neuron per class::

        z_t = BN(W_o r_t + b_o),   m_t = α ⊙ m_{t-1} + (1 - α) ⊙ z_t,   α = exp(-1/τ),   m_0 = 0

    and the logits are ``m_t`` (the loss applies log-softmax, as Yin's ``logsoftmax(m_t)``).
    τ (in frames) is per class and learnable, initialised to ``tau_init`` and kept >= 1 by an
    in-place clamp before each forward (as the LIF decay).  Padding is at the end of each
    sequence, so the causal integration leaves valid frames untouched.
    """

    elementwise_ops = 3  # per class and frame: bias, (1-α)·z, α·m + (for op counting)

    def __init__(self, n_in: int, n_out: int, batchnorm: bool, tau_init: float) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.norm = make_norm(n_out, batchnorm)
        self.tau = nn.Parameter(torch.full((n_out,), float(tau_init)))

    def forward(self, r: Tensor, mask: Tensor) -> Tensor:
        return self.forward_state(r, mask)[0]

    def forward_state(self, r: Tensor, mask: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """:meth:`forward` from the integrator's ``m`` ``[B, C]`` (None = 0), also returning
        ``m`` after the last frame (streaming)."""
        with torch.no_grad():
            self.tau.clamp_(min=1.0)
        z = self.norm(self.linear(r), mask)
        alpha = torch.exp(-1.0 / self.tau)
        m = torch.zeros_like(z[0]) if state is None else state
        out = []
        for z_t in z.unbind(0):
            m = alpha * m + (1 - alpha) * z_t
            out.append(m)
        return torch.stack(out), m
