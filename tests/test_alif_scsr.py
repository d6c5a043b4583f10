"""ALIF (Yin et al.) and ScSr (Zhang & Li) neurons on hand-computed steps; τ ranges, surrogate, ops."""

import pytest
import torch

from snnasr.config import load_config
from snnasr.io import ConfigError
from snnasr.models import build
from snnasr.models.alif import ALIFParams, ALIFState, alif_step, multi_normal
from snnasr.models.registry import model_config
from snnasr.models.scsr import ScSrParams, ScSrState, scsr_step
from snnasr.models.spikes import spike
from snnasr.ops import ActivationStats, count_ops


def _alif_run(drive, rec):
    p = ALIFParams(torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([[rec]]), 1.0, 2.0, "multi-gaussian", 1.0)
    state = ALIFState(torch.zeros(1, 1), torch.ones(1, 1), torch.zeros(1, 1))  # b_0 = b0 = 1
    rows = []
    for j in drive:
        s, state = alif_step(torch.tensor([[j]]), state, p)
        rows.append((float(state.adaptation), 1.0 + 2.0 * float(state.adaptation), float(state.membrane), float(s)))
    return rows


def test_alif_threshold_adaptation_and_reset_by_hand():
    # α = ρ = 0.5, b0 = 1, β = 2, no recurrence.  Per step: b, θ = b0 + βb, u, s.
    rows = _alif_run([4.0, 4.0, 4.0, 0.0], rec=0.0)
    expected = [
        (0.5, 2.0, 2.0, 0.0),  # b = .5·1; u = .5·4 = 2 = θ: no spike (strict >)
        (0.25, 1.5, 3.0, 1.0),  # u = .5·2 + 2 = 3 > 1.5
        (0.625, 2.25, 1.25, 0.0),  # b = .5·.25 + .5·1; u = 1.5 + 2 - θ·1 (reset by the current threshold)
        (0.3125, 1.625, 0.625, 0.0),  # no input: u leaks
    ]
    assert [v for r in rows for v in r] == pytest.approx([v for r in expected for v in r])
    # The recurrent weight adds W_rec·s_{t-1} to the input current: step 3 gets 4 + 1·1.
    assert _alif_run([4.0, 4.0, 4.0], rec=1.0)[2][2] == pytest.approx(1.5 + 0.5 * 5 - 2.25)


def test_scsr_self_recurrence_and_hard_reset_by_hand():
    # τ_m = 2 (λ = .5), gain 2, self weight .5, threshold 1.
    p = ScSrParams(torch.tensor([0.5]), torch.tensor([2.0]), torch.tensor([0.5]), 1.0, "fast-sigmoid", 0.5)
    state = ScSrState(torch.zeros(1, 1), torch.zeros(1, 1))
    got = []
    for i in (0.3, 0.3, 0.3, 0.1, -0.5):
        s, state = scsr_step(torch.tensor([[i]]), state, p)
        got += [float(state.membrane), float(s)]
    assert got == pytest.approx(
        [
            *(0.6, 0.0),
            *(0.9, 0.0),  # .5·.6 + .6
            *(1.05, 1.0),  # .45 + .6 > 1: spike
            *(1.2, 1.0),  # hard reset to 0, then 2·(.1 + .5·1): the self weight keeps it firing
            *(0.0, 0.0),  # reset again; 2·(-.5 + .5)
        ]
    )


def test_multi_gaussian_surrogate_shape():
    x = torch.linspace(-40, 40, 80001, dtype=torch.float64, requires_grad=True)  # step 1e-3, x[40000] = 0
    spike(x, "multi-gaussian").sum().backward()
    g = x.grad
    assert spike(torch.tensor([0.0, 1e-3]), "multi-gaussian").tolist() == [0.0, 1.0]  # H(x) = 1[x > 0]
    assert float(g[40000]) == pytest.approx(0.439, abs=1e-3) and int(g.argmax()) == 40000  # peak at 0
    assert float((g * 1e-3).sum()) == pytest.approx(0.425, abs=1e-3)  # γ(1 - h)
    assert float(g.min()) == pytest.approx(-0.016, abs=2e-3)  # small negative tails
    assert torch.allclose(g, g.flip(0))  # symmetric
    crossing = float(x.detach()[40000:][g[40000:] < 0][0])
    assert crossing == pytest.approx(1.27, abs=0.02)
    assert float(x.detach()[int(g.argmin())].abs()) == pytest.approx(1.86, abs=0.05)


def test_alif_presets_and_multi_normal_init():
    shd = build("alif", model_config("alif", hidden=10, layers=1, preset="shd"), 3, 2).layers[0]
    assert (shd.b0, shd.beta) == (0.01, 1.8)
    speech = build("alif", model_config("alif", hidden=10, layers=1, b0=1.0), 3, 2).layers[0]
    assert (speech.b0, speech.beta) == (1.0, 0.184)  # b0 overridden, β from the speech preset
    torch.manual_seed(0)
    tau = multi_normal(10, ((20, 0.0), (30, 0.0), (40, 0.0), (50, 0.0)))
    assert tau.tolist() == [20.0] * 3 + [30.0] * 3 + [40.0] * 2 + [50.0] * 2  # any width, contiguous groups
    with pytest.raises(ConfigError, match="model.preset"):
        load_config(None, ["model.arch=alif", "model.preset=timit"])


def _spiking_batch(arch, **cfg):
    torch.manual_seed(5)
    model = build(arch, model_config(arch, hidden=8, layers=2, dropout=0.0, **cfg), 4, 3).train()
    x = 3 * torch.randn(12, 2, 4)
    mask = torch.ones(12, 2, dtype=torch.bool)
    return model, x, mask


def test_alif_taus_get_gradients_and_stay_positive():
    model, x, mask = _spiking_batch("alif", preset="shd")
    out = model(x, mask)
    assert 0 < float(out.layer_outputs[0].detach().mean()) < 1  # binary spikes, some fire
    assert set(out.layer_outputs[0].unique().tolist()) <= {0.0, 1.0}
    out.logits.pow(2).sum().backward()
    layer = model.layers[0]
    assert layer.tau_m.grad.abs().sum() > 0 and layer.tau_adp.grad.abs().sum() > 0
    with torch.no_grad():
        layer.tau_m[:4] = -5.0
        layer.tau_adp[:4] = 0.1
    model(x, mask)
    assert float(layer.tau_m.detach().min()) == 1.0 and float(layer.tau_adp.detach().min()) == 1.0  # kept >= tau_min
    frozen = build("alif", model_config("alif", hidden=4, layers=1, learn_tau=False), 3, 2)
    assert not frozen.layers[0].tau_m.requires_grad


def test_scsr_intrinsic_parameters_get_gradients_and_stay_in_range():
    model, x, mask = _spiking_batch("scsr")
    out = model(x, mask)
    out.logits.pow(2).sum().backward()
    layer = model.layers[1]
    for p in (layer.tau_m, layer.gain, layer.self_weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    with torch.no_grad():
        layer.tau_m[:2] = torch.tensor([0.2, 500.0])
        layer.gain[:2] = torch.tensor([-1.0, 99.0])
    model(x, mask)
    assert layer.tau_m[:2].tolist() == [1.0, 64.0] and layer.gain[:2].tolist() == pytest.approx([0.1, 10.0])


def test_scsr_skip_wiring():
    model = build("scsr", model_config("scsr", hidden=5, layers=3), 4, 2)
    assert [s.n_in for s in model.layer_specs()] == [4, 5 + 4, 5 + 5]  # l-1 and l-2 (0 = input)
    out = model(torch.randn(6, 2, 4), torch.ones(6, 2, dtype=torch.bool))
    assert torch.equal(out.layer_inputs[2], torch.cat([out.layer_outputs[1], out.layer_outputs[0]], -1))
    assert out.readout_input.shape[-1] == 10  # the readout reads the last two layers
    plain = build("scsr", model_config("scsr", hidden=5, layers=3, skip=False), 4, 2)
    assert [s.n_in for s in plain.layer_specs()] == [4, 5, 5]


def test_alif_and_scsr_ops_by_hand():
    # One layer, H = 2, 2 frames: real-valued input (nnz 2 + 2), binary spikes out [1,0],[1,1].
    x = torch.tensor([[[0.5, 0.0, -1.0]], [[0.2, 0.3, 0.0]]])
    out = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])  # nnz 1 + 2; previous-step nnz 0 + 1
    mask = torch.ones(2, 1, dtype=torch.bool)
    stats = ActivationStats(1)
    stats.update(x, mask, [x], [out])
    spec = type("S", (), {"n_in": 3, "hidden": 2, "recurrent": True})
    spec.kind = "alif"
    alif = count_ops(stats, [spec], n_out=3)["layers"][0]
    # synaptic 4·2 = 8 MAC (real input), recurrent nnz_prev·H = 1·2 = 2 AC (own binary spikes), 8·2·2 = 32 MAC.
    assert (alif["synaptic"], alif["recurrent"], alif["elementwise"]) == (4.0, 1.0, 16.0)  # per frame
    assert (alif["mac"], alif["ac"]) == ((8 + 32) / 2, 2 / 2)
    spec.kind = "scsr"
    scsr = count_ops(stats, [spec], n_out=3)["layers"][0]
    # self recurrence: one weight per spiking neuron: nnz_prev = 1 AC; element-wise 5·2·2 = 20.
    assert (scsr["recurrent"], scsr["elementwise"], scsr["ac"]) == (0.5, 10.0, 0.5)
    assert scsr["total"] == pytest.approx((8 + 1 + 20) / 2)


@pytest.mark.parametrize("arch", ["alif", "scsr"])
def test_padding_and_bidirectional_invariance(arch):
    torch.manual_seed(6)
    model = build(arch, model_config(arch, hidden=6, dropout=0.0, bidirectional=True, steps_per_frame=2), 3, 4)
    model.eval()
    lengths = [4, 7]
    x = 3 * torch.randn(7, 2, 3)
    mask = torch.arange(7)[:, None] < torch.tensor(lengths)[None]
    batch = model(x + 9 * ~mask[..., None], mask)
    for b, n in enumerate(lengths):
        alone = model(x[:n, b : b + 1], torch.ones(n, 1, dtype=torch.bool))
        assert torch.allclose(batch.logits[:n, b], alone.logits[:, 0], atol=1e-5)
    assert bool(torch.isfinite(batch.logits[mask]).all())
