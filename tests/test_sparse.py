"""Event-driven inference equals the dense path and executes exactly the counted events."""

import pytest
import torch
from test_evaluate import recipe  # noqa: F401  (the hand-made recipe fixture)

from snnasr.evaluate import pad_batch
from snnasr.io import ConfigError
from snnasr.models import build
from snnasr.models.registry import model_config
from snnasr.ops import ActivationStats, count_ops
from snnasr.sparse import event_driven, executed_ops

CASES = [
    ("lif", {}),
    ("lif", {"reset": "zero", "n_bits": 1, "threshold": 0, "input_encoding": "none"}),
    ("proposed", {"recurrent": True}),
    ("proposed", {"recurrent": False}),
    ("proposed", {"bidirectional": True, "skip": True, "steps_per_frame": 2, "readout": "integrator"}),
    ("alif", {"b0": 0.05}),  # a low threshold, so the tiny untrained layer fires
    ("scsr", {}),
]


def _model(arch: str, extra: dict) -> torch.nn.Module:
    """A tiny float64 model whose BN statistics and quantiser ranges have been set, in eval mode."""
    torch.manual_seed(0)
    model = build(arch, model_config(arch, hidden=12, layers=2, **extra), 6, 4).double()
    x = 3 * torch.randn(15, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(x, torch.ones(15, 4, dtype=torch.bool))
    return model.eval()


def _batch():
    torch.manual_seed(2)
    feats = [3 * torch.randn(n, 6, dtype=torch.float64) for n in (17, 11, 5)]
    return pad_batch(feats)


@pytest.mark.parametrize("dense_above", [1.0, 0.5])
@pytest.mark.parametrize("arch, extra", CASES)
def test_event_driven_equals_dense_on_padded_batches(arch, extra, dense_above):
    model = _model(arch, extra)
    x, mask = _batch()
    sparse, tallies = event_driven(model, dense_above)
    with torch.no_grad():
        dense_out, sparse_out = model(x, mask), sparse(x, mask)
    assert torch.allclose(sparse_out.logits[mask], dense_out.logits[mask], atol=1e-10)
    steps = dense_out.step_mask
    for a, b in zip(sparse_out.layer_outputs, dense_out.layer_outputs):
        assert torch.allclose(a[steps], b[steps], atol=1e-10)
        assert (a[steps] != 0).any()
    if dense_above == 1.0:  # every product event-driven
        assert all(t.sparse_products and not t.dense_products for t in tallies)


@pytest.mark.parametrize("arch, extra", CASES)
def test_executed_macs_equal_the_counted_ops(arch, extra):
    """On a fixed model: each event-driven product executes one weight row per counted event."""
    model = _model(arch, extra)
    x, mask = _batch()
    sparse, tallies = event_driven(model, dense_above=0.9)
    specs = model.layer_specs()
    stats = ActivationStats(len(specs))
    with torch.no_grad():
        out = sparse(x, mask)
    dirs = [s.directions for s in specs]
    stats.update(
        x,
        mask,
        out.layer_inputs,
        out.layer_outputs,
        step_mask=out.step_mask,
        readout_input=out.readout_input,
        directions=dirs,
    )
    ops = count_ops(stats, specs, 4)
    executed = executed_ops(tallies, specs, ops, stats.frames)
    checked = 0
    for t, row, spec, nnz_in, nnz_prev in zip(tallies, executed["layers"], specs, stats.nnz_in, stats.nnz_prev):
        if t.dense_products:  # dense features into ALIF/ScSr layer 1: the whole GEMM runs
            assert row["executed_synaptic_per_frame"] == row["dense_synaptic_per_frame"]
            continue
        assert t.events_in == nnz_in * spec.directions
        assert row["executed_synaptic_per_frame"] == pytest.approx(row["counted_synaptic_per_frame"], rel=1e-12)
        assert row["executed_recurrent_per_frame"] == pytest.approx(row["counted_recurrent_per_frame"], rel=1e-12)
        if row["dense_recurrent_per_frame"]:
            assert t.events_rec == nnz_prev
        assert row["executed_synaptic_per_frame"] < row["dense_synaptic_per_frame"]
        checked += 1
    assert checked


def test_models_without_spiking_layers_are_refused():
    with pytest.raises(ConfigError, match="no spiking layer"):
        event_driven(build("lstm", model_config("lstm", hidden=4), 5, 3))


def test_eval_sparse_reports_executed_macs_beside_the_counted_ones(recipe, capsys):  # noqa: F811
    from test_evaluate import make_run

    from snnasr.evaluate import run_evaluation

    run = make_run(recipe, "proposed")
    dense = run_evaluation(run, recipe, report_ops=True, device="cpu")
    sparse = run_evaluation(run, recipe, report_ops=True, device="cpu", sparse=True)
    assert sparse["accuracy"] == dense["accuracy"] and sparse["zero_frac"] == dense["zero_frac"]
    sp = sparse["sparse"]
    assert len(sp["layers"]) == 2 and sp["executed_mac_per_frame"] <= sp["dense_mac_per_frame"]
    for row in sp["layers"]:
        if not row["dense_products"]:
            assert row["executed_synaptic_per_frame"] == pytest.approx(row["counted_synaptic_per_frame"])
    assert "event-driven: synaptic + recurrent MACs per frame executed" in capsys.readouterr().out
