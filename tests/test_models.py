"""Neuron equations, layer-vs-reference checks, masking, parameter counts and a tiny overfit."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from snnasr.io import ConfigError
from snnasr.models import LayerSpec, build
from snnasr.models.lif import LIFParams, LIFState, lif_reset_zero_step, lif_step
from snnasr.models.proposed import GatedParams, GatedSpikingLayer, GatedState, gated_step
from snnasr.models.registry import get_arch, model_config
from snnasr.models.spikes import QuantConfig, Quantizer, RangeState, quant_scale, quantize

# The tiny-set target below is memoryless: the LIF starts memoryless too (β = 0), since its
# decay, not any weight, is what carries memory (slow neurons only add noise here).
ARCHS = [
    ("lstm", {}),
    ("gru", {}),
    ("lif", {"lif_decay_init": 0.0, "lif_decay_init_max": None}),
    ("proposed", {"recurrent": True}),
    ("proposed", {"recurrent": False}),
]


def _cfg(arch: str, **values):
    """``arch``'s model section with those ``values`` it has (input_encoding exists for SNNs only)."""
    own = {f.name for f in dataclasses.fields(get_arch(arch).config)}
    return model_config(arch, **{k: v for k, v in values.items() if k in own})


def _frozen(n_bits: int, threshold: int, r: float) -> tuple[QuantConfig, RangeState]:
    """An eval-mode quantiser (no range tracking) at range ``r``, as the step functions take it."""
    zero = torch.zeros((), dtype=torch.float64)
    return QuantConfig(n_bits, threshold, "ste-box", 1.0, 0.1, False), RangeState(zero, zero, zero + r)


def _levels(s: torch.Tensor, rng: RangeState, cfg: QuantConfig) -> list:
    return torch.round(s * quant_scale(rng.range, cfg.n_bits)).long().tolist()


def test_lif_step_by_hand():
    # b=3, R=4: Δ ≈ 1, levels |q| <= 3, dead zone k=1 (fires when |v'| >= 2Δ).
    cfg, rng = _frozen(3, 1, 4.0)
    decay = torch.tensor([0.5, 1.0], dtype=torch.float64)
    drive = torch.tensor([[1.5, 0.5], [1.0, 0.5], [0.0, 0.6], [0.0, 5.0]], dtype=torch.float64)
    state = LIFState(torch.zeros(1, 2, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64), rng)
    levels = []
    for j in drive:
        s, state = lif_step((j[None],), state, LIFParams(decay, cfg), None)
        levels.append(_levels(s, rng, cfg)[0])
    # n0: v' = 1.5 (dead zone), 3.25 -> 3 (reset to .2497), 1.1247, 1.5622 (dead zone).
    # n1: v' = .5, 1.5, 3.1 -> 3, 6.6997 clipped to R -> 3 (top level); v keeps the excess.
    assert levels == [[0, 0], [3, 0], [0, 3], [0, 3]]
    delta = 1 / 0.9999
    assert torch.allclose(state.current, torch.tensor([[0.4375, 6.6]], dtype=torch.float64))
    assert torch.allclose(
        state.membrane,
        torch.tensor([[3.25 - 3 * delta + 0.875 + 0.4375, 3.1 - 3 * delta + 6.6 - 3 * delta]], dtype=torch.float64),
    )


def test_lif_reset_to_zero_by_hand():
    # b=1 (binary), R=2: Δ = 1/0.9999, fires when v' >= Δ; reset: zero sets v to 0 where it fired.
    cfg, rng = _frozen(1, 0, 2.0)
    decay = torch.tensor([0.5], dtype=torch.float64)
    state = LIFState(torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64), rng)
    fired = []
    for j in (0.6, 0.2, 0.9, 0.0):
        s, state = lif_reset_zero_step((torch.tensor([[j]], dtype=torch.float64),), state, LIFParams(decay, cfg), None)
        fired.append(_levels(s, rng, cfg)[0][0])
    # I = .6, .5, 1.15, .575; v' = .6, 1.1 (fires -> 0), 1.15 (fires -> 0), .575
    assert fired == [0, 1, 1, 0]
    assert torch.allclose(state.membrane, torch.tensor([[0.575]], dtype=torch.float64))


def test_gated_step_by_hand():
    cfg, rng = _frozen(3, 0, 4.0)
    delta = 1 / 0.9999
    u = torch.zeros(4, 2, dtype=torch.float64)
    u[2, 1] = 0.5  # candidate of neuron 0 sees 0.5 x neuron 1's previous spike
    pre_c = [(1.0, 2.5), (0.2, 2.5), (0.0, 0.0)]
    zero = torch.zeros(1, 2, dtype=torch.float64)
    state = GatedState(zero, zero, zero, rng)
    levels = []
    for c0, c1 in pre_c:  # forget pre-activations 0 -> z = 0.5
        pre = torch.tensor([[0.0, 0.0, c0, c1]], dtype=torch.float64)
        s, state = gated_step((pre,), state, GatedParams(u, None, cfg), None)
        levels.append(_levels(s, rng, cfg)[0])
    # h1 = (.5, 1.25); h2 = (.25 + .5 relu(.2 + .5Δ), 1.875); h3 = (.5 h2_0 + .5 (.5 * 2Δ), .9375)
    assert levels == [[0, 1], [1, 2], [0, 1]]
    h2_0 = 0.25 + 0.5 * (0.2 + 0.5 * delta)
    assert torch.allclose(state.trace, torch.tensor([[0.5 * h2_0 + 0.5 * delta, 0.9375]], dtype=torch.float64))
    assert torch.allclose(
        state.residual,
        torch.tensor(
            [[0.5 + h2_0 - delta + 0.5 * h2_0 + 0.5 * delta, 1.25 - delta + 1.875 - 2 * delta + 0.9375 - delta]],
            dtype=torch.float64,
        ),
    )


def reference_forward(layer: GatedSpikingLayer, x: torch.Tensor, mask: torch.Tensor, r: float) -> torch.Tensor:
    """Naive step-by-step gated SNN straight from the equations (indexing, explicit STE)."""
    h_dim = layer.hidden
    proj = torch.stack([x[t] @ layer.weight.t() for t in range(x.shape[0])])
    pz, pc = layer.norm_z(proj[..., :h_dim], mask), layer.norm_c(proj[..., h_dim:], mask)
    rr = torch.tensor(r, dtype=x.dtype)
    h = res = s = torch.zeros(x.shape[1], h_dim, dtype=x.dtype)
    out = []
    for t in range(x.shape[0]):
        gz, gc = pz[t], pc[t]
        if layer.recurrent:
            gz = gz + s @ layer.weight_rec[:h_dim].t()
            gc = gc + s @ layer.weight_rec[h_dim:].t()
        z = 1 / (1 + torch.exp(-gz))
        c = torch.clamp(gc, min=0)
        h = z * h + (1 - z) * c
        a = res + h
        clipped = torch.clamp(a, -rr, rr)
        s = clipped + (quantize(a.detach(), rr, layer.quantizer.n_bits, layer.quantizer.threshold) - clipped).detach()
        res = a - s
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("recurrent", [True, False])
def test_gated_layer_matches_reference(recurrent):
    torch.manual_seed(0)
    layer = (
        GatedSpikingLayer(5, 6, recurrent=recurrent, dropout=0.0, batchnorm=True, quantizer=Quantizer(4, 1))
        .double()
        .train()
    )
    layer.quantizer.eval()
    layer.quantizer.range.fill_(1.5)
    ref = copy.deepcopy(layer)
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    mask = torch.ones(7, 3, dtype=torch.bool)
    mask[5:, 0] = False
    w = torch.randn(7, 3, 6, dtype=torch.float64) * mask[..., None]
    out, expected = layer(x, mask), reference_forward(ref, x, mask, 1.5)
    assert torch.allclose(out * mask[..., None], expected * mask[..., None])
    assert (out != 0).any()
    (out * w).sum().backward()
    (expected * w).sum().backward()
    for (name, p), p_ref in zip(layer.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, p_ref.grad), name


def test_v1_has_no_recurrent_weights():
    model = build("proposed", model_config("proposed", hidden=8, recurrent=False), 4, 3)
    assert all(layer.weight_rec is None for layer in model.layers)
    assert not any("rec" in name for name, _ in model.named_parameters())
    assert [s.recurrent for s in model.layer_specs()] == [False, False]
    assert model.layer_specs()[0] == LayerSpec("proposed", 4, 8, False)


def _weights(model) -> int:
    return sum(
        p.numel() for n, p in model.named_parameters() if "weight" in n and p.dim() == 2 and not n.startswith("readout")
    )


def test_parameter_counts():
    f, h, c = 7, 10, 4
    counts = {}
    for arch, extra in ARCHS:
        cfg = _cfg(arch, hidden=h, layers=2, **extra)
        model = build(arch, cfg, f, c)
        counts[(arch, extra.get("recurrent"))] = _weights(model)
        total = sum(p.numel() for p in model.parameters())
        readout = h * c + 2 * c
        if arch == "lstm":
            assert total == 4 * (f * h + h * h) + 4 * (h * h + h * h) + 2 * 8 * h + 2 * (f + h) + readout
        if arch == "proposed" and extra["recurrent"]:
            assert total == 2 * (f * h + h * h) + 2 * (h * h + h * h) + 2 * 4 * h + readout
        if arch == "proposed" and not extra["recurrent"]:
            assert total == 2 * f * h + 2 * h * h + 2 * 4 * h + readout
        if arch == "lif":
            assert total == f * h + h * h + 2 * 3 * h + readout
    assert counts[("lstm", None)] == 4 * (f * h + h * h) + 4 * 2 * h * h
    assert counts[("gru", None)] == 3 * (f * h + h * h) + 3 * 2 * h * h
    assert counts[("proposed", True)] * 2 == counts[("lstm", None)]
    assert counts[("proposed", False)] == 2 * f * h + 2 * h * h


@pytest.mark.parametrize("arch, extra", ARCHS)
def test_gradients_reach_every_parameter(arch, extra):
    torch.manual_seed(1)
    model = build(arch, _cfg(arch, hidden=12, dropout=0.2, **extra), 6, 4).train()
    x = torch.randn(9, 3, 6)
    mask = torch.ones(9, 3, dtype=torch.bool)
    out = model(x, mask)
    assert out.logits.shape == (9, 3, 4) and len(out.layer_inputs) == len(out.layer_outputs) == 2
    assert out.layer_inputs[1] is out.layer_outputs[0]
    F.cross_entropy(out.logits.reshape(-1, 4), torch.randint(0, 4, (27,))).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch, extra", ARCHS)
def test_padding_changes_nothing_valid(arch, extra):
    torch.manual_seed(2)
    model = build(arch, _cfg(arch, hidden=10, dropout=0.0, **extra), 5, 3).train()
    twin = copy.deepcopy(model)
    lengths = [6, 9]
    x = torch.randn(9, 2, 5)
    mask = torch.arange(9)[:, None] < torch.tensor(lengths)[None]
    x_zero = x * mask[..., None]
    x_more = torch.cat([x + 50 * torch.randn_like(x) * ~mask[..., None], 7 * torch.randn(5, 2, 5)])
    mask_more = torch.cat([mask, torch.zeros(5, 2, dtype=torch.bool)])
    a, b = model(x_zero, mask), twin(x_more, mask_more)
    assert torch.allclose(a.logits[mask], b.logits[:9][mask], atol=1e-5)
    for la, lb in zip(a.layer_outputs, b.layer_outputs):
        assert torch.allclose(la[mask], lb[:9][mask], atol=1e-5)
    for (name, buf), buf2 in zip(model.named_buffers(), twin.buffers()):
        assert torch.allclose(buf.float(), buf2.float(), atol=1e-5), name  # BN stats and spike ranges


def test_bn_statistics_come_from_valid_frames_only():
    model = build("lstm", _cfg("lstm", hidden=4, layers=1, dropout=0.0), 3, 2).train()
    x = torch.randn(5, 2, 3)
    mask = torch.tensor([[True, True]] * 3 + [[True, False]] * 2)
    model(x * mask[..., None], mask)
    valid = x[mask]
    expected = 0.9 * torch.zeros(3) + 0.1 * valid.mean(0)
    assert torch.allclose(model.layers[0].norm.running_mean, expected, atol=1e-6)
    assert torch.allclose(model.layers[0].norm.running_var, 0.9 + 0.1 * valid.var(0), atol=1e-6)


def test_lif_decay_kept_in_unit_interval():
    model = build("lif", _cfg("lif", hidden=6, layers=1, dropout=0.0), 3, 2).train()
    layer = model.layers[0]
    opt = torch.optim.SGD(model.parameters(), lr=10.0)
    x, mask = torch.randn(4, 2, 3), torch.ones(4, 2, dtype=torch.bool)
    with torch.no_grad():
        layer.decay[:3] = 0.5
    (-(layer.decay[3:].sum()) + layer.decay[:3].sum()).backward()
    opt.step()
    assert layer.decay.max() > 1 and layer.decay.min() < 0
    model(x, mask)
    assert 0 <= float(layer.decay.detach().min()) and float(layer.decay.detach().max()) <= 1
    assert torch.equal(layer.decay, torch.tensor([0.0] * 3 + [1.0] * 3))


def test_bad_arch_and_dims():
    with pytest.raises(ConfigError, match="lstm"):
        build("transformer", _cfg("lif"), 4, 3)
    with pytest.raises(ConfigError):
        build("lif", _cfg("lif"), 0, 3)


def test_sigma_delta_input_encoding():
    model = build("proposed", _cfg("proposed", hidden=6, input_encoding="sigma-delta"), 4, 3).eval()
    model.encoder.quantizer.range.fill_(2.0)
    x = torch.full((50, 1, 4), 0.1)  # Δ = 2/32, dead zone 3: fires once the residual reaches 4Δ
    spikes = model(x, torch.ones(50, 1, dtype=torch.bool)).layer_inputs[0]
    # Sparse spikes whose running sum tracks the input's within the firing threshold.
    assert (spikes != 0).float().mean() < 0.5
    assert torch.all((spikes.sum(0) - x.sum(0)).abs() < 4 * 2.0 / 32)
    plain = build("proposed", _cfg("proposed", hidden=6, input_encoding="none"), 4, 3)
    assert plain(x, torch.ones(50, 1, dtype=torch.bool)).layer_inputs[0] is x


@pytest.mark.parametrize("arch, extra", ARCHS)
def test_overfits_tiny_set(arch, extra):
    torch.manual_seed(0)
    x = torch.randn(30, 4, 8)
    y = x[..., :5].argmax(-1)
    mask = torch.ones(30, 4, dtype=torch.bool)
    model = build(arch, _cfg(arch, hidden=32, layers=1, dropout=0.0, input_encoding="none", **extra), 8, 5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(1, 151):
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(x, mask).logits.reshape(-1, 5), y.reshape(-1)).backward()
        opt.step()
        if step % 25 == 0:
            with torch.no_grad():
                acc = (model.eval()(x, mask).logits.argmax(-1) == y).float().mean()
            if acc > 0.9:
                break
    assert acc > 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available: the GPU path is checked only on a GPU")
@pytest.mark.parametrize("arch, extra", ARCHS)
def test_cuda_matches_cpu(arch, extra):
    """Training-mode forward, backward and range tracking agree between CPU and CUDA."""
    torch.manual_seed(3)
    cpu = build(arch, _cfg(arch, hidden=16, dropout=0.0, **extra), 6, 4).double().train()
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.randn(12, 3, 6, dtype=torch.double)
    mask = torch.arange(12)[:, None] < torch.tensor([12, 8, 5])[None]
    a, b = cpu(x, mask), gpu(x.cuda(), mask.cuda())
    assert torch.allclose(a.logits[mask], b.logits.cpu()[mask], atol=1e-6)
    a.logits[mask].sum().backward()
    b.logits[mask.cuda()].sum().backward()
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        assert torch.allclose(p.grad, q.grad.cpu(), atol=1e-6), name
    for (name, buf), buf2 in zip(cpu.named_buffers(), gpu.buffers()):
        assert torch.allclose(buf.double(), buf2.cpu().double(), atol=1e-6), name


@pytest.mark.parametrize("padded", [False, True])
def test_batch_norm_blocks_equals_one_norm_per_block(padded):
    """The gated layer's two projections are normalised in one call: the same outputs,
    gradients and running statistics as one MaskedBatchNorm1d per half."""
    from snnasr.models.layers import MaskedBatchNorm1d, batch_norm_blocks

    torch.manual_seed(3)
    norms = [MaskedBatchNorm1d(4).double() for _ in range(2)]
    for n in norms:
        torch.nn.init.uniform_(n.weight, 0.5, 2.0), torch.nn.init.uniform_(n.bias, -1.0, 1.0)
    ref = copy.deepcopy(norms)
    x = torch.randn(6, 3, 8, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    mask = torch.ones(6, 3, dtype=torch.bool)
    if padded:
        mask[4:, 1] = False
    w = torch.randn(6, 3, 8, dtype=torch.float64)
    a = batch_norm_blocks(x, mask, norms)
    b = torch.cat([n(part.contiguous(), mask) for n, part in zip(ref, x2.chunk(2, dim=2))], dim=2)
    assert torch.allclose(a, b, atol=1e-12)
    (a * w).sum().backward()
    (b * w).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-12)
    for n, r in zip(norms, ref):
        assert torch.allclose(n.weight.grad, r.weight.grad, atol=1e-12)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.allclose(getattr(n, name).double(), getattr(r, name).double(), atol=1e-12), name
    for n, r in zip(norms, ref):
        n.eval(), r.eval()
    assert torch.allclose(
        batch_norm_blocks(x, mask, norms), torch.cat([n(p, mask) for n, p in zip(ref, x.chunk(2, 2))], 2)
    )
