"""Event-driven inference: the spiking layers multiply only the weight columns of non-zero inputs.

:func:`event_driven` wraps a trained model's spiking layers (lif, proposed, alif, scsr) so that
every synaptic product is computed from the input's non-zero entries only, as neuromorphic
hardware does: ``W x = Σ_{f: x_f ≠ 0} x_f W[:, f]``, per frame and batch row.  The kernel is
``embedding_bag`` (a gather of the weight rows ``Wᵀ[f]`` of the active inputs, each scaled by
its value, summed per row; no multiply for a zero), for

- the input projection of a layer, all frames at once (``[T·B, F]`` events);
- the recurrent product on the layer's own previous spikes (proposed v2 ``U s_{t-1}``, ALIF
  ``W_rec s_{t-1}``), per step, inside the time loop: the cells' own update after the product
  (:func:`~snnasr.models.proposed.gated_update`, :func:`~snnasr.models.alif.alif_update`).

Why ``embedding_bag`` and not a CSR sparse-dense product: measured on the 2-core CPU at 80-90 %
zeros, 550 inputs x 1100 outputs, it runs 1.4-2.6x faster than ``torch.sparse.mm`` of a CSR
input (which also pays the CSR conversion) at 1, 8 and 6400 rows.

Padded frames are zeroed before each product (they reach no valid output: padding is at the
end and the layers are causal), so the events executed are those of the valid frames, the very
ones ``eval --report-ops`` counts.  A product whose input is mostly non-zero (the dense features
that ALIF and ScSr read without an input encoder: more than ``dense_above`` = half of the
entries non-zero) runs dense: a gather only pays on sparse inputs (``snnasr bench --sparse``
measures the whole path).

:class:`Tally` keeps, per hidden layer, the input events (non-zeros fed to each product) and the
multiply-accumulates (MACs) each product executed, beside what the dense GEMMs would execute on
the same (padded) batch.  LSTM/GRU layers and the readout run dense, as they are.  Outputs equal
the dense path up to float rounding (summation order); the tests check 1e-10 in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnasr.io import ConfigError

DENSE_ABOVE = 0.5  # fraction of non-zero inputs above which a product stays dense


@dataclass
class Tally:
    """One hidden layer's products over the batches seen: events and executed vs dense MACs."""

    events_in: int = 0  # non-zero inputs fed to the input projection (valid frames)
    events_rec: int = 0  # non-zero previous outputs fed to the recurrent product
    mac_in: int = 0  # MACs the input projection executed
    mac_rec: int = 0
    dense_mac_in: int = 0  # MACs the dense GEMM would execute on the same padded batch
    dense_mac_rec: int = 0
    dense_products: int = 0  # products left dense (input mostly non-zero)
    sparse_products: int = 0
    dense_above: float = DENSE_ABOVE  # the rule: fraction of non-zero inputs above which a product runs dense


def event_mm(x: Tensor, wt: Tensor, valid: Tensor | None, tally: Tally, recurrent: bool) -> Tensor:
    """``x @ wt`` for ``x`` ``[N, F]`` (rows where ``valid`` is False count as zero; None = all
    valid), ``wt`` ``[F, O]`` contiguous: row n is the sum of ``x[n, f] · wt[f]`` over the non-zero
    ``x[n, f]`` only (``embedding_bag``'s weighted sum of gathered rows), or a dense product when
    most entries are non-zero; tallied."""
    if valid is not None:
        x = x * valid[:, None].to(x.dtype)
    n, f = x.shape
    o = wt.shape[1]
    nz = x.nonzero()  # row-major: the events of row 0, then row 1, ...
    nnz = nz.shape[0]
    if nnz > tally.dense_above * n * f:
        y, executed = x @ wt, n * f * o
        tally.dense_products += 1
    else:
        rows, cols = nz.unbind(1)
        offsets = torch.searchsorted(rows, torch.arange(n, device=x.device))
        y = F.embedding_bag(cols, wt, offsets, mode="sum", per_sample_weights=x[rows, cols])
        executed = nnz * o
        tally.sparse_products += 1
    if recurrent:
        tally.events_rec += nnz
        tally.mac_rec += executed
        tally.dense_mac_rec += n * f * o
    else:
        tally.events_in += nnz
        tally.mac_in += executed
        tally.dense_mac_in += n * f * o
    return y


def event_linear(x: Tensor, wt: Tensor, mask: Tensor, tally: Tally) -> Tensor:
    """``x @ wt`` for ``x`` ``[T, B, F]`` from its non-zero entries on valid frames (``wt`` = ``Wᵀ``)."""
    t, b, f = x.shape
    valid = None if bool(mask.all()) else mask.reshape(-1)
    return event_mm(x.reshape(t * b, f), wt, valid, tally, False).reshape(t, b, wt.shape[1])


class Transposed:
    """``Wᵀ`` contiguous of a layer's weights, made once (again only after the weight changed)."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer, self.cache = layer, {}  # type: ignore[var-annotated]

    def __call__(self, name: str) -> Tensor:
        w = getattr(self.layer, name)
        hit = self.cache.get(name)
        if hit is None or hit[0] is not w or hit[1] != w._version:
            hit = (w, w._version, w.detach().t().contiguous())
            self.cache[name] = hit
        return hit[2]


def _lif(layer: Any, wt: Transposed, x: Tensor, mask: Tensor, tally: Tally) -> Tensor:
    return layer.integrate(layer.norm(event_linear(x, wt("weight"), mask, tally), mask), mask)[0]


def _scsr(layer: Any, wt: Transposed, x: Tensor, mask: Tensor, tally: Tally) -> Tensor:
    return layer.integrate(layer.norm(event_linear(x, wt("weight"), mask, tally), mask), mask)[0]


def _gated(layer: Any, wt: Transposed, x: Tensor, mask: Tensor, tally: Tally) -> Tensor:
    from snnasr.models.proposed import GatedParams, gated_update
    from snnasr.models.scan import ScanMasks, step_masks

    pre = layer.normalise(event_linear(x, wt("weight"), mask, tally), mask)
    if layer.weight_rec is None:  # v1: no recurrent product, the layer's own loop
        return layer.integrate(pre, mask)[0]
    steps = step_masks(ScanMasks.of(mask), layer.quantizer)
    params = GatedParams(None, None, layer.quantizer.config())
    state = layer.init_state(pre)
    ut = wt("weight_rec")
    full = ScanMasks.of(mask).full
    out = []
    for t in range(pre.shape[0]):
        g = pre[t] + event_mm(state.spikes, ut, None if full[t] else mask[t], tally, True)
        s, state = gated_update(g, state, params, steps[t], True)
        out.append(s)
    return torch.stack(out)


def _alif(layer: Any, wt: Transposed, x: Tensor, mask: Tensor, tally: Tally) -> Tensor:
    from snnasr.models.alif import alif_update
    from snnasr.models.scan import ScanMasks

    with torch.no_grad():  # as ALIFLayer.forward_state
        layer.tau_m.clamp_(min=layer.tau_min)
        layer.tau_adp.clamp_(min=layer.tau_min)
    j = layer.norm(event_linear(x, wt("weight"), mask, tally) + layer.bias, mask)
    params = layer.params()
    state = layer.init_state(j)
    rec_t = wt("weight_rec")
    full = ScanMasks.of(mask).full
    out = []
    for t in range(j.shape[0]):
        rec = event_mm(state.spikes, rec_t, None if full[t] else mask[t], tally, True)
        s, state = alif_update(j[t] + rec, state, params)
        out.append(s)
    return torch.stack(out)


SparseForward = Callable[[Any, Transposed, Tensor, Tensor, Tally], Tensor]


def _forwards() -> dict[type, SparseForward]:
    from snnasr.models.alif import ALIFLayer
    from snnasr.models.lif import LIFLayer
    from snnasr.models.proposed import GatedSpikingLayer
    from snnasr.models.scsr import ScSrLayer

    return {LIFLayer: _lif, GatedSpikingLayer: _gated, ALIFLayer: _alif, ScSrLayer: _scsr}


class EventDriven(nn.Module):
    """One spiking layer run event-driven (inference only); ``spec()`` and weights are the layer's."""

    def __init__(self, layer: nn.Module, run: SparseForward, tally: Tally) -> None:
        super().__init__()
        self.layer, self.run, self.tally = layer, run, tally
        self.transposed = Transposed(layer)

    def spec(self) -> Any:
        return self.layer.spec()  # type: ignore[operator]

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.layer.training or torch.is_grad_enabled():
            raise RuntimeError("event-driven layers are for inference: call model.eval() and run under torch.no_grad()")
        with torch.inference_mode():
            return self.run(self.layer, self.transposed, x, mask, self.tally)


def event_driven(model: nn.Module, dense_above: float = DENSE_ABOVE) -> tuple[nn.Module, list[Tally]]:
    """A model sharing ``model``'s modules whose spiking layers run event-driven, and one
    :class:`Tally` per hidden layer; products whose inputs are more than ``dense_above``
    non-zero run dense (1.0: none).  ConfigError for a model without spiking layers."""
    from snnasr.models.registry import AcousticModel, Bidirectional

    forwards = _forwards()
    tallies: list[Tally] = []

    def wrap(layer: nn.Module, tally: Tally) -> nn.Module:
        run = forwards.get(type(layer))
        return layer if run is None else EventDriven(layer, run, tally)

    layers: list[nn.Module] = []
    for layer in model.layers:  # type: ignore[union-attr]
        tally = Tally(dense_above=dense_above)
        tallies.append(tally)
        if isinstance(layer, Bidirectional):
            layers.append(Bidirectional(wrap(layer.fw, tally), wrap(layer.bw, tally)))
        else:
            layers.append(wrap(layer, tally))
    m: Any = model
    if all(layer is orig for layer, orig in zip(layers, m.layers)):
        raise ConfigError(
            f"{getattr(model, 'arch', type(model).__name__)} has no spiking layer, so there is no event-driven "
            f"path: evaluate it without --sparse"
        )
    sparse = AcousticModel(
        m.arch, layers, m.readout, m.n_out, m.encoder, m.sources, m.readout_sources, m.steps_per_frame
    )
    return sparse.eval(), tallies


def executed_ops(tallies: list[Tally], specs: list[Any], ops: dict[str, Any] | None, frames: int) -> dict[str, Any]:
    """Per frame and layer: MACs of the synaptic (input) and recurrent-matrix products executed by
    the event-driven path and by the dense GEMMs, beside the events ``--report-ops`` counts for
    them (``ops``: :func:`snnasr.ops.count_ops` of the same activations, or None).  ScSr's
    recurrence is one scalar per neuron, inside its element-wise update on both paths, so it is
    not a product here."""
    layers = []
    for i, (t, spec) in enumerate(zip(tallies, specs)):
        row: dict[str, Any] = {
            "layer": i + 1,
            "kind": spec.kind,
            "executed_synaptic_per_frame": t.mac_in / frames,
            "executed_recurrent_per_frame": t.mac_rec / frames,
            "dense_synaptic_per_frame": t.dense_mac_in / frames,
            "dense_recurrent_per_frame": t.dense_mac_rec / frames,
            "sparse_products": t.sparse_products,
            "dense_products": t.dense_products,
        }
        if ops is not None:
            lo = ops["layers"][i]
            row["counted_synaptic_per_frame"] = lo["synaptic"]
            row["counted_recurrent_per_frame"] = lo["recurrent"] if t.dense_mac_rec else 0.0
        layers.append(row)
    out: dict[str, Any] = {"layers": layers}
    kinds = ("executed", "dense") + (("counted",) if ops is not None else ())
    for kind in kinds:
        out[f"{kind}_mac_per_frame"] = sum(
            r[f"{kind}_synaptic_per_frame"] + r[f"{kind}_recurrent_per_frame"] for r in layers
        )
    out["dense_above"] = DENSE_ABOVE
    out["note"] = (
        "MACs of the hidden layers' synaptic and recurrent-matrix products only (element-wise updates, "
        "encoder and readout are the same on both paths); dense = the dense path's GEMMs on the same padded "
        f"batches; a product with more than {DENSE_ABOVE:.0%} non-zero inputs runs dense"
    )
    return out


def run_sparse_bench(
    exp: str | Path,
    recipe_dir: str | Path,
    set_name: str = "test",
    repeats: int = 3,
    limit: int | None = None,
    batch_frames: int = 20000,
    device: str | None = None,
    as_json: bool = False,
) -> list[dict[str, Any]]:
    """Inference speed of ``exp``'s trained model on ``data/<set>``, dense vs event-driven, side by side.

    Two modes: ``batched`` (the set in eval's length-sorted batches of at most ``batch_frames``
    padded frames) and ``stream`` (one utterance at a time, batch 1, as a recogniser serving one
    user).  A trained model on real features, because the event-driven path's cost follows the
    real activations' sparsity, which random inputs do not have.  One warm-up pass, then
    ``repeats`` interleaved rounds (dense, event-driven, dense, ...), median reported; frames/s
    count real frames.  Prints a table (or JSON) and returns its rows.
    """
    import json
    import os
    import statistics
    import time

    from snnasr.batching import plan_batches
    from snnasr.checkpoint import load_model
    from snnasr.dataset import UtteranceDataset
    from snnasr.evaluate import exp_and_set, pad_batch
    from snnasr.io import DataError
    from snnasr.runtime import resolve_device

    if repeats < 1:
        raise ConfigError(f"--repeats={repeats}: must be positive")
    recipe_dir = Path(recipe_dir)
    exp_dir, data_dir = exp_and_set(exp, recipe_dir, set_name)
    dev = resolve_device(device)
    model, cfg, meta = load_model(exp_dir, dev)
    sparse, tallies = event_driven(model)
    data = UtteranceDataset(data_dir, level=meta["level"], norm_vars=cfg.data.norm_vars, context=cfg.data.context)
    if data.dim != int(meta["n_in"]):
        raise DataError(f"{data_dir}/feats.scp: {data.dim}-dim features but {exp_dir.name} expects {meta['n_in']}")
    n = len(data) if limit is None else min(limit, len(data))
    feats = [data[i][1].float() for i in range(n)]
    lengths = [len(f) for f in feats]
    frames = sum(lengths)
    modes = {
        "batched": [[u for u, _, _ in b] for b in plan_batches(lengths, max(lengths), batch_frames)],
        "stream": [[i] for i in range(n)],
    }
    inputs = {
        mode: [tuple(t.to(dev) for t in pad_batch([feats[i] for i in idx])) for idx in batches]
        for mode, batches in modes.items()
    }

    def run(net: nn.Module, mode: str) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        with torch.no_grad():
            for x, mask in inputs[mode]:
                net(x, mask)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - start

    rows = []
    for mode in modes:
        for t in tallies:
            t.__init__(dense_above=t.dense_above)  # type: ignore[misc]
        run(model, mode), run(sparse, mode)  # warm-up; fills the tallies once
        mac = sum(t.mac_in + t.mac_rec for t in tallies)
        dense_mac = sum(t.dense_mac_in + t.dense_mac_rec for t in tallies)
        times: dict[str, list[float]] = {"dense": [], "sparse": []}
        for _ in range(repeats):
            times["dense"].append(run(model, mode))
            times["sparse"].append(run(sparse, mode))
        dense_fps = frames / statistics.median(times["dense"])
        sparse_fps = frames / statistics.median(times["sparse"])
        rows.append(
            {
                "mode": mode,
                "batches": len(inputs[mode]),
                "dense_frames_per_s": dense_fps,
                "sparse_frames_per_s": sparse_fps,
                "speed_ratio_sparse_dense": sparse_fps / dense_fps,
                "executed_mac_per_frame": mac / frames,
                "dense_mac_per_frame": dense_mac / frames,
                "mac_ratio": mac / dense_mac,
            }
        )
    widths = [s.hidden for s in model.layer_specs()]  # type: ignore[operator]
    settings = {
        "run": exp_dir.name,
        "arch": model.arch,
        "widths": widths,
        "set": set_name,
        "utterances": n,
        "frames": frames,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if as_json:
        print(json.dumps({"settings": settings, "rows": rows}, indent=1))
        return rows
    s = settings
    print(
        f"{s['run']} ({s['arch']}, {len(widths)} x {widths[0]}) on {s['set']}: {s['utterances']} utterances, "
        f"{s['frames']} frames, device {s['device']}, {s['threads']} thread(s), median of {s['repeats']} "
        f"interleaved rounds, load average {s['load_average']:.2f}"
    )
    print(
        f"{'mode':<8} {'batches':>7} {'dense fr/s':>10} {'sparse fr/s':>11} {'speed ratio':>11} {'MACs/frame dense':>16} {'executed':>10} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{r['mode']:<8} {r['batches']:>7} {r['dense_frames_per_s']:>10.0f} {r['sparse_frames_per_s']:>11.0f} "
            f"{r['speed_ratio_sparse_dense']:>11.2f} {r['dense_mac_per_frame']:>16,.0f} {r['executed_mac_per_frame']:>10,.0f} "
            f"{r['mac_ratio']:>6.3f}"
        )
    return rows
