"""``snnasr export nir``: a trained SNN as a NIR graph, for neuromorphic hardware and other simulators.

NIR (Neuromorphic Intermediate Representation, ``nir`` on PyPI) describes networks in
continuous time with a fixed set of primitives; it has no multi-bit spikes, no reset by
subtraction and no adaptive threshold.  So only what NIR expresses exactly is exported, and
everything else is refused with one line naming the part (never a graph that computes another
function).  What is exported:

``--arch scsr`` (``models/scsr.py``; binary spikes, hard reset, strict threshold, as NIR's)::

    I_t = BN(W x_t)                   Affine (eval BN folded in), one per source with model.skip
    u_t = λ u_{t-1}(1 - s_{t-1}) + g (I_t + w s_{t-1});  s_t = 1[u_t > V_th]
                                      LIF(tau = dt τ_m, r = g τ_m, v_leak 0, v_threshold V_th,
                                      v_reset 0): Euler gives u_t = λ u + g·input with λ = 1 - 1/τ_m
    w ⊙ s_{t-1}                       Linear(diag(w)) on the cycle LIF -> Linear -> LIF (NIR
                                      recurrence: the edge that closes a cycle carries the last step)

``--arch lif`` with ``model.n_bits=1`` (binary spikes), ``model.reset=zero`` and
``model.input_encoding=none``.  Its layer (see ``models/lif.py``)::

    J = BN(W x)                       eval-mode BN folded in:   Affine(diag(γ/σ) W, b - γμ/σ)
    I_t = β I_{t-1} + J_t             synapse, per neuron:       LI(tau = dt/(1-β), r = tau/dt, v_leak 0)
                                                                 or, for β = 1, I(r = 1/dt)
    v'_t = v_{t-1} + I_t; spike when v'_t >= Δ; v_t = 0 then    neuron: IF(r = 1/dt, v_threshold Δ, v_reset 0)
    s_t = Δ · z_t                     the amplitude Δ goes into the next layer's weights

and the readout ``BN(W_o s)`` is an Affine to ``Output`` (per-frame logits).  The parameter
mapping is snnTorch's (``tau = dt/(1-β)``, ``r = tau/dt``), i.e. NIR's equations integrated by
forward Euler with step ``dt``, each node using this step's input (the order of the edges);
``dt`` (default 10 ms, Kaldi's frame shift) is recorded in the graph's metadata.  A layer whose
neurons mix β < 1 and β = 1 becomes two groups of nodes (LI and I), because LI cannot have an
infinite time constant; their outputs are summed where they meet, as NIR sums a node's inputs.
NIR fires at ``v > v_threshold``, snnasr at ``v >= Δ``: they differ only on a set of measure
zero.  The features fed to the graph are those ``snnasr eval`` feeds the model (CMVN applied,
context spliced), which stays outside the graph.

Before writing, the graph is simulated here (:func:`simulate`) on the first dev utterances (as
training fed them) and a random input, and must reproduce the model's spikes and logits;
tests/test_nir_export.py reads the file back with ``nir.read`` and runs it through nirtorch's
interpreter as an independent check.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from snnasr.io import ConfigError, DataError, SnnasrError

DEFAULT_DT = 0.01  # seconds: Kaldi's 10 ms frame shift

# What has no NIR primitive, per architecture that can never be exported.
NO_PRIMITIVE = {
    "lstm": "LSTM gates (sigmoid/tanh products, no spikes)",
    "gru": "GRU gates (sigmoid/tanh products, no spikes)",
    "proposed": "the gated SNN's multiplicative gates on multi-bit spikes",
    "alif": "an adaptive threshold (ALIF)",
}
EXACT_LIF = "model.n_bits=1 model.threshold=0 model.reset=zero model.input_encoding=none"
EXPORTABLE = f"--arch scsr and --arch lif ({EXACT_LIF}) export"


def _nir():
    try:
        import nir  # noqa: PLC0415
    except ImportError:
        raise SnnasrError("the nir package is not installed; pip install 'snnasr[nir]'") from None
    return nir


def check_exportable(arch: str, cfg: Any, task: str = "frame") -> None:
    """Raise ConfigError naming the first part of the model that NIR cannot express exactly."""
    if task != "frame":
        raise ConfigError(f"task={task}: only per-frame models export (the utterance pooling is not mapped to NIR)")
    if getattr(cfg, "bidirectional", False):
        raise ConfigError("model.bidirectional=true: a backward-in-time layer is not causal; NIR graphs run forward")
    for name, plain in (("readout", "linear"), ("steps_per_frame", 1)):
        if getattr(cfg, name, plain) != plain:
            raise ConfigError(
                f"model.{name}={getattr(cfg, name)}: no NIR mapping is implemented for it; train with model.{name}={plain}"
            )
    if arch in NO_PRIMITIVE:
        raise ConfigError(f"--arch {arch}: NIR has no primitive for {NO_PRIMITIVE[arch]}; {EXPORTABLE}")
    if arch == "scsr":
        return
    if arch != "lif":
        raise ConfigError(f"--arch {arch}: no NIR mapping is defined for it; {EXPORTABLE}")
    if cfg.input_encoding != "none":
        raise ConfigError(
            f"model.input_encoding={cfg.input_encoding}: its multi-bit spikes have no NIR primitive; "
            f"train with {EXACT_LIF}"
        )
    if cfg.n_bits != 1:
        raise ConfigError(
            f"model.n_bits={cfg.n_bits}: multi-bit spikes have no NIR primitive (NIR spikes are 0/1); "
            f"train with {EXACT_LIF}"
        )
    if cfg.reset != "zero":
        raise ConfigError(
            f"model.reset={cfg.reset}: reset by subtraction has no NIR primitive (NIR resets to v_reset); "
            f"train with {EXACT_LIF}"
        )


def _folded(weight: torch.Tensor, norm: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(W', b')`` with ``W' x + b' = BN_eval(W x)`` (or ``W x`` without BN), in float64."""
    w = weight.detach().double().cpu().numpy()
    if not isinstance(norm, torch.nn.BatchNorm1d):
        return w, np.zeros(w.shape[0])
    if norm.running_var is None or norm.running_mean is None:
        raise ConfigError("batch norm without running statistics normalises by each batch: no fixed function to export")
    inv = 1.0 / np.sqrt(norm.running_var.double().cpu().numpy() + norm.eps)
    gamma = norm.weight.detach().double().cpu().numpy() if norm.affine else np.ones(w.shape[0])
    beta = norm.bias.detach().double().cpu().numpy() if norm.affine else np.zeros(w.shape[0])
    mean = norm.running_mean.double().cpu().numpy()
    return (gamma * inv)[:, None] * w, beta - gamma * inv * mean


def spike_amplitude(quantizer: Any) -> float:
    """Δ of a binary quantiser in eval mode: its threshold and the value of a spike."""
    from snnasr.models.spikes import quant_scale  # noqa: PLC0415

    return float(1.0 / quant_scale(quantizer.range.double(), quantizer.n_bits))


def build_graph(model: Any, cfg: Any, dt: float = DEFAULT_DT, metadata: Mapping | None = None) -> Any:
    """The NIR graph of an exportable model (see the module docstring).

    A *signal* is what a layer reads: the network input or a layer's output, as a list of
    ``(node, positions in the signal's vector, spike amplitude)``; a layer reading several
    signals (``model.skip``) reads their concatenation, as the model does.
    """
    nir = _nir()
    check_exportable(model.arch, cfg)
    n_in = model.layers[0].n_in
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array([n_in]))}
    edges: list[tuple[str, str]] = []
    signals = [[("input", np.arange(n_in), 1.0)]]
    layer_nodes = {"lif": _lif_nodes, "scsr": _scsr_nodes}[model.arch]
    for n, (layer, src) in enumerate(zip(model.layers, model.sources)):
        signals.append(layer_nodes(nir, nodes, edges, n, layer, _concat([signals[j] for j in src]), dt))
    w, b = _folded(model.readout.weight, model.readout.norm)
    _connect(nir, nodes, edges, _concat([signals[j] for j in model.readout_sources]), w, b, "output", "readout")
    nodes["output"] = nir.Output(output_type=np.array([w.shape[0]]))
    meta = {"dt": float(dt), "source": "snnasr", "arch": model.arch, **(metadata or {})}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def _concat(signals: list[list[tuple[str, np.ndarray, float]]]) -> list[tuple[str, np.ndarray, float]]:
    """The groups of several signals as positions in their concatenation."""
    out, offset = [], 0
    for groups in signals:
        out += [(node, idx + offset, amp) for node, idx, amp in groups]
        offset += sum(idx.size for _, idx, _ in groups)
    return out


def _lif_nodes(nir: Any, nodes: dict, edges: list, n: int, layer: Any, sources: list, dt: float) -> list:
    """``lif``: Affine -> LI (β < 1) or I (β = 1) synapse -> IF neuron, per group of neurons."""
    w, b = _folded(layer.weight, layer.norm)
    beta = layer.decay.detach().clamp(0.0, 1.0).double().cpu().numpy()
    delta = spike_amplitude(layer.quantizer)
    outputs = []
    for kind, idx in (("leaky", np.flatnonzero(beta < 1)), ("integrator", np.flatnonzero(beta >= 1))):
        if idx.size == 0:
            continue
        name = f"layer{n}.{kind}"
        _connect(nir, nodes, edges, sources, w[idx], b[idx], f"{name}.synapse", name)
        if kind == "leaky":
            tau = dt / (1.0 - beta[idx])
            nodes[f"{name}.synapse"] = nir.LI(tau=tau, r=tau / dt, v_leak=np.zeros(idx.size))
        else:
            nodes[f"{name}.synapse"] = nir.I(r=np.full(idx.size, 1.0 / dt))
        nodes[f"{name}.neuron"] = nir.IF(
            r=np.full(idx.size, 1.0 / dt),
            v_threshold=np.full(idx.size, delta),
            v_reset=np.zeros(idx.size),
            metadata={"neurons": idx, "spike_amplitude": delta},  # which of the layer's neurons these are
        )
        edges.append((f"{name}.synapse", f"{name}.neuron"))
        outputs.append((f"{name}.neuron", idx, delta))
    return outputs


def _scsr_nodes(nir: Any, nodes: dict, edges: list, n: int, layer: Any, sources: list, dt: float) -> list:
    """``scsr``: Affine -> LIF (leak λ = 1 - 1/τ_m, gain g, reset to 0, strict threshold), and the
    self-recurrence ``w ⊙ s_{t-1}`` as a diagonal Linear on a cycle LIF -> Linear -> LIF."""
    w, b = _folded(layer.weight, layer.norm)
    tau_m = layer.tau_m.detach().clamp(*layer.tau_range).double().cpu().numpy()
    gain = layer.gain.detach().clamp(*layer.gain_range).double().cpu().numpy()
    h, name = tau_m.size, f"layer{n}"
    _connect(nir, nodes, edges, sources, w, b, f"{name}.neuron", name)
    nodes[f"{name}.neuron"] = nir.LIF(
        tau=dt * tau_m,
        r=gain * tau_m,
        v_leak=np.zeros(h),
        v_threshold=np.full(h, float(layer.threshold)),
        v_reset=np.zeros(h),
        metadata={"neurons": np.arange(h), "spike_amplitude": 1.0},
    )
    nodes[f"{name}.self"] = nir.Linear(weight=np.diag(layer.self_weight.detach().double().cpu().numpy()))
    edges += [(f"{name}.neuron", f"{name}.self"), (f"{name}.self", f"{name}.neuron")]
    return [(f"{name}.neuron", np.arange(h), 1.0)]


def _connect(nir, nodes: dict, edges: list, sources: list, w: np.ndarray, b: np.ndarray, dst: str, name: str) -> None:
    """Weights from every source group into ``dst``: one Affine per group, the bias on the first."""
    for k, (src, idx, amplitude) in enumerate(sources):
        node = f"{name}.weight" if len(sources) == 1 else f"{name}.weight_from_{src.rsplit('.', 1)[0]}"
        bias = b if k == 0 else np.zeros_like(b)
        nodes[node] = nir.Affine(weight=w[:, idx] * amplitude, bias=bias)
        edges += [(src, node), (node, dst)]


def simulate(graph, x: np.ndarray, dt: float | None = None) -> dict[str, np.ndarray]:
    """Outputs ``[T, ...]`` of every node for input ``x`` ``[T, F]``: NIR's equations by forward Euler.

    A reference integrator for the node types this module writes (Input, Output, Affine,
    Linear, LI, I, IF, LIF).  Within a step nodes run in topological order and sum their
    inputs; an edge that closes a cycle (a recurrence) delivers its source's output of the
    previous step, as nirtorch does.  ``dt`` defaults to the graph's metadata.
    """
    nir = _nir()
    dt = float(graph.metadata["dt"]) if dt is None else dt
    preds: dict[str, list[str]] = {name: [] for name in graph.nodes}
    for src, dst in graph.edges:
        preds[dst].append(src)
    order = _topological(preds)
    state: dict[str, Any] = {name: 0.0 for name in graph.nodes}
    prev: dict[str, Any] = {  # what a recurrence delivers at t = 0
        name: np.zeros(tuple(int(d) for d in node.output_type["output"])) for name, node in graph.nodes.items()
    }
    out: dict[str, list[np.ndarray]] = {name: [] for name in graph.nodes}
    for x_t in np.asarray(x, dtype=np.float64):
        now: dict[str, Any] = {}
        for name in order:
            node = graph.nodes[name]
            u = x_t if isinstance(node, nir.Input) else sum(now[p] if p in now else prev[p] for p in preds[name])
            if isinstance(node, nir.Affine):
                y = node.weight @ u + node.bias
            elif isinstance(node, nir.Linear):
                y = node.weight @ u
            elif isinstance(node, nir.LI):
                y = state[name] = state[name] + dt / node.tau * (node.v_leak - state[name] + node.r * u)
            elif isinstance(node, nir.I):
                y = state[name] = state[name] + dt * node.r * u
            elif isinstance(node, (nir.IF, nir.LIF)):
                if isinstance(node, nir.IF):
                    v = state[name] + dt * node.r * u
                else:
                    v = state[name] + dt / node.tau * (node.v_leak - state[name] + node.r * u)
                y = (v > node.v_threshold).astype(np.float64)
                state[name] = np.where(y > 0, node.v_reset, v)
            elif isinstance(node, (nir.Input, nir.Output)):
                y = u
            else:
                raise DataError(f"NIR node {name}: {type(node).__name__} is not simulated by snnasr")
            now[name] = y
        for name, y in now.items():
            out[name].append(np.asarray(y))
        prev = now
    return {name: np.stack(ys) for name, ys in out.items()}


def _topological(preds: dict[str, list[str]]) -> list[str]:
    """Nodes after their inputs; an input reached again on the current path is a recurrence."""
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done or name in path:
            return
        for p in preds[name]:
            visit(p, (*path, name))
        done.add(name)
        order.append(name)

    for name in preds:
        visit(name, ())
    return order


def model_spikes(model: Any, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The model's own binary spikes per layer ``[T, H]`` and logits ``[T, C]`` for ``x`` ``[T, F]`` (float64)."""
    model = model.double().eval()
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))[:, None, :]
    with torch.no_grad():
        out = model(xt, torch.ones(xt.shape[:2], dtype=torch.bool))
    return [(s[:, 0] != 0).double().numpy() for s in out.layer_outputs], out.logits[:, 0].numpy()


def graph_spikes(graph, outputs: Mapping[str, np.ndarray], n_layers: int) -> list[np.ndarray]:
    """Each layer's spikes ``[T, H]`` in neuron order, gathered from its neuron groups' outputs."""
    layers = []
    for n in range(n_layers):
        names = [k for k in graph.nodes if k.startswith(f"layer{n}.") and k.endswith(".neuron")]
        idx = [np.asarray(graph.nodes[k].metadata["neurons"], dtype=int) for k in names]
        full = np.zeros((outputs[names[0]].shape[0], sum(i.size for i in idx)))
        for name, i in zip(names, idx):
            full[:, i] = outputs[name]
        layers.append(full)
    return layers


def export_nir(
    exp: str | os.PathLike, out: str | os.PathLike, recipe_dir: str | os.PathLike = ".", dt: float = DEFAULT_DT
) -> dict[str, Any]:
    """Write ``exp``'s model as a NIR file ``out``; return counts for the CLI.

    Raises ConfigError (one line naming the part NIR cannot express) before writing anything,
    and DataError if the graph fails to reproduce the model's spikes on a random input.
    """
    from snnasr.checkpoint import load_model  # noqa: PLC0415
    from snnasr.evaluate import resolve_exp  # noqa: PLC0415

    nir = _nir()
    if not dt > 0:
        raise ConfigError(f"--dt {dt}: the time step must be positive (seconds)")
    exp_dir = resolve_exp(Path(exp), Path(recipe_dir))
    model: Any
    model, cfg, meta = load_model(exp_dir, device="cpu")
    check_exportable(model.arch, cfg.model, cfg.task)
    extra = {"level": str(meta.get("level", "")), "context": int(cfg.data.context)}
    graph = build_graph(model, cfg.model, dt, extra)

    checked = fired = 0
    for where, x in _check_inputs(Path(recipe_dir), cfg, meta.get("level"), model.layers[0].n_in):
        spikes, logits = model_spikes(model, x)
        sim = simulate(graph, x)
        got = graph_spikes(graph, sim, len(model.layers))
        mismatch = sum(int((a != b).sum()) for a, b in zip(spikes, got))
        if mismatch or not np.allclose(sim["output"], logits, rtol=1e-6, atol=1e-6):
            raise DataError(
                f"{exp_dir}: the NIR graph does not reproduce the model ({mismatch} spikes differ on {where}); "
                f"this is a bug in snnasr's exporter: please report it"
            )
        checked += sum(s.size for s in spikes)
        fired += int(sum(s.sum() for s in spikes))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        nir.write(str(tmp), graph)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return {
        "nodes": len(graph.nodes),
        "edges": len(graph.edges),
        "layers": len(model.layers),
        "frames x neurons checked": checked,
        "spikes among them": fired,
    }


def _check_inputs(recipe_dir: Path, cfg: Any, level: str | None, n_in: int, utterances: int = 5):
    """Inputs to check the graph on: the first dev utterances as training saw them, and a random one."""
    from snnasr.dataset import UtteranceDataset  # noqa: PLC0415

    dev = recipe_dir / "data" / cfg.data.dev_set
    if (dev / "feats.scp").is_file():
        try:
            data = UtteranceDataset(dev, level=level, norm_vars=cfg.data.norm_vars, context=cfg.data.context)
        except SnnasrError:
            data = None  # no labels or lang here: the random input below still checks the graph
        if data is not None and data.dim == n_in:
            for i in range(min(utterances, len(data))):
                uttid, feats, _ = data[i]
                yield f"dev utterance {uttid}", feats.double().numpy()
    yield "a random input", np.random.default_rng(0).normal(size=(200, n_in)) * 2.0
