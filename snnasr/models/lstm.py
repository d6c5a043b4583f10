"""LSTM and GRU baselines on torch's fused kernels (cuDNN / MKL), same widths as the SNNs.

Per layer, input ``x`` ``[T, B, F]``::

    x̂ = BN(x)            masked BatchNorm on the layer's input features (valid frames only)
    x̂ = m ⊙ x̂            time-shared dropout, layers 2..L only (not on the raw features)
    h = LSTM(x̂) | GRU(x̂)  one nn.LSTM / nn.GRU call over the whole sequence, h_0 = c_0 = 0

Why BN on the inputs rather than on the gate pre-activations as the seed's PyTorch-Kaldi
baselines do: normalising ``W x`` per gate needs the projection outside the fused kernel, and
the kernel would then apply a second 4H×4H input GEMM, doubling the work; normalising ``x``
keeps one fused call and still conditions every gate's input.  Recurrent weights get the seed's
orthogonal init per gate block; input weights U(±√(3/F)) as the SNNs.  Padding is at the end
of each sequence, so causal recurrence leaves valid frames untouched and no packing is needed.

Weights: ``4(F·H + H²)`` (LSTM) or ``3(F·H + H²)`` (GRU) per layer, plus the kernels' two bias
vectors.  Output ``h`` ``[T, B, H]``.
"""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor, nn

from snnasr.config import ModelConfig
from snnasr.models.layers import dropout_mask, kaiming_uniform_, make_norm
from snnasr.models.registry import Arch, LayerSpec
from snnasr.ops import OpSpec


class RecurrentLayer(nn.Module):
    """``forward(x [T, B, F], mask [T, B]) -> h [T, B, H]`` for ``kind`` lstm or gru."""

    def __init__(self, kind: str, n_in: int, hidden: int, *, dropout: float, batchnorm: bool, drop_input: bool) -> None:
        super().__init__()
        self.kind, self.n_in, self.hidden, self.p, self.drop_input = kind, n_in, hidden, dropout, drop_input
        self.norm = make_norm(n_in, batchnorm)
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(n_in, hidden)
        gates = 4 if kind == "lstm" else 3
        weight_ih, weight_hh, bias_ih, bias_hh = (
            cast(Tensor, getattr(self.rnn, name))
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
        )
        kaiming_uniform_(weight_ih.data)
        for block in weight_hh.data.chunk(gates, dim=0):
            nn.init.orthogonal_(block)
        nn.init.zeros_(bias_ih)
        nn.init.zeros_(bias_hh)

    def spec(self) -> LayerSpec:
        return LayerSpec(self.kind, self.n_in, self.hidden, True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.forward_state(x, mask)[0]

    def forward_state(self, x: Tensor, mask: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """:meth:`forward` from the kernel's state ``(h, c)`` (LSTM) / ``h`` (GRU), None = zeros,
        also returning the state after the last frame (streaming)."""
        x = self.norm(x, mask)
        m = dropout_mask(x, self.n_in, self.p, self.training) if self.drop_input else None
        if m is not None:
            x = x * m
        return self.rnn(x, state)


def _layer(kind: str):
    def build(cfg: Any, n_in: int, index: int, backward: bool) -> RecurrentLayer:
        # Dropout on the layer input for layers 2..L only: not on the raw features.
        return RecurrentLayer(
            kind, n_in, cfg.hidden, dropout=cfg.dropout, batchnorm=cfg.batchnorm, drop_input=index > 0
        )

    return build


# Per neuron and frame: 4 (LSTM) / 3 (GRU) input and dense recurrent matrices, 12 element-wise
# (gates and cell update), as the seed's counters.
ARCHS = (
    Arch("lstm", ModelConfig, _layer("lstm"), {"lstm": OpSpec(4, 12, "dense", 4)}, bench=(("lstm", {}),)),
    Arch("gru", ModelConfig, _layer("gru"), {"gru": OpSpec(3, 12, "dense", 3)}, bench=(("gru", {}),)),
)
