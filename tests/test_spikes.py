"""Quantiser levels, range tracking, straight-through gradient and the surrogate registry."""

import pytest
import torch

from snnasr.io import ConfigError
from snnasr.models.spikes import (
    SURROGATES,
    Quantizer,
    RangeState,
    get_surrogate,
    quant_scale,
    quantize,
    quantize_at,
    spike,
    track_range,
)


def _levels(n_bits: int, threshold: int) -> set[int]:
    r = torch.tensor(10.0, dtype=torch.float64)
    a = torch.linspace(-12, 12, 20001, dtype=torch.float64)
    s = quantize(a, r, n_bits, threshold)
    return set(torch.round(s * quant_scale(r, n_bits)).long().tolist())


@pytest.mark.parametrize(
    "n_bits, threshold, expected",
    [
        (1, 0, {0, 1}),
        (2, 0, {-1, 0, 1}),
        (3, 0, set(range(-3, 4))),
        (3, 1, {-3, -2, 0, 2, 3}),
        (6, 3, {0} | set(range(4, 32)) | set(range(-31, -3))),
    ],
)
def test_levels(n_bits, threshold, expected):
    assert _levels(n_bits, threshold) == expected


def test_one_bit_is_binary_spike_of_half_range():
    r = torch.tensor(4.0, dtype=torch.float64)
    delta = 1 / quant_scale(r, 1)
    s = quantize(torch.tensor([-3.0, 0.5, 1.9, 2.1, 3.9, 7.0], dtype=torch.float64), r, 1, 0)
    assert torch.allclose(s, torch.tensor([0, 0, 0, 1, 1, 1], dtype=torch.float64) * delta)
    assert abs(float(delta) - 2.0) < 1e-3


def test_dead_zone_and_truncation_toward_zero():
    r = torch.tensor(32.0, dtype=torch.float64)  # b=6: Δ ≈ 1
    s = quantize(torch.tensor([3.5, 4.5, -4.5, -3.99, 31.5, 100.0], dtype=torch.float64), r, 6, 3)
    q = torch.round(s * quant_scale(r, 6)).tolist()
    assert q == [0, 4, -4, 0, 31, 31]


def test_zero_range_is_replaced():
    s = quantize(torch.tensor([0.5, 1.5]), torch.tensor(0.0), 2, 0)  # R := n_b = 2, Δ ≈ 1
    assert torch.allclose(s, torch.tensor([0.0, 1.0]), atol=1e-3)


@pytest.mark.parametrize("n_bits, threshold", [(1, 1), (2, 1), (6, 31), (0, 0)])
def test_impossible_dead_zone_rejected(n_bits, threshold):
    with pytest.raises(ConfigError):
        Quantizer(n_bits, threshold)


def test_ema_update_and_bias_correction():
    q = Quantizer(6, 0, momentum=0.1).train()
    q(torch.tensor([[-2.0, 1.0]]))
    assert torch.allclose(q.ema, torch.tensor([-0.2, 0.1]))
    assert float(q.range) == pytest.approx(2.0)  # n=1: M / 0.1
    q(torch.tensor([[-1.0, 4.0]]))
    m_min, m_max = 0.9 * -0.2 + 0.1 * -1.0, 0.9 * 0.1 + 0.1 * 4.0
    assert torch.allclose(q.ema, torch.tensor([m_min, m_max]))
    assert float(q.calls) == 2
    assert float(q.range) == pytest.approx(max(abs(m_min), abs(m_max)) / (1 - 0.9**2))
    assert {"ema", "calls", "range"} <= set(q.state_dict())


def test_host_and_device_range_states_follow_the_same_equations():
    """CPU loops keep the range as host floats, other devices as 0-dim tensors (no sync): the
    same EMA, bias correction and R, step after step, with and without padded rows."""
    torch.manual_seed(0)
    q = Quantizer(6, 3, momentum=0.1).double().train()
    cfg, host = q.config(), q.start(torch.float64)
    assert isinstance(host.lo, float)
    zero = torch.zeros((), dtype=torch.float64)
    device = RangeState(zero, zero, zero + float(q.range))
    for k, m in enumerate(q.plan([True] * 5)):
        a = torch.randn(4, 7, dtype=torch.float64) * (k + 1)
        if k % 2:
            m = m._replace(rows=torch.tensor([False, True, True, False]), fill=1)
        host = track_range(a, host, m, cfg)
        device = track_range(a, device, m._replace(corr=torch.tensor(m.corr, dtype=torch.float64)), cfg)
        for x, y in zip(host, device):
            assert x == pytest.approx(float(y), rel=1e-12)


def test_floor_form_of_q_equals_trunc_when_inputs_are_non_negative():
    a = torch.linspace(-3, 40, 5001, dtype=torch.float64)
    r = torch.tensor(30.0, dtype=torch.float64)
    for n_bits, k in ((6, 3), (1, 0), (3, 0)):
        ref = quantize_at(a, r, n_bits, k)
        assert torch.equal(quantize_at(a.clamp(min=0), 30.0, n_bits, k, a_min=0.0), ref.clamp(min=0))
        assert torch.equal(quantize_at(a, 30.0, n_bits, k), ref)


def test_range_frozen_in_eval_and_padding_rows_ignored():
    q = Quantizer(6, 0).train()
    q(torch.tensor([[1.0, -3.0], [50.0, 50.0]]), valid=torch.tensor([True, False]))
    assert float(q.range) == pytest.approx(3.0)
    q(torch.tensor([[9.0, 9.0]]), valid=torch.tensor([False]))  # all padding: no update
    assert float(q.calls) == 1 and float(q.range) == pytest.approx(3.0)
    q.eval()
    q(torch.tensor([[100.0]]))
    assert float(q.range) == pytest.approx(3.0) and float(q.calls) == 1


def test_ste_gradient_is_one_inside_range_zero_outside():
    q = Quantizer(6, 3).eval()
    q.range.fill_(2.0)
    a = torch.tensor([-3.0, -1.0, 0.01, 0.5, 1.99, 2.5], requires_grad=True)
    q(a).sum().backward()
    assert a.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_surrogates_by_name(name):
    g = get_surrogate(name)
    x = torch.linspace(-60, 60, 240001, dtype=torch.float64)
    integral = float(torch.trapezoid(g(x, 1.0), x))
    assert integral == pytest.approx(0.425 if name == "multi-gaussian" else 1.0, abs=0.02)
    assert float(g(torch.tensor(0.0), 1.0)) >= float(g(torch.tensor(0.7), 1.0))
    assert torch.allclose(g(x[:10], 1.0), g(-x[:10], 1.0))
    # Heaviside forward, surrogate backward.
    v = torch.tensor([-0.3, 0.0, 0.2], requires_grad=True)
    out = spike(v, name)
    assert out.tolist() == [0.0, 0.0, 1.0]
    out.sum().backward()
    assert torch.allclose(v.grad, g(v.detach(), 1.0))
    # Quantiser with this surrogate: gradient near the firing level, none outside the range.
    q = Quantizer(3, 0, surrogate=name).eval()
    q.range.fill_(4.0)
    a = torch.tensor([0.9, 5.0], requires_grad=True)
    q(a).sum().backward()
    assert a.grad[0] > 0 and a.grad[1] == 0


def test_unknown_surrogate_lists_choices():
    with pytest.raises(ConfigError, match="ste-box.*atan"):
        get_surrogate("sigmoidish")
    with pytest.raises(ConfigError):
        Quantizer(surrogate="nope")
