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
from typing import Any, Protocol

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


@dataclass(frozen=True)
class OpSpec:
    """How one layer kind is counted; each architecture module declares its own (``OPS``).

    Per simulation step, for a layer of width H (per direction) whose input has ``nnz_in``
    non-zeros and whose own output had ``nnz_prev`` non-zeros one step earlier:

    - synaptic: ``fanout * nnz_in * H`` (input-weight matrices sharing the input: 4 LSTM gates);
    - recurrent: ``dense`` = ``rec_fanout * H^2`` (LSTM/GRU h is never exactly zero),
      ``sparse`` = ``rec_fanout * nnz_prev * H`` (weights on the layer's own previous spikes),
      ``self`` = ``rec_fanout * nnz_prev`` (one scalar weight per neuron, fed back to itself),
      ``none``; only for layers built with recurrence (``LayerSpec.recurrent``);
    - element-wise: ``elementwise * H`` state updates (membrane, gates, adaptation, ...).

    ``official_input_recurrent`` reproduces the seed code's gated-SNN quirk under the
    ``official`` convention: the recurrent term is ``official_input_recurrent * nnz_in * H``.
    """

    fanout: int
    elementwise: int
    recurrent: str = "none"
    rec_fanout: int = 0
    official_input_recurrent: int = 0

    def __post_init__(self) -> None:
        if self.recurrent not in RECURRENT_KINDS:
            raise ValueError(f"OpSpec.recurrent={self.recurrent!r}: one of {', '.join(RECURRENT_KINDS)}")


RECURRENT_KINDS = ("none", "dense", "sparse", "self")

ENCODER_OPS = 3  # residual accumulate, quantiser scale, subtract emitted: per feature and frame
ENCODER_CONVENTIONS = ("counted", "free")


class LayerSpecLike(Protocol):
    kind: str
    n_in: int
    hidden: int
    recurrent: bool


@dataclass
class LayerOps:
    """Operation totals of one layer over ``frames`` valid frames (divide for per frame)."""

    synaptic: float  # input-weight events
    recurrent: float  # recurrent-weight events (dense for LSTM/GRU, sparse for spiking recurrence)
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


def _op_spec(kind: str | OpSpec) -> OpSpec:
    if isinstance(kind, OpSpec):
        return kind
    from snnasr.models.registry import op_spec  # the architectures declare their specs

    return op_spec(kind)


def layer_ops(
    kind: str | OpSpec,
    hidden: int,
    recurrent: bool,
    nnz_in: float,
    nnz_prev: float,
    frames: int,
    input_binary: bool = False,
    output_binary: bool = False,
    convention: str = "honest",
    directions: int = 1,
) -> LayerOps:
    """Ops of one hidden layer from nnz totals over ``frames`` valid simulation steps.

    ``kind`` is a registered layer kind (its :class:`OpSpec` comes from the architecture
    registry) or an OpSpec.  ``input_binary`` / ``output_binary`` say whether the layer's input
    / own output took only values {0, c} on this data: they decide AC vs MAC for the input and
    sparse recurrent events.  ``directions`` = 2 for a bidirectional layer: ``hidden`` is one
    direction's width, ``nnz_prev`` the total over both directions (each of its own previous
    step).  Raises ConfigError for an unregistered layer kind or an unknown convention.
    """
    check_convention(convention)
    spec = _op_spec(kind)
    h, d = hidden, directions
    synaptic = d * spec.fanout * nnz_in * h
    rec_sparse = False
    if convention == "official" and spec.official_input_recurrent:
        rec = d * spec.official_input_recurrent * nnz_in * h
    elif not recurrent or spec.recurrent == "none":
        rec = 0.0
    elif spec.recurrent == "dense":
        rec = d * spec.rec_fanout * h * h * frames
    elif spec.recurrent == "sparse":
        rec, rec_sparse = spec.rec_fanout * nnz_prev * h, True
    else:  # self: one scalar weight per neuron
        rec, rec_sparse = spec.rec_fanout * nnz_prev, True
    elementwise = d * spec.elementwise * h * frames
    ac = synaptic if input_binary else 0.0
    if convention == "official" and spec.official_input_recurrent and input_binary:
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


def readout_ops(
    n_out: int, nnz_in: float, input_binary: bool = False, elementwise: int = 0, frames: int = 0
) -> LayerOps:
    """Readout (logits) layer: one event per non-zero input and class, plus ``elementwise``
    state updates per class and frame (3 for a leaky integrator: bias, (1-α)·, α·m +)."""
    syn = float(n_out * nnz_in)
    elem = float(elementwise * n_out * frames)
    ac = syn if input_binary else 0.0
    return LayerOps(syn, 0.0, elem, syn + elem - ac, ac)


def _widths(specs: Sequence[LayerSpecLike]) -> list[int]:
    return [s.hidden * getattr(s, "directions", 1) for s in specs]


def dense_reference(
    kind: str, specs: Sequence[LayerSpecLike], n_out: int, nnz_features: float, frames: int
) -> tuple[list[LayerOps], LayerOps]:
    """An LSTM or GRU of the same widths on the same frames, counted analytically.

    A plain stack, one step per frame, each layer as wide as the model's layer output (both
    directions of a bidirectional layer).  Its first layer sees the real feature non-zeros
    (``nnz_features`` total); hidden layers and the readout see dense inputs (an RNN's ``h``
    is never exactly zero), all MACs.
    """
    layers = []
    nnz = nnz_features
    for width in _widths(specs):
        layers.append(layer_ops(kind, width, True, nnz, 0.0, frames))
        nnz = width * frames
    return layers, readout_ops(n_out, nnz)


def rnn_params(kind: str, specs: Sequence[LayerSpecLike], n_out: int) -> int:
    """Trainable parameters of the ``torch.nn.LSTM``/``GRU`` stack of :func:`dense_reference`
    plus a linear readout."""
    gates = _op_spec(kind).fanout
    n, n_in = 0, specs[0].n_in
    for width in _widths(specs):
        n += gates * (n_in * width + width * width + 2 * width)
        n_in = width
    return n + n_in * n_out + n_out


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


def next_nnz_total(out: torch.Tensor, mask: torch.Tensor) -> int:
    """:func:`prev_nnz_total` for a backward-in-time direction: its previous step is t+1."""
    both_valid = mask[:-1] & mask[1:]
    return int(((out[1:] != 0) & both_valid[..., None]).sum())


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


class ActivationStats:
    """Running totals over valid frames / simulation steps of everything ops and sparsity need.

    With ``steps_per_frame`` k > 1 the hidden layers run k steps per frame: their statistics
    are over valid steps (``step_mask``), features and the readout over valid frames.  For a
    bidirectional layer (``directions[i] == 2``) the backward half's "previous step" is t+1.
    """

    def __init__(self, n_layers: int) -> None:
        self.frames = 0
        self.steps = 0
        self.nnz_features = 0
        self.nnz_in = [0] * n_layers
        self.nnz_prev = [0] * n_layers
        self.nnz_out = [0] * n_layers
        self.zeros = [0] * n_layers
        self.entries = [0] * n_layers
        self.range_in: list[Any] = [None] * n_layers
        self.range_out: list[Any] = [None] * n_layers
        self.nnz_readout = 0
        self.range_readout: Any = None

    def update(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        layer_inputs: list[torch.Tensor],
        layer_outputs: list[torch.Tensor],
        *,
        step_mask: torch.Tensor | None = None,
        readout_input: torch.Tensor | None = None,
        directions: Sequence[int] | None = None,
    ) -> None:
        """Add one batch: features ``x`` and ``mask`` per frame, layer signals per step."""
        steps = mask if step_mask is None else step_mask
        self.frames += int(mask.sum())
        self.steps += int(steps.sum())
        self.nnz_features += nnz_total(x, mask)
        for i, (inp, out) in enumerate(zip(layer_inputs, layer_outputs)):
            self.nnz_in[i] += nnz_total(inp, steps)
            if directions is not None and directions[i] == 2:
                fw, bw = out.chunk(2, dim=-1)
                self.nnz_prev[i] += prev_nnz_total(fw, steps) + next_nnz_total(bw, steps)
            else:
                self.nnz_prev[i] += prev_nnz_total(out, steps)
            self.nnz_out[i] += nnz_total(out, steps)
            z, n = zero_counts(out, steps)
            self.zeros[i] += z
            self.entries[i] += n
            self.range_in[i] = merge_range(self.range_in[i], nonzero_range(inp, steps))
            self.range_out[i] = merge_range(self.range_out[i], nonzero_range(out, steps))
        r = layer_outputs[-1] if readout_input is None else readout_input
        r_mask = steps if readout_input is None else mask
        self.nnz_readout += nnz_total(r, r_mask)
        self.range_readout = merge_range(self.range_readout, nonzero_range(r, r_mask))

    def zero_fraction(self) -> dict[str, Any]:
        """Per layer and overall; the overall ratio of sums weights layers by width."""
        layers = [z / n if n else float("nan") for z, n in zip(self.zeros, self.entries)]
        total = sum(self.entries)
        return {"layers": layers, "overall": sum(self.zeros) / total if total else float("nan")}


def count_ops(
    stats: ActivationStats,
    specs: Sequence[LayerSpecLike],
    n_out: int,
    convention: str = "honest",
    energy: str = "45nm-fp32",
    encoder_features: int = 0,
    encoder: str = "counted",
    readout_elementwise: int = 0,
) -> dict[str, Any]:
    """Per-frame ops of the model (encoder + layers + readout) and of analytic LSTM/GRU references.

    ``encoder_features`` is the width of the model's sigma-delta input encoder (0 = none);
    ``encoder`` says whether its work counts (:func:`encoder_ops`).  Layers (and the encoder)
    are counted over valid simulation steps (all k steps of a frame), the readout over valid
    frames (``readout_elementwise`` state updates per class and frame); every figure is then
    divided by the valid frames.  Raises ConfigError for an unregistered layer kind.
    """
    frames = stats.frames
    steps = stats.steps or frames
    layers = []
    enc = encoder_ops(encoder_features, steps, encoder)
    mac, ac, total = enc.mac, enc.ac, enc.total
    for i, spec in enumerate(specs):
        in_bin = is_binary(stats.range_in[i])
        out_bin = is_binary(stats.range_out[i])
        dirs = getattr(spec, "directions", 1)
        lo = layer_ops(
            spec.kind,
            spec.hidden,
            spec.recurrent,
            stats.nnz_in[i],
            stats.nnz_prev[i],
            steps,
            input_binary=in_bin,
            output_binary=out_bin,
            convention=convention,
            directions=dirs,
        )
        layers.append(
            {
                "layer": i + 1,
                "kind": spec.kind,
                "n_in": spec.n_in,
                "hidden": spec.hidden,
                "directions": dirs,
                "recurrent": bool(spec.recurrent),
                "input_binary": in_bin,
                "output_binary": out_bin,
                "nnz_in_per_frame": stats.nnz_in[i] / frames,
                "nnz_prev_per_frame": stats.nnz_prev[i] / frames,
                **lo.per_frame(frames),
            }
        )
        mac, ac, total = mac + lo.mac, ac + lo.ac, total + lo.total
    ro_bin = is_binary(stats.range_readout)
    ro = readout_ops(n_out, stats.nnz_readout, input_binary=ro_bin, elementwise=readout_elementwise, frames=frames)
    readout = {"n_out": n_out, "input_binary": ro_bin, **ro.per_frame(frames)}
    mac, ac, total = mac + ro.mac, ac + ro.ac, total + ro.total
    refs: dict[str, dict[str, Any]] = {}
    for kind in ("lstm", "gru"):
        ref_layers, ref_ro = dense_reference(kind, specs, n_out, stats.nnz_features, frames)
        ref_total = sum(lo.total for lo in ref_layers) + ref_ro.total
        refs[kind] = {
            "layers": [lo.per_frame(frames) for lo in ref_layers],
            "readout": ref_ro.per_frame(frames),
            "total_per_frame": ref_total / frames,
            "mac_per_frame": ref_total / frames,
            "energy_pj_per_frame": energy_pj(ref_total, 0.0, energy) / frames,
        }
    return {
        "convention": convention,
        "encoder": encoder if encoder_features else "none",
        "encoder_per_frame": enc.total / frames,
        "frames": frames,
        "steps_per_frame": steps / frames if frames else 1.0,
        "mac_per_frame": mac / frames,
        "ac_per_frame": ac / frames,
        "total_per_frame": total / frames,
        "normalised_vs_lstm": total / frames / refs["lstm"]["total_per_frame"],
        "normalised_vs_gru": total / frames / refs["gru"]["total_per_frame"],
        "energy_preset": energy,
        "energy_pj_per_frame": energy_pj(mac, ac, energy) / frames,
        "energy_note": ENERGY_NOTE,
        "mac_ac_rule": MAC_AC_NOTE,
        "features_nnz_per_frame": stats.nnz_features / frames,
        "layers": layers,
        "readout": readout,
        "reference": refs,
    }
