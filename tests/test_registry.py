"""The architecture registry: one declaration per arch read by config, CLI, ops and bench; wiring."""

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from snnasr import ops
from snnasr.cli import cli
from snnasr.config import config_from_dict, load_config
from snnasr.io import ConfigError
from snnasr.models import build
from snnasr.models.layers import IntegratorReadout
from snnasr.models.registry import (
    AcousticModel,
    arch_names,
    bench_variants,
    get_arch,
    model_config,
    op_spec,
    reverse_index,
    wiring,
)


def test_every_arch_declares_config_layers_ops_and_bench():
    assert arch_names()[:4] == ("lstm", "gru", "lif", "proposed")
    for name in arch_names():
        arch = get_arch(name)
        model = build(name, model_config(name, hidden=4, layers=1), 3, 2)
        for spec in model.layer_specs():
            assert spec.kind in arch.ops
        assert arch.bench, name
    assert [v[0] for v in bench_variants()][:5] == ["lstm", "gru", "lif", "proposed", "proposed-v1"]


def test_unregistered_layer_kind_is_an_error_not_a_fallback():
    with pytest.raises(ConfigError, match="layer kind 'transformer'"):
        op_spec("transformer")
    with pytest.raises(ConfigError, match="registered kinds"):
        ops.layer_ops("transformer", 2, False, 1, 0, 1)

    class Mystery(nn.Module):
        def forward(self, x, mask):
            return x

    model = AcousticModel("lif", [Mystery()], nn.Identity(), 2, None)
    with pytest.raises(ConfigError, match="Mystery"):
        model.layer_specs()


def test_model_section_has_only_its_arch_fields():
    assert load_config(None, ["model.arch=lif", "model.lif_decay_init=0.5"]).model.lif_decay_init == 0.5
    assert load_config(None, ["model.recurrent=false"]).model.recurrent is False  # default arch: proposed
    with pytest.raises(ConfigError, match="'model.recurrent' for arch lif"):
        load_config(None, ["model.arch=lif", "model.recurrent=false"])
    with pytest.raises(ConfigError, match="for arch lstm"):
        load_config(None, ["model.arch=lstm", "model.n_bits=2"])
    with pytest.raises(ConfigError, match="choose one of lstm, gru, lif, proposed"):
        load_config(None, ["model.arch=rnn"])


def test_config_saved_before_the_sections_still_loads(tmp_path):
    flat = {  # a flat ModelConfig as runs saved it before, for an LSTM
        "arch": "lstm",
        "hidden": 8,
        "n_bits": 6,
        "threshold": 3,
        "surrogate": "ste-box",
        "input_encoding": "sigma-delta",
        "recurrent": True,
        "lif_decay_init": 1.0,
    }
    cfg = config_from_dict({"model": flat, "seed": 3})
    assert cfg.model.hidden == 8 and not hasattr(cfg.model, "n_bits")
    with pytest.raises(ConfigError, match="'model.bogus'"):
        config_from_dict({"model": {**flat, "bogus": 1}})


def test_cli_arch_choices_come_from_the_registry():
    result = CliRunner().invoke(cli, ["train", "--arch", "nope"])
    assert result.exit_code != 0
    assert all(name in result.output for name in arch_names())


def test_skip_wiring_sources_and_widths():
    assert wiring(3, False) == ([[0], [1], [2]], [3])
    assert wiring(3, True) == ([[0], [1, 0], [2, 1]], [3, 2])
    model = build("lif", model_config("lif", hidden=5, layers=3, skip=True), 4, 2)
    assert [s.n_in for s in model.layer_specs()] == [4, 5 + 4, 5 + 5]
    x, mask = torch.randn(6, 2, 4), torch.ones(6, 2, dtype=torch.bool)
    out = model(x, mask)
    assert torch.equal(out.layer_inputs[1][..., 5:], out.layer_inputs[0])  # the encoded input skips to layer 2
    assert torch.equal(out.readout_input, torch.cat([out.layer_outputs[2], out.layer_outputs[1]], dim=-1))


def test_reverse_index_keeps_padding_at_the_end():
    mask = torch.tensor([[True, True], [True, True], [True, False], [False, False]])
    assert reverse_index(mask).t().tolist() == [[2, 1, 0, 3], [1, 0, 2, 3]]


@pytest.mark.parametrize("arch", ["lstm", "lif", "proposed"])
def test_bidirectional_padded_batch_matches_each_sequence_alone(arch):
    torch.manual_seed(4)
    model = build(arch, model_config(arch, hidden=6, layers=2, dropout=0.0, bidirectional=True), 3, 4).eval()
    for q in model.modules():  # fixed spike ranges, so eval-mode SNNs are not all silent
        if hasattr(q, "range"):
            q.range.fill_(1.0)
    lengths = [5, 8]
    x = torch.randn(8, 2, 3)
    mask = torch.arange(8)[:, None] < torch.tensor(lengths)[None]
    batch = model(x * mask[..., None] + 9 * ~mask[..., None], mask)
    assert batch.layer_outputs[0].shape == (8, 2, 12) and model.layer_specs()[0].directions == 2
    for b, n in enumerate(lengths):
        alone = model(x[:n, b : b + 1], torch.ones(n, 1, dtype=torch.bool))
        assert torch.allclose(batch.logits[:n, b], alone.logits[:, 0], atol=1e-5)
        for lb, la in zip(batch.layer_outputs, alone.layer_outputs):
            assert torch.allclose(lb[:n, b], la[:, 0], atol=1e-5)
    # The backward half at frame 0 depends on later frames; the forward half does not.
    later = x.clone()
    later[3:] += 1.0
    other = model(later * mask[..., None], mask).layer_outputs[0]
    assert torch.allclose(other[:3, :, :6], batch.layer_outputs[0][:3, :, :6], atol=1e-6)
    assert not torch.allclose(other[:3, :, 6:], batch.layer_outputs[0][:3, :, 6:])


def test_steps_per_frame_holds_each_frame_and_averages_for_the_readout():
    model = build("lif", model_config("lif", hidden=4, layers=1, steps_per_frame=3, input_encoding="none"), 2, 3)
    model.eval()
    x, mask = torch.randn(5, 2, 2), torch.ones(5, 2, dtype=torch.bool)
    out = model(x, mask)
    assert out.logits.shape == (5, 2, 3) and out.layer_outputs[0].shape == (15, 2, 4)
    assert out.step_mask.shape == (15, 2)
    assert torch.equal(out.layer_inputs[0][3:6], out.layer_inputs[0][3:4].expand(3, 2, 2))
    assert torch.allclose(out.readout_input[1], out.layer_outputs[0][3:6].mean(0))


def test_integrator_readout_by_hand():
    ro = IntegratorReadout(1, 1, batchnorm=False, tau_init=2.0)
    with torch.no_grad():
        ro.linear.weight.fill_(1.0)
        ro.linear.bias.fill_(0.0)
    a = torch.exp(torch.tensor(-0.5))
    m = ro(torch.tensor([[[2.0]], [[0.0]], [[1.0]]]), torch.ones(3, 1, dtype=torch.bool))[:, 0, 0]
    m1 = (1 - a) * 2
    assert torch.allclose(m, torch.stack([m1, a * m1, a * a * m1 + (1 - a)]))
    with torch.no_grad():
        ro.tau.fill_(0.2)
    ro(torch.zeros(1, 1, 1), torch.ones(1, 1, dtype=torch.bool))
    assert float(ro.tau.detach()) == 1.0  # kept >= 1 frame
