"""Typed experiment configuration: dataclasses loaded from YAML, with ``key=value`` overrides.

A config file mirrors :class:`Config`: sections ``model``, ``train``, ``data``, ``utterance``
plus top-level ``task`` and ``seed``.  The ``model`` section's fields are those of the chosen
architecture (``model.arch``; each architecture module declares its section, see
:mod:`snnasr.models.registry`).  Unknown keys and wrong types are errors (a typo, or a field of
another architecture, must not silently fall back to a default).  Overrides use dotted keys, e.g. ``model.hidden=550 train.epochs=24``; values are
parsed as YAML scalars.  Shipped defaults reproduce the seed paper's TIMIT setting
(Ponghiran & Roy 2021): 2 x 550, BN, dropout 0.2, Adam 1e-3, 24 epochs, new-bob, 6-bit
spikes with dead-zone 3, sigma-delta input encoding, length curriculum.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from snnasr.io import ConfigError, write_text

SURROGATES = ("ste-box", "fast-sigmoid", "triangle", "multi-gaussian", "atan")
INPUT_ENCODINGS = ("sigma-delta", "none")
READOUTS = ("linear", "integrator")
TASKS = ("frame", "utterance")
POOLS = ("last", "mean", "max", "softmax-sum")
SCAN_BACKENDS = ("auto", "native", "fused", "eager")


@dataclass
class ModelConfig:
    """The ``model`` section: fields every architecture reads.

    Each architecture's own section is a subclass declared in its module
    (``snnasr.models.<arch>``) and found through :mod:`snnasr.models.registry`; a config file
    may only set the fields of its architecture's section.  Wiring (see the registry):
    ``readout`` per-frame ``linear`` or leaky ``integrator`` (initial time constant
    ``readout_tau`` in frames, learnable per class); ``steps_per_frame`` simulation steps per
    input frame (the frame is held, the readout sees the mean over its steps);
    ``bidirectional`` adds a backward-in-time copy of every layer (outputs concatenated);
    ``skip`` feeds every layer after the first, and the readout, the output of the layer two
    below it as well (layer 0 = the network input).
    """

    arch: str = "proposed"
    hidden: int = 550
    layers: int = 2
    dropout: float = 0.2
    batchnorm: bool = True
    readout: str = "linear"
    readout_tau: float = 3.0
    steps_per_frame: int = 1
    bidirectional: bool = False
    skip: bool = False

    def check(self) -> None:
        from snnasr.models.registry import arch_names

        _choice("model.arch", self.arch, arch_names())
        _positive("model.hidden", self.hidden)
        _positive("model.layers", self.layers)
        _positive("model.steps_per_frame", self.steps_per_frame)
        _choice("model.readout", self.readout, READOUTS)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout}: must be in [0, 1)")
        if self.readout_tau < 1.0:
            raise ConfigError(f"model.readout_tau={self.readout_tau}: must be >= 1 (frames)")


@dataclass
class ScanConfig(ModelConfig):
    """Section base of the architectures whose layers run through :mod:`snnasr.models.scan`."""

    # Spiking layers' time loop (snnasr.models.scan): auto | fused | eager (the reference);
    # time_chunk > 0 recomputes the saved state in chunks of that many frames (less memory);
    # tbptt > 0 truncates backpropagation through time every that many frames.
    scan_backend: str = "auto"
    time_chunk: int = 0
    tbptt: int = 0

    def check(self) -> None:
        super().check()
        _choice("model.scan_backend", self.scan_backend, SCAN_BACKENDS)
        for name in ("time_chunk", "tbptt"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name}={getattr(self, name)}: must be >= 0 (0 = off)")


@dataclass
class MultiBitConfig(ScanConfig):
    """Section base of the multi-bit spiking architectures (lif, proposed): the quantiser of
    :mod:`snnasr.models.spikes` and the sigma-delta input encoder."""

    n_bits: int = 6
    threshold: int = 3
    ema_momentum: float = 0.1
    surrogate: str = "ste-box"
    surrogate_scale: float = 1.0
    input_encoding: str = "sigma-delta"
    input_n_bits: int = 6
    input_threshold: int = 3

    def check(self) -> None:
        super().check()
        _choice("model.surrogate", self.surrogate, SURROGATES)
        _choice("model.input_encoding", self.input_encoding, INPUT_ENCODINGS)
        for name in ("n_bits", "input_n_bits"):
            v = getattr(self, name)
            if not 1 <= v <= 16:
                raise ConfigError(f"model.{name}={v}: must be between 1 and 16")
        for name, bits in (("threshold", self.n_bits), ("input_threshold", self.input_n_bits)):
            v = getattr(self, name)
            if v < 0 or v >= max(2 ** (bits - 1) - 1, 1):
                raise ConfigError(
                    f"model.{name}={v}: dead zone must be >= 0 and leave at least one level below 2^(n_bits-1)-1"
                )
        if not 0.0 < self.ema_momentum <= 1.0:
            raise ConfigError(
                f"model.ema_momentum={self.ema_momentum}: must be in (0, 1] (weight of the newest range estimate)"
            )
        _finite_positive("model.surrogate_scale", self.surrogate_scale)


# Every field the single flat ModelConfig had before the per-architecture sections: a saved
# run's config may carry them for any arch; reading it drops those its section lacks.
LEGACY_MODEL_KEYS = frozenset(
    {
        "n_bits",
        "threshold",
        "ema_momentum",
        "surrogate",
        "surrogate_scale",
        "input_encoding",
        "input_n_bits",
        "input_threshold",
        "recurrent",
        "lif_decay_init",
        "lif_decay_init_max",
        "scan_backend",
        "time_chunk",
        "tbptt",
    }
)


def model_section(arch: str) -> ModelConfig:
    """Default ``model`` section of ``arch`` (ConfigError listing the choices if unknown)."""
    from snnasr.models.registry import get_arch

    return get_arch(arch).config(arch=arch)


@dataclass
class UtteranceConfig:
    """``task: utterance``: how the per-frame readout becomes one score vector per utterance.

    ``pool``: ``last`` valid frame, ``mean`` or ``max`` over valid frames, or ``softmax-sum``
    (Yin et al.'s SHD readout: the sum of per-frame softmax after ``burn_in`` frames).
    """

    pool: str = "mean"
    burn_in: int = 0

    def check(self) -> None:
        _choice("utterance.pool", self.pool, POOLS)
        if self.burn_in < 0:
            raise ConfigError(f"utterance.burn_in={self.burn_in}: must be >= 0 frames")


@dataclass
class TrainConfig:
    epochs: int = 24
    lr: float = 1e-3
    # Minibatches of length-sorted pieces close at either limit (null = no limit, not both null):
    # batch_size sequences (the seed: 64) or batch_frames padded frames (a memory budget).
    batch_size: int | None = 64
    batch_frames: int | None = None
    # "<max_len>*<epochs>|...": utterances longer than max_len are cut into pieces.
    curriculum: str = "100*5|200*4|400*4|800*4|1000*7"
    # New-bob (seed): halve lr (not below lr_floor) once the relative dev frame-error improvement
    # has stayed below newbob_threshold for more than newbob_patience consecutive epochs.
    newbob_threshold: float = 0.005
    newbob_patience: int = 1
    lr_floor: float = 1.25e-4
    grad_clip: float = 0.0
    # Spike-activity regulariser: loss += activity_reg * mean |output| of each hidden layer (0 = off).
    activity_reg: float = 0.0
    eval_max_len: int = 1000
    # Minibatches between progress-bar updates (each update syncs the device once).
    log_every: int = 50
    # Steps with a non-finite loss or gradient are skipped; this many in a row stop the run.
    max_nonfinite_steps: int = 10
    # Also checkpoint every this many minibatches inside an epoch (0 = only at epoch ends).
    checkpoint_every: int = 0
    # DataLoader worker processes reading features ahead of the model (0 = in the training
    # process).  Changes speed only, never a number: resume and repeats ignore it.
    workers: int = 0

    def check(self) -> None:
        _positive("train.epochs", self.epochs)
        if self.batch_size is None and self.batch_frames is None:
            raise ConfigError(
                "train.batch_size and train.batch_frames are both null; set one (the seed: batch_size 64)"
            )
        for name in ("batch_size", "batch_frames"):
            if getattr(self, name) is not None:
                _positive(f"train.{name}", getattr(self, name))
        if self.newbob_patience < 0:
            raise ConfigError(
                f"train.newbob_patience={self.newbob_patience}: must be >= 0 (0 = halve on the first stall)"
            )
        _positive("train.log_every", self.log_every)
        _positive("train.eval_max_len", self.eval_max_len)  # 0 would cut dev utterances forever
        _positive("train.max_nonfinite_steps", self.max_nonfinite_steps)
        if self.workers < 0:
            raise ConfigError(f"train.workers={self.workers}: must be >= 0 (0 = read in the training process)")
        if self.checkpoint_every < 0:
            raise ConfigError(f"train.checkpoint_every={self.checkpoint_every}: must be >= 0 (0 = at epoch ends only)")
        _finite_positive("train.lr", self.lr)
        _finite_positive("train.lr_floor", self.lr_floor)
        if self.lr_floor > self.lr:
            raise ConfigError(f"train.lr_floor={self.lr_floor}: must not exceed train.lr={self.lr}")
        if not 0.0 <= self.newbob_threshold < 1.0:
            raise ConfigError(f"train.newbob_threshold={self.newbob_threshold}: must be in [0, 1)")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ConfigError(f"train.grad_clip={self.grad_clip}: must be >= 0 (0 = no clipping)")
        if self.activity_reg < 0:
            raise ConfigError(f"train.activity_reg={self.activity_reg}: must be >= 0 (0 = off)")
        parse_curriculum(self.curriculum)


@dataclass
class DataConfig:
    train_set: str = "train"
    dev_set: str = "dev"
    # Label level to train on (a name listed in data/lang/labels.yaml); null = that file's default.
    label_level: str | None = None
    # CMVN (speaker/utt/none) is chosen by `snnasr features`; here only whether to normalise variances too.
    norm_vars: bool = False
    # Splice +-context frames around each frame (0 = none, as in the seed).
    context: int = 0

    def check(self) -> None:
        if self.context < 0:
            raise ConfigError(f"data.context={self.context}: must be >= 0")


def _default_model() -> ModelConfig:
    return model_section(ModelConfig.arch)


@dataclass
class LogConfig:
    # TensorBoard event files under exp/<run>/tensorboard/ (needs the [tensorboard] extra);
    # metrics.jsonl is written either way and stays the record.
    tensorboard: bool = False


@dataclass
class Config:
    """``task``: ``frame`` (a label per frame) or ``utterance`` (one label per utterance, the
    readout pooled as ``utterance`` says)."""

    model: ModelConfig = field(default_factory=_default_model)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: str = "frame"
    utterance: UtteranceConfig = field(default_factory=UtteranceConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 1

    def check(self) -> Config:
        self.model.check()
        self.train.check()
        self.data.check()
        _choice("task", self.task, TASKS)
        self.utterance.check()
        return self


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: choose one of {', '.join(choices)}")


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name}={value}: must be positive")


def _finite_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value}: must be a positive finite number")


def parse_curriculum(spec: str) -> list[tuple[int, int]]:
    """``"100*5|200*4"`` -> ``[(100, 5), (200, 4)]`` (max length, number of epochs)."""
    out = []
    for part in spec.split("|"):
        try:
            length, _, epochs = part.partition("*")
            out.append((int(length), int(epochs) if epochs else 1))
        except ValueError:
            raise ConfigError(f"train.curriculum={spec!r}: expected '<max_len>*<epochs>|...'") from None
        if out[-1][0] <= 0 or out[-1][1] <= 0:
            raise ConfigError(f"train.curriculum={spec!r}: lengths and epoch counts must be positive")
    return out


def _coerce(name: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{name}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _update(obj: Any, values: dict, prefix: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(type(obj))
    known = {f.name for f in fields(obj)}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in known:
            where = f" for arch {obj.arch}" if isinstance(obj, ModelConfig) else ""
            raise ConfigError(f"unknown config key {name!r}{where}; known: {', '.join(sorted(known))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _update(current, value, f"{name}.")
        else:
            setattr(obj, key, _coerce(name, value, hints[key]))


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict:
    """``["model.hidden=550"]`` -> ``{"model": {"hidden": 550}}`` (values parsed as YAML)."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. model.hidden=550")
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} was given a value earlier, it is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            reason = str(e).splitlines()[0]
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({reason}); quote it as text, e.g. {key}='\"{raw}\"'"
            ) from None
    return tree


def read_yaml_mapping(path: str | os.PathLike, what: str) -> dict:
    """A YAML file that must hold a mapping; every failure is one ConfigError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of {what} options")
    return values


def _arch_of(*trees: dict) -> str:
    """``model.arch`` as the last of ``trees`` that sets it says (else the default)."""
    arch = ModelConfig.arch
    for tree in trees:
        model = tree.get("model") if isinstance(tree, dict) else None
        if isinstance(model, dict) and "arch" in model:
            arch = str(model["arch"])
    return arch


def _with_arch(arch: str) -> Config:
    from snnasr.models.registry import arch_names

    _choice("model.arch", arch, arch_names())
    return Config(model=model_section(arch))


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = (), **section_defaults: dict
) -> Config:
    """Defaults, then ``section_defaults`` (e.g. ``model={"arch": "lif"}``), then the YAML, then overrides.

    The architecture is decided first (the last of these to set ``model.arch``), so that the
    ``model`` section takes that architecture's fields.
    """
    values = read_yaml_mapping(path, "config") if path is not None else {}
    tree = parse_overrides(overrides)
    cfg = _with_arch(_arch_of(section_defaults, values, tree))
    if section_defaults:
        _update(cfg, section_defaults, "")
    try:
        _update(cfg, values, "")
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    _update(cfg, tree, "")
    return cfg.check()


def config_from_dict(values: dict) -> Config:
    """Rebuild a Config saved with :func:`save_config` (e.g. from a checkpoint).

    Configs saved before the per-architecture sections carried every arch's model fields; the
    ones this arch's section lacks (:data:`LEGACY_MODEL_KEYS`) are dropped.
    """
    cfg = _with_arch(_arch_of(values))
    model = values.get("model")
    if isinstance(model, dict):
        known = {f.name for f in fields(cfg.model)}
        values = {**values, "model": {k: v for k, v in model.items() if k in known or k not in LEGACY_MODEL_KEYS}}
    _update(cfg, values, "")
    return cfg.check()


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    write_text(path, yaml.safe_dump(asdict(cfg), sort_keys=False))
