"""Architecture registry: name -> :class:`Arch`; the CLI, config, eval, report and bench read it.

Each architecture module (``lstm``, ``lif``, ``proposed``, ``alif``, ``scsr``) declares
everything about its architecture in one :class:`Arch`: its name, its ``model`` config
section (a :class:`snnasr.config.ModelConfig` subclass), how to build one hidden layer, its
input encoder, the op-count spec of each layer kind it builds and its bench variants.  This
module lists those modules once (:data:`MODULES`) and builds the models.

Model (:class:`AcousticModel`): ``x`` ``[T, B, F]`` → [input encoder] → L hidden layers →
readout, wired by the shared fields of the ``model`` section:

- ``steps_per_frame`` k: each frame is held for k simulation steps (``[T·k, B, F]``); the
  readout sees the mean of its inputs over each frame's k steps and runs once per frame.
- ``bidirectional``: each layer is a :class:`Bidirectional` pair, the backward copy reading
  every sequence from its last *valid* frame (padding stays at the end for both), outputs
  concatenated ``[fw | bw]``.
- ``skip``: layer l >= 2 and the readout also read the output of layer l-2 (0 = the network
  input, after encoding), concatenated after the adjacent layer's output.
- ``readout``: per-frame ``BN(W_o r)`` (``linear``, the seed's) or a leaky integrator
  (``integrator``, Yin et al.'s), see :mod:`snnasr.models.layers`.

``forward`` returns :class:`ModelOutput` (logits before log-softmax); padded frames (``mask``
False, at the end of each sequence) change no valid output and no BN or range statistic.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from snnasr.config import ModelConfig, ScanConfig
from snnasr.io import ConfigError
from snnasr.models.layers import IntegratorReadout, Readout
from snnasr.models.scan import ScanOptions, configure
from snnasr.ops import OpSpec

# The architecture modules, in report order; each defines ARCHS: tuple[Arch, ...].
MODULES = ("lstm", "lif", "proposed", "alif", "scsr")


class LayerSpec(NamedTuple):
    """What op counting needs to know about one hidden layer (``kind`` must be registered)."""

    kind: str
    n_in: int  # input width (skip inputs included)
    hidden: int  # width of one direction
    recurrent: bool  # has weights on its own previous output
    directions: int = 1


class ModelOutput(NamedTuple):
    logits: Tensor  # [T, B, C], before log-softmax, one per frame
    layer_inputs: list[Tensor]  # [T·k, B, F_l], as each hidden layer sees its input
    layer_outputs: list[Tensor]  # [T·k, B, H·dirs], spikes (SNNs) or h (LSTM/GRU)
    step_mask: Tensor | None = None  # [T·k, B], the mask of layer_inputs/outputs
    readout_input: Tensor | None = None  # [T, B, R], what the readout read per frame


class ModelState(NamedTuple):
    """Where a stream stands after a chunk: the recurrent state of every part (None = at rest)."""

    encoder: Any  # the input encoder's (sigma-delta residual and range), None without one
    layers: tuple[Any, ...]  # one per hidden layer, the layer's own state type
    readout: Any  # the integrator readout's m, None for the per-frame readout


LayerBuilder = Callable[[Any, int, int, bool], nn.Module]  # (cfg, n_in, index, backward) -> layer


def _no_encoder(cfg: Any) -> nn.Module | None:
    return None


def _plain_label(cfg: Any) -> str:
    return str(cfg.arch)


@dataclass(frozen=True)
class Arch:
    """One architecture, declared in its own module.

    ``layer(cfg, n_in, index, backward)`` builds hidden layer ``index`` (0-based) of width
    ``cfg.hidden`` reading ``n_in`` features (``backward``: the backward copy of a bidirectional
    layer); the layer's ``forward(x [T, B, F], mask [T, B])`` returns ``[T, B, H]`` and its
    ``spec()`` a :class:`LayerSpec` whose ``kind`` is a key of ``ops``.  ``bench``: variants
    ``(label, model overrides)`` for ``snnasr bench``.  ``label(cfg)``: the name results carry.
    """

    name: str
    config: type[ModelConfig]
    layer: LayerBuilder
    ops: dict[str, OpSpec]
    encoder: Callable[[Any], nn.Module | None] = _no_encoder
    bench: tuple[tuple[str, dict], ...] = ()
    label: Callable[[Any], str] = _plain_label


_ARCHS: dict[str, Arch] | None = None


def archs() -> dict[str, Arch]:
    """Every registered architecture by name, in report order (modules imported on first use)."""
    global _ARCHS
    if _ARCHS is None:
        found: dict[str, Arch] = {}
        for module in MODULES:
            for arch in importlib.import_module(f"snnasr.models.{module}").ARCHS:
                found[arch.name] = arch
        _ARCHS = found
    return _ARCHS


def arch_names() -> tuple[str, ...]:
    return tuple(archs())


def get_arch(name: str) -> Arch:
    """The architecture called ``name``; ConfigError listing the choices."""
    try:
        return archs()[name]
    except KeyError:
        raise ConfigError(f"model.arch={name!r}: choose one of {', '.join(archs())}") from None


def op_spec(kind: str) -> OpSpec:
    """The op-count spec of a layer kind; an unregistered kind is an error, never a fallback."""
    for arch in archs().values():
        if kind in arch.ops:
            return arch.ops[kind]
    known = sorted({k for a in archs().values() for k in a.ops})
    raise ConfigError(f"layer kind {kind!r}: cannot count ops; registered kinds {', '.join(known)}")


def bench_variants() -> list[tuple[str, str, dict]]:
    """``(label, arch, model overrides)`` for every bench variant, in report order."""
    return [(label, a.name, dict(extra)) for a in archs().values() for label, extra in a.bench]


def model_config(arch: str, **values: Any) -> ModelConfig:
    """The ``model`` section of ``arch`` with ``values`` set (TypeError for a foreign field), checked."""
    cfg = get_arch(arch).config(arch=arch, **values)
    cfg.check()
    return cfg


def _section(arch: Arch, cfg: ModelConfig) -> ModelConfig:
    """``cfg`` as ``arch``'s section: shared fields carried over when it is another arch's."""
    if type(cfg) is arch.config and cfg.arch == arch.name:
        return cfg
    own = {f.name for f in dataclasses.fields(arch.config)}
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name in own}
    values["arch"] = arch.name
    section = arch.config(**values)
    section.check()
    return section


def arch_label(cfg: ModelConfig) -> str:
    """Name of a run's architecture in tables: the arch's own label, plus the wiring options."""
    label = get_arch(cfg.arch).label(cfg)
    extras = [
        name
        for name, on in (
            ("bidirectional", cfg.bidirectional),
            (f"{cfg.steps_per_frame} steps/frame", cfg.steps_per_frame > 1),
            ("skip", cfg.skip and not get_arch(cfg.arch).config.skip),
        )
        if on
    ]
    return f"{label} ({', '.join(extras)})" if extras else label


class Bidirectional(nn.Module):
    """A forward and a backward copy of a layer; ``[fw | bw]`` ``[T, B, 2H]``.

    The backward copy reads each sequence reversed *within its valid length*, so it starts at
    the last real frame, and padding stays at the end where it cannot reach valid outputs.
    """

    def __init__(self, forward_layer: nn.Module, backward_layer: nn.Module) -> None:
        super().__init__()
        self.fw, self.bw = forward_layer, backward_layer

    def spec(self) -> LayerSpec:
        return cast(LayerSpec, cast(Any, self.fw).spec())._replace(directions=2)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        fw = self.fw(x, mask)
        idx = reverse_index(mask)
        bw = self.bw(x.gather(0, idx[..., None].expand_as(x)), mask)
        return torch.cat((fw, bw.gather(0, idx[..., None].expand_as(bw))), dim=-1)


def reverse_index(mask: Tensor) -> Tensor:
    """``[T, B]`` time index that reverses each sequence's valid frames and keeps padding in place."""
    t = torch.arange(mask.shape[0], device=mask.device)[:, None]
    lengths = mask.sum(0, keepdim=True)
    return torch.where(t < lengths, lengths - 1 - t, t)


def wiring(layers: int, skip: bool) -> tuple[list[list[int]], list[int]]:
    """Sources of each hidden layer and of the readout (0 = network input, l = layer l's output)."""
    sources = [[i] + ([i - 1] if skip and i >= 1 else []) for i in range(layers)]
    return sources, [layers] + ([layers - 1] if skip else [])


class AcousticModel(nn.Module):
    def __init__(
        self,
        arch: str,
        layers: list[nn.Module],
        readout: nn.Module,
        n_out: int,
        encoder: nn.Module | None,
        sources: list[list[int]] | None = None,
        readout_sources: list[int] | None = None,
        steps_per_frame: int = 1,
    ) -> None:
        super().__init__()
        self.arch, self.n_out = arch, n_out
        self.encoder = encoder
        self.layers = nn.ModuleList(layers)
        self.readout = readout
        default_sources, default_readout = wiring(len(layers), False)
        self.sources = sources if sources is not None else default_sources
        self.readout_sources = readout_sources if readout_sources is not None else default_readout
        self.steps_per_frame = steps_per_frame

    def layer_specs(self) -> list[LayerSpec]:
        """One spec per hidden layer; ConfigError for a layer whose kind is not registered."""
        specs = []
        for i, layer in enumerate(self.layers):
            if not hasattr(layer, "spec"):
                raise ConfigError(f"layer {i + 1} ({type(layer).__name__}) declares no spec(); register its kind")
            spec = cast(LayerSpec, cast(Any, layer).spec())
            op_spec(spec.kind)
            specs.append(spec)
        return specs

    def forward(self, x: Tensor, mask: Tensor) -> ModelOutput:
        return self._run(x, mask, None, False)[0]

    def forward_state(self, x: Tensor, mask: Tensor, state: ModelState | None = None) -> tuple[ModelOutput, ModelState]:
        """:meth:`forward` continuing from ``state`` (None = every layer at rest), also returning
        every part's state after the last frame: :mod:`snnasr.stream` feeds chunks through this.
        Each module takes ``forward_state(x, mask, state) -> (out, state)`` (unidirectional only)."""
        out, new = self._run(x, mask, state, True)
        return out, cast(ModelState, new)

    def _run(self, x: Tensor, mask: Tensor, state: ModelState | None, stateful: bool) -> tuple[ModelOutput, Any]:
        n = len(self.layers)
        old = state if state is not None else ModelState(None, (None,) * n, None)
        new: list[Any] = []

        def call(module: Any, inp: Tensor, m: Tensor, st: Any) -> Tensor:
            if not stateful:
                return module(inp, m)
            out, st = module.forward_state(inp, m, st)
            new.append(st)
            return out

        k = self.steps_per_frame
        frame_mask = mask
        if k > 1:
            x, mask = x.repeat_interleave(k, dim=0), mask.repeat_interleave(k, dim=0)
        h = x if self.encoder is None else call(self.encoder, x, mask, old.encoder)
        signals = [h]
        inputs, outputs = [], []
        for layer, src, st in zip(self.layers, self.sources, old.layers):
            inp = signals[src[0]] if len(src) == 1 else torch.cat([signals[j] for j in src], dim=-1)
            inputs.append(inp)
            h = call(layer, inp, mask, st)
            outputs.append(h)
            signals.append(h)
        src = self.readout_sources
        r = signals[src[0]] if len(src) == 1 else torch.cat([signals[j] for j in src], dim=-1)
        if k > 1:
            r = r.reshape(-1, k, *r.shape[1:]).mean(dim=1)
        out = ModelOutput(call(self.readout, r, frame_mask, old.readout), inputs, outputs, mask, r)
        if not stateful:
            return out, None
        enc = new.pop(0) if self.encoder is not None else None
        return out, ModelState(enc, tuple(new[:n]), new[n])


def build(arch: str, cfg: ModelConfig, n_in: int, n_out: int) -> AcousticModel:
    """The model for ``arch`` (overrides ``cfg.arch``); ConfigError for an unknown name or bad width.

    ``cfg`` may be another architecture's section or the shared base: its shared fields are
    carried over and the arch's own fields take their defaults.
    """
    spec = get_arch(arch)
    if n_in <= 0 or n_out <= 0:
        raise ConfigError(f"input dim {n_in} / output classes {n_out}: both must be positive; check the data dir")
    cfg = _section(spec, cfg)
    sources, readout_sources = wiring(cfg.layers, cfg.skip)
    dirs = 2 if cfg.bidirectional else 1
    widths = [n_in] + [cfg.hidden * dirs] * cfg.layers
    layers: list[nn.Module] = []
    for i, src in enumerate(sources):
        width = sum(widths[j] for j in src)
        layer = spec.layer(cfg, width, i, False)
        layers.append(Bidirectional(layer, spec.layer(cfg, width, i, True)) if cfg.bidirectional else layer)
    encoder = spec.encoder(cfg)
    r_width = sum(widths[j] for j in readout_sources)
    readout: nn.Module
    if cfg.readout == "integrator":
        readout = IntegratorReadout(r_width, n_out, cfg.batchnorm, cfg.readout_tau)
    else:
        readout = Readout(r_width, n_out, cfg.batchnorm)
    model = AcousticModel(arch, layers, readout, n_out, encoder, sources, readout_sources, cfg.steps_per_frame)
    if isinstance(cfg, ScanConfig):  # the sections whose layers run through models/scan.py
        configure(model, ScanOptions(cfg.scan_backend, cfg.time_chunk, cfg.tbptt))
    return model
