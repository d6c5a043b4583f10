"""``build(arch, cfg, n_in, n_out)``: one :class:`AcousticModel` for every architecture.

Model: ``x`` ``[T, B, F]`` → [input encoder, SNNs only] → L hidden layers → per-frame readout
``BN(W_o s^(L))`` (logits; the loss applies log-softmax).  ``forward`` returns
:class:`ModelOutput`; padded frames (``mask`` False, at the end of each sequence) do not change
valid frames' outputs nor any BN statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor, nn

from snnasr.config import ModelConfig
from snnasr.io import ConfigError
from snnasr.models.encoding import SigmaDeltaEncoder
from snnasr.models.layers import Readout
from snnasr.models.lif import LIFLayer
from snnasr.models.lstm import RecurrentLayer
from snnasr.models.proposed import GatedSpikingLayer
from snnasr.models.scan import ScanOptions, configure
from snnasr.models.spikes import Quantizer


class ModelOutput(NamedTuple):
    logits: Tensor  # [T, B, C], before log-softmax
    layer_inputs: list[Tensor]  # [T, B, F_l], as each hidden layer sees its input
    layer_outputs: list[Tensor]  # [T, B, H], spikes (SNNs) or h (LSTM/GRU)


class LayerSpec(NamedTuple):
    kind: str  # lstm | gru | lif | proposed
    n_in: int
    hidden: int
    recurrent: bool  # has weights on its own previous output


class AcousticModel(nn.Module):
    def __init__(
        self, arch: str, layers: list[nn.Module], readout: Readout, n_out: int, encoder: nn.Module | None
    ) -> None:
        super().__init__()
        self.arch, self.n_out = arch, n_out
        self.encoder = encoder
        self.layers = nn.ModuleList(layers)
        self.readout = readout

    def layer_specs(self) -> list[LayerSpec]:
        specs = []
        for layer in self.layers:
            if isinstance(layer, RecurrentLayer):
                specs.append(LayerSpec(layer.kind, layer.n_in, layer.hidden, True))
            elif isinstance(layer, GatedSpikingLayer):
                specs.append(LayerSpec("proposed", layer.n_in, layer.hidden, layer.recurrent))
            else:
                specs.append(LayerSpec("lif", layer.n_in, layer.hidden, False))
        return specs

    def forward(self, x: Tensor, mask: Tensor) -> ModelOutput:
        h = x if self.encoder is None else self.encoder(x, mask)
        inputs, outputs = [], []
        for i, layer in enumerate(self.layers):
            inputs.append(h)
            h = layer(h, mask, drop_input=i > 0) if isinstance(layer, RecurrentLayer) else layer(h, mask)
            outputs.append(h)
        return ModelOutput(self.readout(h, mask), inputs, outputs)


def _quantizer(cfg: ModelConfig) -> Quantizer:
    return Quantizer(cfg.n_bits, cfg.threshold, cfg.ema_momentum, cfg.surrogate, cfg.surrogate_scale)


def _encoder(cfg: ModelConfig) -> nn.Module | None:
    if cfg.input_encoding == "none":
        return None
    return SigmaDeltaEncoder(cfg.input_n_bits, cfg.input_threshold, cfg.ema_momentum)


def _widths(cfg: ModelConfig, n_in: int) -> list[tuple[int, int]]:
    return [(n_in if i == 0 else cfg.hidden, cfg.hidden) for i in range(cfg.layers)]


def _build_rnn(kind: str) -> Callable[[ModelConfig, int], tuple[list[nn.Module], nn.Module | None]]:
    def build_layers(cfg: ModelConfig, n_in: int) -> tuple[list[nn.Module], nn.Module | None]:
        return [
            RecurrentLayer(kind, i, h, dropout=cfg.dropout, batchnorm=cfg.batchnorm) for i, h in _widths(cfg, n_in)
        ], None

    return build_layers


def _build_lif(cfg: ModelConfig, n_in: int) -> tuple[list[nn.Module], nn.Module | None]:
    return [
        LIFLayer(
            i,
            h,
            dropout=cfg.dropout,
            batchnorm=cfg.batchnorm,
            decay_init=cfg.lif_decay_init,
            decay_init_max=cfg.lif_decay_init_max,
            quantizer=_quantizer(cfg),
            reset=cfg.reset,
        )
        for i, h in _widths(cfg, n_in)
    ], _encoder(cfg)


def _build_proposed(cfg: ModelConfig, n_in: int) -> tuple[list[nn.Module], nn.Module | None]:
    return [
        GatedSpikingLayer(
            i, h, recurrent=cfg.recurrent, dropout=cfg.dropout, batchnorm=cfg.batchnorm, quantizer=_quantizer(cfg)
        )
        for i, h in _widths(cfg, n_in)
    ], _encoder(cfg)


BUILDERS: dict[str, Callable[[ModelConfig, int], tuple[list[nn.Module], nn.Module | None]]] = {
    "lstm": _build_rnn("lstm"),
    "gru": _build_rnn("gru"),
    "lif": _build_lif,
    "proposed": _build_proposed,
}


def build(arch: str, cfg: ModelConfig, n_in: int, n_out: int) -> AcousticModel:
    """The model for ``arch`` (overrides ``cfg.arch``); ConfigError for an unknown name or bad width."""
    if arch not in BUILDERS:
        raise ConfigError(f"model.arch={arch!r}: choose one of {', '.join(BUILDERS)}")
    if n_in <= 0 or n_out <= 0:
        raise ConfigError(f"input dim {n_in} / output classes {n_out}: both must be positive; check the data dir")
    layers, encoder = BUILDERS[arch](cfg, n_in)
    model = AcousticModel(arch, layers, Readout(cfg.hidden, n_out, cfg.batchnorm), n_out, encoder)
    configure(model, ScanOptions(cfg.scan_backend, cfg.time_chunk, cfg.tbptt))
    return model
