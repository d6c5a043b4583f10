"""Operation counts against hand arithmetic, and activation statistics over valid frames only."""

from types import SimpleNamespace

import pytest
import torch

from snnasr import ops
from snnasr.evaluate import ActivationStats, count_ops
from snnasr.io import ConfigError


def spec(kind, n_in, hidden, recurrent=True):
    return SimpleNamespace(kind=kind, n_in=n_in, hidden=hidden, recurrent=recurrent)


# Two frames, H = 3, input nnz 2 and 3 (total 5).
def test_lstm_and_gru_formulas():
    lstm = ops.layer_ops("lstm", 3, True, nnz_in=5, nnz_prev=0, frames=2)
    # 5*4*3 = 60 input, 2*4*3^2 = 72 dense recurrent, 2*12*3 = 72 element-wise.
    assert (lstm.synaptic, lstm.recurrent, lstm.elementwise, lstm.total) == (60, 72, 72, 204)
    assert (lstm.mac, lstm.ac) == (204, 0)
    gru = ops.layer_ops("gru", 3, True, nnz_in=5, nnz_prev=0, frames=2)
    assert (gru.synaptic, gru.recurrent, gru.elementwise, gru.total) == (45, 54, 72, 171)
    # Even with binary input, the dense recurrent part and element-wise updates stay MACs.
    gru_bin = ops.layer_ops("gru", 3, True, nnz_in=5, nnz_prev=0, frames=2, input_binary=True)
    assert (gru_bin.ac, gru_bin.mac) == (45, 126)


def test_vanilla_snn_formula_and_ac_for_binary_input():
    lif = ops.layer_ops("lif", 4, False, nnz_in=3, nnz_prev=7, frames=2, input_binary=True)
    assert (lif.synaptic, lif.recurrent, lif.elementwise) == (12, 0, 48)
    assert (lif.ac, lif.mac) == (12, 48)
    multibit = ops.layer_ops("lif", 4, False, nnz_in=3, nnz_prev=7, frames=2, input_binary=False)
    assert (multibit.ac, multibit.mac) == (0, 60)


# Proposed, H = 2, three frames, input nnz total 4, own previous output nnz total 2.
@pytest.mark.parametrize(
    "recurrent, convention, expected",
    [
        (True, "honest", 2 * 4 * 2 + 2 * 2 * 2 + 8 * 2 * 3),  # 16 + 8 + 48 = 72
        (False, "honest", 2 * 4 * 2 + 8 * 2 * 3),  # v1: no recurrent weights: 64
        (True, "official", 2 * 4 * 2 + 2 * 4 * 2 + 8 * 2 * 3),  # quirk: input nnz twice: 80
        (False, "official", 80),  # same formula for v1
    ],
)
def test_proposed_honest_vs_official(recurrent, convention, expected):
    got = ops.layer_ops("proposed", 2, recurrent, nnz_in=4, nnz_prev=2, frames=3, convention=convention)
    assert got.total == expected
    assert got.mac + got.ac == got.total


def test_proposed_mac_ac_split_follows_input_and_own_output():
    both = ops.layer_ops("proposed", 2, True, 4, 2, 3, input_binary=True, output_binary=True)
    assert (both.ac, both.mac) == (16 + 8, 48)
    only_in = ops.layer_ops("proposed", 2, True, 4, 2, 3, input_binary=True, output_binary=False)
    assert (only_in.ac, only_in.mac) == (16, 8 + 48)


def test_readout_reference_params_and_energy():
    ro = ops.readout_ops(5, nnz_in=6)
    assert (ro.total, ro.mac, ro.ac) == (30, 30, 0)
    assert ops.readout_ops(5, nnz_in=6, input_binary=True).ac == 30
    specs = [spec("proposed", 4, 3), spec("proposed", 3, 3)]
    layers, readout = ops.dense_reference("lstm", specs, n_out=5, nnz_features=8, frames=2)
    # Layer 1 sees the real feature nnz (8); layer 2 and the readout see dense h (3 per frame).
    assert layers[0].total == 4 * 3 * 8 + 2 * (4 * 9 + 12 * 3)
    assert layers[1].total == 4 * 3 * 6 + 2 * (4 * 9 + 12 * 3)
    assert readout.total == 5 * 6
    # nn.LSTM(4, 3) has 4*(4*3 + 3*3 + 2*3) = 108 parameters; layer 2: 4*(9 + 9 + 6) = 96; readout 3*5 + 5.
    assert ops.rnn_params("lstm", specs, 5) == 108 + 96 + 20
    assert ops.energy_pj(10, 100, "45nm-fp32") == pytest.approx(10 * 4.6 + 100 * 0.9)
    assert ops.energy_pj(10, 100, "45nm-int8") == pytest.approx(10 * 0.23 + 100 * 0.03)
    with pytest.raises(ConfigError):
        ops.energy_pj(1, 1, "7nm")
    with pytest.raises(ConfigError):
        ops.layer_ops("proposed", 2, True, 1, 1, 1, convention="paper")


def _acts():
    """T=3, B=2, H=2; utterance 0 has 3 frames, utterance 1 has 2 (frame 2 is padding)."""
    out = torch.tensor(
        [[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [2.0, 0.0]], [[0.0, 0.0], [9.0, 9.0]]]
    )  # [2, 1] is padding
    mask = torch.tensor([[True, True], [True, True], [True, False]])
    return out, mask


def test_nnz_prev_and_zero_fraction_over_valid_frames():
    out, mask = _acts()
    assert ops.nnz_total(out, mask) == 1 + 2 + 1 + 0
    # t=1 sees t=0 (utt0: 1, utt1: 0); t=2 (utt0 only) sees t=1 (2). t=0 counts 0.
    assert ops.prev_nnz_total(out, mask) == 1 + 0 + 2
    assert ops.zero_counts(out, mask) == (10 - 4, 10)
    assert ops.is_binary(ops.nonzero_range(out, mask)) is False
    assert ops.is_binary(ops.nonzero_range(torch.tensor([[[0.5, 0.0], [0.5, 0.5]]]), torch.ones(1, 2, dtype=bool)))
    assert ops.is_binary(None)  # all zero: nothing to multiply


def test_padding_content_changes_nothing():
    out, mask = _acts()
    stats_a = ActivationStats(1)
    stats_a.update(out, mask, [out], [out])
    other = out.clone()
    other[2, 1] = torch.tensor([-3.0, 0.5])  # garbage in the padded frame
    stats_b = ActivationStats(1)
    stats_b.update(other, mask, [other], [other])
    assert vars(stats_a) == vars(stats_b)
    # Left padding: a frame after padding is a first frame (nothing before it counts).
    left = torch.tensor([[[5.0]], [[1.0]]])
    assert ops.prev_nnz_total(left, torch.tensor([[False], [True]])) == 0


def test_count_ops_end_to_end_on_known_activations():
    # One proposed v2 layer (H=2) on binary spikes, readout with 3 classes; 2 valid frames.
    x = torch.tensor([[[0.3, 0.0, -1.2]], [[0.1, 0.2, 0.4]]])  # features: nnz 2 + 3
    spikes_in = torch.tensor([[[1.0, 0.0, 1.0]], [[0.0, 0.0, 1.0]]])  # binary, nnz 2 + 1
    spikes_out = torch.tensor([[[0.0, 1.0]], [[1.0, 1.0]]])  # binary, nnz 1 + 2, prev nnz 0 + 1
    mask = torch.ones(2, 1, dtype=torch.bool)
    stats = ActivationStats(1)
    stats.update(x, mask, [spikes_in], [spikes_out])
    assert stats.zero_fraction() == {"layers": [0.25], "overall": 0.25}
    res = count_ops(stats, [spec("proposed", 3, 2)], n_out=3, convention="honest", energy="45nm-fp32")
    layer_total = 2 * 3 * 2 + 2 * 1 * 2 + 8 * 2 * 2  # 12 + 4 + 32 = 48 over 2 frames
    readout_total = 3 * 3
    assert res["total_per_frame"] == pytest.approx((layer_total + readout_total) / 2)
    # Binary input and output: synaptic, recurrent and readout events are ACs; only 8H per frame is MAC.
    assert res["mac_per_frame"] == pytest.approx(16)
    assert res["ac_per_frame"] == pytest.approx((12 + 4 + 9) / 2)
    lstm = (4 * 2 * 5 + 2 * (4 * 4 + 12 * 2) + 3 * 2 * 2) / 2
    assert res["reference"]["lstm"]["total_per_frame"] == pytest.approx(lstm)
    assert res["normalised_vs_lstm"] == pytest.approx(res["total_per_frame"] / lstm)
    assert res["energy_pj_per_frame"] == pytest.approx(16 * 4.6 + 12.5 * 0.9)
    official = count_ops(stats, [spec("proposed", 3, 2)], n_out=3, convention="official")
    assert official["total_per_frame"] == pytest.approx((12 + 12 + 32 + 9) / 2)


def test_op_spec_self_recurrence_directions_and_integrator_readout():
    spec_self = ops.OpSpec(1, 5, "self", 1)
    # H=3, 2 steps, nnz_in 4, nnz_prev 2 (binary spikes): 12 AC synaptic, 2 AC self, 30 MAC element-wise.
    lo = ops.layer_ops(spec_self, 3, True, nnz_in=4, nnz_prev=2, frames=2, input_binary=True, output_binary=True)
    assert (lo.synaptic, lo.recurrent, lo.elementwise, lo.ac, lo.mac) == (12, 2, 30, 14, 30)
    # Bidirectional: both directions read the input and update their state; nnz_prev already sums both.
    bi = ops.layer_ops(ops.OpSpec(1, 6, "sparse", 1), 3, True, nnz_in=4, nnz_prev=5, frames=2, directions=2)
    assert (bi.synaptic, bi.recurrent, bi.elementwise) == (2 * 12, 5 * 3, 2 * 6 * 3 * 2)
    ro = ops.readout_ops(4, nnz_in=6, elementwise=3, frames=2)
    assert (ro.synaptic, ro.elementwise, ro.mac) == (24, 24, 48)
    with pytest.raises(ValueError):
        ops.OpSpec(1, 1, "diagonal")


def test_backward_direction_counts_the_next_step_as_previous():
    out, mask = _acts()
    # utt0: t=0 sees t=1 (2), t=1 sees t=2 (0); utt1: t=0 sees t=1 (1); the last valid frames see nothing.
    assert ops.next_nnz_total(out, mask) == 2 + 0 + 1


def test_encoder_work_is_counted_by_default_and_free_on_request():
    from snnasr.ops import ENCODER_OPS, encoder_ops

    counted = encoder_ops(40, 10)
    assert counted.total == counted.mac == ENCODER_OPS * 40 * 10 and counted.ac == 0
    assert encoder_ops(40, 10, "free").total == 0
    with pytest.raises(ConfigError, match="counted, free"):
        encoder_ops(40, 10, "sometimes")
