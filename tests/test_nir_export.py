"""snnasr export nir: the exported graph, read back and run by nirtorch, reproduces snnasr's spikes.

The model is trained (1 epoch) on real yes/no recordings with Kaldi's real alignments, with the
one configuration NIR expresses exactly: binary spikes, reset to zero, no input encoder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from yesno_fixture import TINY_TRAIN, yesno_recipe

from snnasr import cli as cli_module
from snnasr.cli import cli
from snnasr.config import load_config
from snnasr.io import ConfigError

nir = pytest.importorskip("nir", reason="the [nir] extra (nir) is not installed: pip install 'snnasr[nir]'")
nirtorch = pytest.importorskip("nirtorch", reason="nirtorch is not installed (part of snnasr's [dev] extra)")

from snnasr.nir_export import check_exportable, model_spikes  # noqa: E402

EXACT = ["model.n_bits=1", "model.threshold=0", "model.reset=zero", "model.input_encoding=none"]
TRAIN = [*TINY_TRAIN, "train.epochs=1"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """A yes/no recipe dir (2 real utterances, MFCC, pdf labels) with exp/lif trained to export."""
    root = yesno_recipe(tmp_path_factory.mktemp("nir"))
    args = ["train", "--arch", "lif", "-d", str(root), "model.lif_decay_init=0.9", *EXACT, *TRAIN]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return root


class _Integrator(torch.nn.Module):
    """NIR's LI / I / IF by forward Euler, in nirtorch's stateful-module convention."""

    def __init__(self, node, dt: float) -> None:
        super().__init__()
        self.kind = type(node).__name__
        as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))
        if self.kind in ("LI", "LIF"):
            self.gain, self.keep = as_t(dt / node.tau * node.r), as_t(1 - dt / node.tau)
        else:
            self.gain, self.keep = as_t(dt * node.r), torch.ones(())
        if self.kind in ("IF", "LIF"):
            self.threshold, self.reset = as_t(node.v_threshold), as_t(node.v_reset)

    def forward(self, x: torch.Tensor, state: tuple | None = None):
        v = self.keep * (torch.zeros_like(x) if state is None else state[0]) + self.gain * x
        if self.kind not in ("IF", "LIF"):
            return v, (v, v)
        z = (v > self.threshold).to(x.dtype)
        return z, (torch.where(z > 0, self.reset, v), z)  # the spikes ride along in the state, to be read


def test_exported_graph_reproduces_the_models_spikes_under_nirtorch(recipe: Path) -> None:
    out = recipe / "lif.nir"
    result = CliRunner().invoke(cli, ["export", "nir", "exp/lif", str(out), "-d", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "frames x neurons checked" in result.output

    from snnasr.checkpoint import load_model
    from snnasr.dataset import UtteranceDataset

    _, feats, _ = UtteranceDataset(recipe / "data" / "train_yesno", level="pdf")[0]
    x = feats.double().numpy()
    model, cfg, _ = load_model(recipe / "exp" / "lif", device="cpu")
    spikes, logits = model_spikes(model, x)

    graph = nir.read(out)
    assert float(graph.metadata["dt"]) == 0.01 and str(graph.metadata["arch"]) == "lif"
    kinds = {type(v).__name__ for v in graph.nodes.values()}
    assert kinds <= {"Input", "Output", "Affine", "LI", "I", "IF"} and "IF" in kinds
    got, y = _nirtorch_spikes(out, x)
    for n, layer in enumerate(spikes):
        assert layer.sum() > 0, "no spikes at all would make this check empty"
        full = np.zeros_like(layer)
        for name, z in got.items():
            if name.startswith(f"layer{n}."):
                full[:, np.asarray(graph.nodes[name].metadata["neurons"], dtype=int)] = z
        np.testing.assert_array_equal(full, layer)
    np.testing.assert_allclose(y, logits, rtol=1e-9, atol=1e-9)


def _affine(node) -> torch.nn.Linear:
    """nir.Affine as torch Linear.  nirtorch 2.6's default map leaves the bias at its random
    init (it assigns ``module.weight.bias``), so the map is given here."""
    module = torch.nn.Linear(node.weight.shape[1], node.weight.shape[0])
    module.weight.data = torch.from_numpy(np.asarray(node.weight, dtype=np.float64))
    module.bias.data = torch.from_numpy(np.asarray(node.bias, dtype=np.float64))
    return module


def _nirtorch_spikes(path: Path, x: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each IF node's spikes ``[T, n]`` and the output ``[T, C]``, the graph executed by nirtorch."""
    graph = nir.read(path)
    dt = float(graph.metadata["dt"])
    node_map = {cls: (lambda node, dt=dt: _Integrator(node, dt)) for cls in (nir.LI, nir.I, nir.IF, nir.LIF)}
    node_map[nir.Affine] = _affine
    net = nirtorch.nir_to_torch(graph, node_map, dtype=torch.float64)
    neurons = [k for k, v in graph.nodes.items() if isinstance(v, (nir.IF, nir.LIF))]
    state, outs, spikes = None, [], {k: [] for k in neurons}
    for x_t in torch.from_numpy(x):
        *ys, state = net(x_t[None], state)  # nirtorch returns each edge into Output apart: NIR sums them
        outs.append(sum(ys)[0].detach().numpy())
        for k in neurons:
            spikes[k].append(state[k.replace(".", "_")][1][0].numpy())
    return {k: np.stack(v) for k, v in spikes.items()}, np.stack(outs)


def test_neurons_without_synaptic_leak_become_an_integrator_group(tmp_path: Path) -> None:
    """β = 1 has no finite LI time constant: those neurons are exported as NIR I, the rest as LI."""
    from snnasr.models import build
    from snnasr.nir_export import build_graph

    cfg = load_config(None, ["model.arch=lif", "model.hidden=8", "model.lif_decay_init=0.8", *EXACT])
    torch.manual_seed(0)
    model = build("lif", cfg.model, 5, 4)
    model(torch.randn(40, 3, 5) * 2, torch.ones(40, 3, dtype=torch.bool))  # training mode: ranges and BN stats
    with torch.no_grad():
        model.layers[0].decay[[1, 4, 6]] = 1.0
        model.layers[1].decay[:] = 1.0
    model.eval()
    nir.write(tmp_path / "m.nir", build_graph(model, cfg.model))
    graph = nir.read(tmp_path / "m.nir")
    assert type(graph.nodes["layer0.integrator.synapse"]).__name__ == "I"
    assert graph.nodes["layer0.integrator.neuron"].metadata["neurons"].tolist() == [1, 4, 6]
    assert "layer1.leaky.synapse" not in graph.nodes
    x = np.random.default_rng(1).normal(size=(60, 5)) * 2
    spikes, logits = model_spikes(model, x)
    got, y = _nirtorch_spikes(tmp_path / "m.nir", x)
    for n, layer in enumerate(spikes):
        full = np.zeros_like(layer)
        for name, z in got.items():
            if name.startswith(f"layer{n}."):
                full[:, graph.nodes[name].metadata["neurons"].astype(int)] = z
        assert layer.sum() > 0
        np.testing.assert_array_equal(full, layer)
    np.testing.assert_allclose(y, logits, rtol=1e-9, atol=1e-9)


def test_scsr_with_skips_and_self_recurrence_reproduces_under_nirtorch(recipe: Path) -> None:
    """ScSr (binary spikes, hard reset, leak, gain, diagonal self-recurrence, skip connections)."""
    args = ["train", "--arch", "scsr", "-d", str(recipe), *TRAIN]
    assert CliRunner().invoke(cli, args).exit_code == 0
    out = recipe / "scsr.nir"
    result = CliRunner().invoke(cli, ["export", "nir", "exp/scsr", str(out), "-d", str(recipe)])
    assert result.exit_code == 0, result.output

    from snnasr.checkpoint import load_model
    from snnasr.dataset import UtteranceDataset

    _, feats, _ = UtteranceDataset(recipe / "data" / "train_yesno", level="pdf")[1]
    x = feats.double().numpy()
    model, _, _ = load_model(recipe / "exp" / "scsr", device="cpu")
    spikes, logits = model_spikes(model, x)
    graph = nir.read(out)
    assert (
        type(graph.nodes["layer1.neuron"]).__name__ == "LIF" and type(graph.nodes["layer1.self"]).__name__ == "Linear"
    )
    assert ("layer1.self", "layer1.neuron") in graph.edges and "layer1.weight_from_input" in graph.nodes  # skip
    got, y = _nirtorch_spikes(out, x)
    for n, layer in enumerate(spikes):
        assert layer.sum() > 0
        np.testing.assert_array_equal(got[f"layer{n}.neuron"], layer)
    np.testing.assert_allclose(y, logits, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "arch, overrides, part",
    [
        ("lif", [], "multi-bit spikes have no NIR primitive"),  # n_bits 6 and the sigma-delta encoder
        ("lif", ["model.n_bits=1", "model.threshold=0", "model.input_encoding=none"], "reset by subtraction"),
        ("lif", ["model.n_bits=1", "model.threshold=0", "model.reset=zero"], "input_encoding=sigma-delta"),
        ("proposed", ["model.n_bits=1", "model.threshold=0", "model.input_encoding=none"], "multiplicative gates"),
        ("lstm", [], "LSTM gates"),
    ],
)
def test_what_nir_cannot_express_is_refused_by_name(arch: str, overrides: list[str], part: str) -> None:
    cfg = load_config(None, [f"model.arch={arch}", *overrides])
    with pytest.raises(ConfigError, match=part):
        check_exportable(arch, cfg.model)


def test_cli_refusal_is_one_line_and_writes_nothing(recipe: Path, monkeypatch, capsys) -> None:
    args = ["train", "--arch", "lif", "--exp", "lif6", "-d", str(recipe), "model.input_encoding=none", *TRAIN]
    assert CliRunner().invoke(cli, args).exit_code == 0
    out = recipe / "lif6.nir"
    monkeypatch.setattr(sys, "argv", ["snnasr", "export", "nir", "exp/lif6", str(out), "-d", str(recipe)])
    with pytest.raises(SystemExit) as ex:
        cli_module.main()
    err = capsys.readouterr().err
    assert ex.value.code == 1 and err.startswith("snnasr export nir: model.n_bits=6: multi-bit spikes")
    assert err.count("\n") == 1 and not out.exists()
