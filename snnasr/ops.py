"""Operation counts, sparsity and energy estimates from real activations (pure functions).

Per frame and per layer of width H, with ``nnz_in`` the non-zeros of the layer's input at that
frame and ``nnz_prev`` the non-zeros of the layer's own output one frame earlier (0 at t = 0):

=================  ====================================  =====================================
layer              honest (default)                      official (seed code, quirk included)
=================  ====================================  =====================================
LSTM               nnz_in*4H + 4H^2 + 12H                same
GRU                nnz_in*3H + 3H^2 + 12H                same
vanilla SNN (lif)  nnz_in*H + 6H                         same
proposed v2        2*nnz_in*H + 2*nnz_prev*H + 8H        2*nnz_in*H + 2*nnz_in*H + 8H
proposed v1        2*nnz_in*H + 8H                       2*nnz_in*H + 2*nnz_in*H + 8H
readout (C cls)    nnz_in*C                              same
=================  ====================================  =====================================

Sigma-delta input encoder (SNNs with ``input_encoding: sigma-delta``): per feature and frame it
accumulates the residual, quantises (one scaling multiply) and subtracts what it emitted,
``ENCODER_OPS`` = 3 element-wise MACs per feature.  Counting it is the honest default (the SNN's
first layer then sees sparse spikes, while the LSTM reference sees the dense features, and the
conversion is not free); ``encoder: free`` leaves it out, as the seed's counters do.

The official code's second gated-SNN term was meant to count the recurrent weights but reads
the *input's* non-zeros at the same frame, for v1 (which has no recurrent weights) too; the
honest count uses the layer's own previous output, and nothing for v1.

MAC vs AC: a synaptic event is an accumulate (AC) only when the values feeding it are binary
({0, c} for one constant c: a weight is added, the c folds into the weights); otherwise it is a
multiply-accumulate (MAC).  Multi-bit spikes are therefore MACs (honest default; counting k*q
as k ACs is not done).  The dense recurrent products of LSTM/GRU and all element-wise state
updates count as MACs.  Sums over frames are linear in the nnz, so every function here takes
*totals* over the valid frames and the frame count, and per-frame figures are total / frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import torch

from snnasr.io import ConfigError

CONVENTIONS = ("honest", "official")

# Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm, pJ per operation:
# MAC = multiply + add; AC = add only.  Arithmetic only: memory access is NOT included.
ENERGY_PRESETS: dict[str, dict[str, float]] = {
    "45nm-fp32": {"mac_pj": 4.6, "ac_pj": 0.9},
    "45nm-fp16": {"mac_pj": 1.5, "ac_pj": 0.4},
    "45nm-int8": {"mac_pj": 0.23, "ac_pj": 0.03},
}
ENERGY_NOTE = "estimate: arithmetic only (Horowitz ISSCC 2014, 45 nm), memory access excluded"
MAC_AC_NOTE = (
    "AC = synaptic event with binary input ({0, c}); multi-bit spikes, dense inputs, "
    "LSTM/GRU recurrent products and element-wise updates count as MAC"
)

ENCODER_OPS = 3  # residual accumulate, quantiser scale, subtract emitted: per feature and frame
ENCODER_CONVENTIONS = ("counted", "free")

# Element-wise cost per neuron and frame (state updates, gates), as in the seed's counters.
ELEMENTWISE = {"lstm": 12, "gru": 12, "lif": 6, "proposed": 8}
# Input-weight matrices per neuron: gates of LSTM (4), GRU (3), gated SNN (forget + candidate).
FANOUT = {"lstm": 4, "gru": 3, "lif": 1, "proposed": 2}


class LayerSpecLike(Protocol):
    kind: str
    n_in: int
    hidden: int
    recurrent: bool


@dataclass
class LayerOps:
    """Operation totals of one layer over ``frames`` valid frames (divide for per frame)."""

    synaptic: float  # input-weight events
    recurrent: float  # recurrent-weight events (dense for LSTM/GRU, sparse for proposed v2)
    elementwise: float  # per-neuron state updates
    mac: float
    ac: float

    @property
    def total(self) -> float:
        return self.synaptic + self.recurrent + self.elementwise

    def per_frame(self, frames: int) -> dict[str, float]:
        d = {k: v / frames if frames else 0.0 for k, v in asdict(self).items()}
        d["total"] = self.total / frames if frames else 0.0
        return d


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ConfigError(f"ops convention {convention!r}: choose one of {', '.join(CONVENTIONS)}")
    return convention


def layer_ops(
    kind: str,
    hidden: int,
    recurrent: bool,
    nnz_in: float,
    nnz_prev: float,
    frames: int,
    input_binary: bool = False,
    output_binary: bool = False,
    convention: str = "honest",
) -> LayerOps:
    """Ops of one hidden layer from nnz totals over ``frames`` valid frames.

    ``input_binary`` / ``output_binary`` say whether the layer's input / own output took only
    values {0, c} on this data: they decide AC vs MAC for the input and sparse recurrent events.
    Raises ConfigError for an unknown layer kind or convention.
    """
    check_convention(convention)
    if kind not in FANOUT:
        raise ConfigError(f"layer kind {kind!r}: cannot count ops; known kinds {', '.join(FANOUT)}")
    h = hidden
    synaptic = FANOUT[kind] * nnz_in * h
    rec_sparse = False
    if kind in ("lstm", "gru"):
        rec = FANOUT[kind] * h * h * frames
    elif kind == "proposed" and convention == "official":
        rec = 2 * nnz_in * h
    elif kind == "proposed" and recurrent:
        rec, rec_sparse = 2 * nnz_prev * h, True
    else:
        rec = 0.0
    elementwise = ELEMENTWISE[kind] * h * frames
    ac = synaptic if input_binary else 0.0
    if kind == "proposed" and convention == "official" and input_binary:
        ac += rec
    elif rec_sparse and output_binary:
        ac += rec
    mac = synaptic + rec + elementwise - ac
    return LayerOps(float(synaptic), float(rec), float(elementwise), float(mac), float(ac))


def encoder_ops(n_features: int, frames: int, encoder: str = "counted") -> LayerOps:
    """The sigma-delta encoder's own work over ``frames`` frames (element-wise MACs); 0 when ``free``."""
    if encoder not in ENCODER_CONVENTIONS:
        raise ConfigError(f"encoder ops {encoder!r}: choose one of {', '.join(ENCODER_CONVENTIONS)}")
    ew = float(ENCODER_OPS * n_features * frames) if encoder == "counted" else 0.0
    return LayerOps(0.0, 0.0, ew, ew, 0.0)


def readout_ops(n_out: int, nnz_in: float, input_binary: bool = False) -> LayerOps:
    """Readout (logits) layer: one event per non-zero input and class."""
    syn = float(n_out * nnz_in)
    return LayerOps(syn, 0.0, 0.0, 0.0 if input_binary else syn, syn if input_binary else 0.0)


def dense_reference(
    kind: str, specs: Sequence[LayerSpecLike], n_out: int, nnz_features: float, frames: int
) -> tuple[list[LayerOps], LayerOps]:
    """An LSTM or GRU of the same widths on the same frames, counted analytically.

    Its first layer sees the real feature non-zeros (``nnz_features`` total); hidden layers
    and the readout see dense inputs (an RNN's ``h`` is never exactly zero), all MACs.
    """
    layers = []
    nnz = nnz_features
    for spec in specs:
        layers.append(layer_ops(kind, spec.hidden, True, nnz, 0.0, frames))
        nnz = spec.hidden * frames
    return layers, readout_ops(n_out, nnz)


def rnn_params(kind: str, specs: Sequence[LayerSpecLike], n_out: int) -> int:
    """Trainable parameters of ``torch.nn.LSTM``/``GRU`` stacks of these widths plus a linear readout."""
    gates = FANOUT[kind]
    n = sum(gates * (s.n_in * s.hidden + s.hidden * s.hidden + 2 * s.hidden) for s in specs)
    return n + specs[-1].hidden * n_out + n_out


def energy_pj(mac: float, ac: float, preset: str) -> float:
    """Arithmetic energy in pJ for ``mac`` MACs and ``ac`` ACs; see :data:`ENERGY_NOTE`."""
    if preset not in ENERGY_PRESETS:
        raise ConfigError(f"energy preset {preset!r}: choose one of {', '.join(ENERGY_PRESETS)}")
    p = ENERGY_PRESETS[preset]
    return mac * p["mac_pj"] + ac * p["ac_pj"]


# ---- activation statistics over valid frames ([T, B, F] tensors, mask [T, B]) ----


def nnz_total(x: torch.Tensor, mask: torch.Tensor) -> int:
    """Non-zero entries of ``x`` summed over valid frames (padding never counts)."""
    return int(((x != 0) & mask[..., None]).sum())


def prev_nnz_total(out: torch.Tensor, mask: torch.Tensor) -> int:
    """Sum over valid frames t of the non-zeros of ``out`` at t-1 (0 at a sequence's first frame).

    A frame whose predecessor is padding (left padding) counts as a first frame.
    """
    prev_valid = mask[:-1] & mask[1:]
    return int(((out[:-1] != 0) & prev_valid[..., None]).sum())


def zero_counts(out: torch.Tensor, mask: torch.Tensor) -> tuple[int, int]:
    """``(exact zeros, entries)`` of a layer's output over valid frames."""
    valid = int(mask.sum()) * out.shape[-1]
    return valid - nnz_total(out, mask), valid


def nonzero_range(x: torch.Tensor, mask: torch.Tensor) -> tuple[float, float] | None:
    """(min, max) of the non-zero values on valid frames, None if all zero.

    Merging these over batches tells whether a signal is binary ({0, c}: min == max).
    """
    vals = x[mask]
    vals = vals[vals != 0]
    if vals.numel() == 0:
        return None
    return float(vals.min()), float(vals.max())


def merge_range(a: tuple[float, float] | None, b: tuple[float, float] | None) -> tuple[float, float] | None:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), max(a[1], b[1])


def is_binary(value_range: tuple[float, float] | None) -> bool:
    """True for {0, c}: every non-zero value equal (or no non-zero at all: nothing to multiply)."""
    return value_range is None or value_range[0] == value_range[1]
