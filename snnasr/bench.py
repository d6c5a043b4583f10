"""Training throughput of every architecture side by side, as ratios to the fused nn.LSTM.

Why: the SNN layers step through time in Python while nn.LSTM/GRU run a fused kernel, so the
speed of an SNN implementation only means something next to the LSTM measured in the same
run, on the same machine and shapes.  One timed iteration = forward, masked NLL loss,
backward and an Adam step on random data (``steps`` × ``batch`` frames, 40-dim input,
48 classes); reported: the median over ``repeats`` after one warm-up iteration.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from snnasr.config import ModelConfig
from snnasr.models import build
from snnasr.models.registry import bench_variants, model_config
from snnasr.train import resolve_device

N_IN, N_OUT = 40, 48
VARIANTS = tuple(bench_variants())  # (label, arch, model overrides), declared by each architecture


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_training_step(
    arch: str, cfg: ModelConfig, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, repeats: int
) -> float:
    """Median seconds of one training iteration (after one untimed warm-up)."""
    model = build(arch, cfg, N_IN, N_OUT).to(x.device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(repeats + 1):
        _sync(x.device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(x, mask).logits
        loss = F.cross_entropy(logits[mask], y[mask])
        loss.backward()
        opt.step()
        _sync(x.device)
        if i > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_bench(
    device: str | None = None, hidden: int = 550, batch: int = 32, steps: int = 200, repeats: int = 3
) -> list[dict]:
    """Print (and return) frames/s per architecture and its ratio to the LSTM."""
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(steps, batch, N_IN, generator=gen).to(dev)
    y = torch.randint(0, N_OUT, (steps, batch), generator=gen).to(dev)
    mask = torch.ones(steps, batch, dtype=torch.bool, device=dev)
    rows = []
    for name, arch, extra in VARIANTS:
        cfg = model_config(arch, hidden=hidden, **extra)
        sec = time_training_step(arch, cfg, x, mask, y, repeats)
        rows.append({"model": name, "seconds": sec, "frames_per_s": steps * batch / sec})
    ref = rows[0]["frames_per_s"]
    print(
        f"device {dev}, hidden {hidden}, batch {batch}, steps {steps}, median of {repeats} "
        f"(forward + backward + Adam step)"
    )
    print(f"{'model':<12} {'s/iter':>9} {'frames/s':>10} {'vs lstm':>8}")
    for r in rows:
        r["ratio_to_lstm"] = r["frames_per_s"] / ref
        print(f"{r['model']:<12} {r['seconds']:>9.3f} {r['frames_per_s']:>10.0f} {r['ratio_to_lstm']:>8.2f}")
    return rows
