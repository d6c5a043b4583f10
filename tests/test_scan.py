"""Every scan backend equals the eager reference: forward, gradients, range state (float64).

The kernel backends (``fused``, ``native``) run the same tests; ``native`` also where it falls
back to ``fused`` (other surrogates, ALIF, ScSr), which the record of the backends that ran pins."""

import copy
import gc
import weakref

import pytest
import torch

from snnasr.io import ConfigError
from snnasr.models import build, native
from snnasr.models.encoding import SigmaDeltaEncoder
from snnasr.models.registry import model_config
from snnasr.models.scan import (
    Cell,
    ScanMasks,
    ScanOptions,
    backends_run,
    configure,
    resolve_backend,
    scan,
    step_masks,
)
from snnasr.models.spikes import Quantizer

SPIKING = [
    ("lif", {}),
    ("proposed", {"recurrent": True}),
    ("proposed", {"recurrent": False}),
    ("proposed", {"recurrent": True, "surrogate": "fast-sigmoid", "n_bits": 3, "threshold": 0}),
    ("lif", {"surrogate": "triangle", "n_bits": 1, "threshold": 0}),
    ("alif", {"preset": "shd"}),
    ("scsr", {}),
    ("alif", {"preset": "shd", "surrogate": "atan", "layers": 2, "bidirectional": True}),
    ("scsr", {"surrogate": "triangle", "batchnorm": True, "tau_m_init": 2.0}),
    ("proposed", {"recurrent": True, "layers": 2, "bidirectional": True, "skip": True}),
]
# One of each cell kind, for the options' tests: LIF, gated v2, gated v1, ALIF, ScSr.
KINDS = SPIKING[:3] + SPIKING[5:7]
KERNELS = ["fused", "native"]
needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler: the native backend falls back")


def _native_layers(arch: str, extra: dict) -> bool:
    """Whether the hidden layers of this case have a native kernel (ste-box quantised cells)."""
    return arch in ("lif", "proposed") and extra.get("surrogate", "ste-box") == "ste-box"


def _padded(t: int = 11, lengths=(11, 7, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(4)
    x = 3 * torch.randn(t, len(lengths), 5, dtype=torch.float64)  # threshold neurons fire
    mask = torch.arange(t)[:, None] < torch.tensor(lengths)[None]
    return x * mask[..., None], mask


def _pair(arch: str, extra: dict, fast: ScanOptions, dropout: float = 0.2):
    torch.manual_seed(0)
    model = build(arch, model_config(arch, **{"hidden": 9, "dropout": dropout, **extra}), 5, 4).double().train()
    ref = copy.deepcopy(model)
    configure(model, fast)
    configure(ref, ScanOptions("eager", tbptt=fast.tbptt))
    return model, ref


def _step(model, x, mask, w, seed: int):
    torch.manual_seed(seed)  # same dropout masks in both models
    out = model(x, mask)
    (out.logits * w)[mask].sum().backward()
    return out


def _assert_same(model, ref, x, mask, steps: int = 2) -> None:
    for k in range(steps):  # two minibatches: the range state must carry over correctly too
        w = torch.randn(*mask.shape, 4, dtype=torch.float64)
        a, b = _step(model, x, mask, w, k), _step(ref, x, mask, w, k)
        assert torch.allclose(a.logits[mask], b.logits[mask], atol=1e-5, rtol=1e-5)
        for la, lb in zip(a.layer_outputs, b.layer_outputs):
            # The very same spikes: same zeros, same levels (values equal up to float64 rounding,
            # which differs between the backends' reduction orders when torch uses several threads).
            assert torch.equal(la[mask] == 0, lb[mask] == 0)
            assert torch.allclose(la[mask], lb[mask], atol=1e-12, rtol=1e-12)
            assert (la != 0).any()
        for (name, p), q in zip(model.named_parameters(), ref.parameters()):
            assert q.grad is not None and q.grad.abs().sum() > 0, name
            assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-5), name
        for (name, buf), buf2 in zip(model.named_buffers(), ref.buffers()):
            assert torch.allclose(buf.double(), buf2.double(), atol=1e-9), name  # BN stats, EMA, calls, R


@pytest.mark.parametrize("backend", [*KERNELS, "auto"])
@pytest.mark.parametrize("arch, extra", SPIKING)
def test_kernel_backends_equal_eager_on_padded_batches(arch, extra, backend):
    x, mask = _padded()
    model, ref = _pair(arch, extra, ScanOptions(backend))
    with backends_run() as ran:
        _assert_same(model, ref, x, mask)
    one = ran[: len(ran) // 2]  # two minibatches: each runs the same scans
    assert ran == one * 2
    layers = one[1:] if model.encoder is not None else one  # the encoder's scan runs first
    native_layers = backend in ("native", "auto") and native.available() and _native_layers(arch, extra)
    assert set(layers) == {"native" if native_layers else "fused"}
    if hasattr(model.layers[0], "quantizer"):
        assert model.layers[0].quantizer.calls == 2 * 11  # every step with a real frame, both batches


@pytest.mark.parametrize("arch, extra", KINDS)
def test_chunked_recomputation_equals_eager(arch, extra):
    x, mask = _padded()
    model, ref = _pair(arch, extra, ScanOptions("fused", time_chunk=3))
    _assert_same(model, ref, x, mask)


@pytest.mark.parametrize("backend, chunk", [("fused", 4), ("native", 0)])
@pytest.mark.parametrize("arch, extra", KINDS)
def test_truncated_bptt_equals_eager_detached_state(arch, extra, backend, chunk):
    x, mask = _padded()
    model, ref = _pair(arch, extra, ScanOptions(backend, time_chunk=chunk, tbptt=3))
    _assert_same(model, ref, x, mask, steps=1)
    full, _ = _pair(arch, extra, ScanOptions(backend))
    w = torch.randn(*mask.shape, 4, dtype=torch.float64)
    _step(full, x, mask, w, 0)
    model.zero_grad()
    _step(model, x, mask, w, 0)
    assert not torch.allclose(full.layers[0].weight.grad, model.layers[0].weight.grad)


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("arch, extra", KINDS)
def test_eval_and_no_grad_paths_equal_eager(arch, extra, backend):
    x, mask = _padded()
    model, ref = _pair(arch, extra, ScanOptions(backend))
    _step(model, x, mask, torch.ones(*mask.shape, 4, dtype=torch.float64), 0)  # set ranges
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        for mode in (True, False):
            model.train(mode), ref.train(mode)
            torch.manual_seed(1)
            a = model(x, mask).logits
            torch.manual_seed(1)
            assert torch.allclose(a[mask], ref(x, mask).logits[mask], atol=1e-9)


@pytest.mark.parametrize("backend", KERNELS)
def test_encoder_gradient_equals_eager(backend):
    x, mask = _padded()
    fused, eager = SigmaDeltaEncoder(6, 3, 0.1).double(), SigmaDeltaEncoder(6, 3, 0.1).double()
    fused.scan_options, eager.scan_options = ScanOptions(backend), ScanOptions("eager")
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    w = torch.randn_like(x)
    a, b = fused(xa, mask), eager(xb, mask)
    assert torch.equal(a, b) and (a != 0).any()
    (a * w).sum().backward()
    (b * w).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, atol=1e-9)
    assert torch.equal(fused.quantizer.ema, eager.quantizer.ema)


def test_every_built_in_cell_has_a_fused_kernel_and_auto_takes_native_where_it_can(monkeypatch):
    from snnasr.models.alif import ALIF
    from snnasr.models.encoding import SIGMA_DELTA
    from snnasr.models.lif import LIF, LIF_RESET_ZERO
    from snnasr.models.proposed import GATED
    from snnasr.models.scsr import SCSR

    for cell in (SIGMA_DELTA, LIF, GATED, ALIF, SCSR):
        assert resolve_backend(cell, ScanOptions("fused")) == "fused", cell.name
        has_native = cell in (SIGMA_DELTA, LIF, GATED)
        for backend in ("auto", "native"):
            want = "native" if has_native and native.available() else "fused"
            assert resolve_backend(cell, ScanOptions(backend)) == want, cell.name
    assert resolve_backend(LIF_RESET_ZERO, ScanOptions("auto")) == "eager"  # its backward is not derived
    monkeypatch.setattr(native, "library", lambda: None)  # no compiler, or the build failed
    assert resolve_backend(GATED, ScanOptions("auto")) == resolve_backend(GATED, ScanOptions("native")) == "fused"


def test_without_the_native_library_auto_runs_fused_and_equals_eager(monkeypatch):
    monkeypatch.setattr(native, "library", lambda: None)
    x, mask = _padded()
    model, ref = _pair("proposed", {}, ScanOptions("auto"))
    with backends_run() as ran:
        _assert_same(model, ref, x, mask, steps=1)
    assert set(ran) == {"fused"}


@needs_native
@pytest.mark.parametrize("arch, extra", SPIKING[:3])
def test_native_falls_back_to_fused_for_options_it_does_not_support(arch, extra, monkeypatch):
    """time_chunk (replays ranges), the device range state: the same model runs fused, per batch."""
    x, mask = _padded()
    model, ref = _pair(arch, extra, ScanOptions("native", time_chunk=3))
    with backends_run() as ran:
        _assert_same(model, ref, x, mask, steps=1)
    assert set(ran) == {"fused"}
    monkeypatch.setattr(Quantizer, "host", lambda self: False)
    model, ref = _pair(arch, extra, ScanOptions("native"))
    with backends_run() as ran:
        _assert_same(model, ref, x, mask, steps=1)
    assert set(ran) == {"fused"}


def test_cell_without_kernel_falls_back_to_eager():
    def step(x, state, params, m):
        return x[0] + state, x[0] + state

    cell = Cell("cumsum", step)
    assert resolve_backend(cell, ScanOptions("fused")) == "eager"
    x = torch.randn(6, 2, 3)
    masks = step_masks(ScanMasks.of(torch.ones(6, 2, dtype=torch.bool)), Quantizer())
    out, final = scan(cell, (x,), torch.zeros(2, 3), None, masks, ScanOptions("fused"))
    assert torch.allclose(out, x.cumsum(0)) and torch.allclose(final, x.sum(0))


def test_bad_scan_options_are_config_errors():
    with pytest.raises(ConfigError, match="scan_backend"):
        model_config("lif", scan_backend="cuda-graph")
    with pytest.raises(ConfigError, match="tbptt"):
        model_config("proposed", tbptt=-1)
    with pytest.raises(ConfigError, match="eager"):
        ScanOptions("triton").check()


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("arch, extra", KINDS)
def test_float32_kernels_match_eager(arch, extra, backend):
    """float32 takes the oneDNN products where available: equal up to float32 rounding."""
    torch.manual_seed(0)
    model = build(arch, model_config(arch, hidden=9, dropout=0.0, **extra), 5, 4).train()
    ref = copy.deepcopy(model)
    configure(model, ScanOptions(backend))
    configure(ref, ScanOptions("eager"))
    x, mask = _padded()
    a, b = model(x.float(), mask), ref(x.float(), mask)
    assert torch.allclose(a.logits[mask], b.logits[mask], atol=1e-4)
    a.logits[mask].sum().backward()
    b.logits[mask].sum().backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-3, rtol=1e-3), name


@pytest.mark.parametrize("arch, extra", SPIKING[:2])
def test_device_range_state_path_equals_eager(arch, extra, monkeypatch):
    """The range state as 0-dim tensors (what CUDA runs: no host sync per step), forced on CPU:
    the fused scan equals the eager one, and both equal the host-float path."""
    x, mask = _padded()
    host, _ = _pair(arch, extra, ScanOptions("fused"))
    monkeypatch.setattr(Quantizer, "host", lambda self: False)
    model, ref = _pair(arch, extra, ScanOptions("fused"))
    w = torch.randn(*mask.shape, 4, dtype=torch.float64)
    a = _step(host, x, mask, w, 0)
    _assert_same(model, ref, x, mask)
    assert isinstance(model.layers[0].quantizer.start(torch.float64).lo, torch.Tensor)
    fresh, _ = _pair(arch, extra, ScanOptions("fused"))
    c = _step(fresh, x, mask, w, 0)
    assert torch.allclose(a.logits[mask], c.logits[mask], atol=1e-9)
    for p, q in zip(host.parameters(), fresh.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-9)


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("arch, extra", KINDS)
def test_kernel_scans_free_their_output_after_backward(arch, extra, backend, monkeypatch):
    """No reference cycle through the autograd context: a leak of every step's activations."""
    from snnasr.models.scan import Kernel

    outputs = []
    bind = Kernel.bind
    monkeypatch.setattr(Kernel, "bind", lambda self, t, out: (outputs.append(weakref.ref(out)), bind(self, t, out)))
    x, mask = _padded()
    model, _ = _pair(arch, extra, ScanOptions(backend))
    gc.disable()  # what Python's collector could free does not count: torch's graph is invisible to it
    try:
        out = _step(model, x, mask, torch.randn(*mask.shape, 4, dtype=torch.float64), 0)
        del out
        assert outputs and all(ref() is None for ref in outputs)
    finally:
        gc.enable()
