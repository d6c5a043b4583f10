"""``snnasr bench``: training and inference throughput and peak memory, side by side, vs nn.LSTM.

Why: the spiking layers run their own time loop (:mod:`snnasr.models.scan`) while nn.LSTM/GRU
run a fused library kernel, so an SNN's speed only means something next to the LSTM measured
in the same process, on the same machine, shapes and load.  Every architecture variant runs
with each requested scan backend (``native``, ``fused``; ``eager`` is the naive per-step
reference; a ``native`` row of a variant without native kernels, whose scans run ``fused``,
is left out where the ``fused`` row is there, else labelled ``fused``);
LSTM/GRU rows are torch's own kernels (backend ``torch``).

Measured per row, on random data (``frames`` x ``batch``, 40-dim input, 48 classes):

- training step: forward, masked cross-entropy, backward and an Adam step;
- inference: an eval-mode forward under ``torch.no_grad``;
- peak memory of one training step (``time_chunk``: the fused scans' recomputation option)
  above what the model and optimiser already hold (CUDA: the allocator's peak; CPU: the
  process's resident-set high-water mark, reset before the step, with glibc's mmap threshold
  fixed so freed tensors leave the resident set; measured after the timed rounds, see below).

The timed steps run with glibc keeping freed memory for reuse, as ``snnasr train`` sets it on
CPU (:mod:`snnasr.malloc`), which spares every row (LSTM included) re-faulting its temporaries.
One warm-up iteration per row, then ``repeats`` rounds in which every row runs once in turn
(interleaved, so a change in machine load hits all rows alike); the median round is reported,
and with ``--json`` every round's time too (``train_s``, ``infer_s``: their spread is the
measurement's noise).  The memory steps run last.
Frames/s count real frames only: with ``padded`` the batch's lengths are spread evenly over
[frames/2, frames] as in a length-sorted bucket of real utterances.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from snnasr.config import SCAN_BACKENDS, ModelConfig
from snnasr.io import ConfigError
from snnasr.malloc import keep_freed_memory, return_freed_memory
from snnasr.models import build
from snnasr.models.registry import bench_variants, get_arch, model_config
from snnasr.models.scan import ScanOptions, backends_run, configure
from snnasr.runtime import resolve_device

N_IN, N_OUT = 40, 48
DEFAULT_BACKENDS = ("native", "fused", "eager")


class Variant(NamedTuple):
    name: str  # as --archs selects it
    arch: str
    overrides: dict
    spiking: bool  # runs through the scan (has backends); else a torch kernel


def _variants() -> tuple[Variant, ...]:
    """Each architecture's bench variants, as its module declares them (the registry)."""
    out: list[Variant] = []
    for name, arch, overrides in bench_variants():
        section = get_arch(arch).config
        out.append(Variant(name, arch, overrides, hasattr(section, "scan_backend")))
    return tuple(out)


VARIANTS = _variants()


class Row(NamedTuple):
    variant: Variant
    backend: str  # torch | native | fused | eager


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) * 1024  # type: ignore[union-attr]


def peak_memory(step: Callable[[], None], device: torch.device) -> int:
    """Bytes one call of ``step`` needs above what is allocated before it (see module docstring)."""
    if device.type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    return_freed_memory()  # freed heap pages leave the resident set: reusing them counts again
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM
        base = _rss("VmRSS")
    except OSError:
        return -1  # not Linux: unknown
    step()
    return _rss("VmHWM") - base


def _rows(archs: list[str], backends: list[str]) -> list[Row]:
    names = [v.name for v in VARIANTS]
    for a in archs:
        if a not in names:
            raise ConfigError(f"--archs: {a!r} is unknown; choose from {', '.join(names)}")
    for b in backends:
        if b not in SCAN_BACKENDS:
            raise ConfigError(f"--backend: {b!r} is unknown; choose from {', '.join(SCAN_BACKENDS)}")
    chosen = ["lstm"] + [a for a in archs if a != "lstm"]  # the LSTM is the reference of every ratio
    rows = []
    for v in VARIANTS:
        if v.name in chosen:
            rows += [Row(v, b) for b in dict.fromkeys(backends)] if v.spiking else [Row(v, "torch")]
    return rows


class _Case:
    """One row's model, optimiser and the two timed closures."""

    def __init__(
        self, row: Row, cfg: ModelConfig, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, time_chunk: int
    ):
        torch.manual_seed(0)
        self.model = build(row.variant.arch, cfg, N_IN, N_OUT).to(x.device)
        if row.variant.spiking:
            configure(self.model, ScanOptions(row.backend, time_chunk=time_chunk))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.x, self.mask, self.y = x, mask, y
        self.native = False  # whether a native kernel ran (set by the warm-up)

    def train_step(self) -> None:
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(self.x, self.mask).logits
        F.cross_entropy(logits[self.mask], self.y[self.mask]).backward()
        self.opt.step()

    def infer(self) -> None:
        self.model.eval()
        with torch.no_grad():
            self.model(self.x, self.mask)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _check(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"--{name}={value}: must be positive")


def run_bench(
    archs: list[str] | None = None,
    hidden: int = 550,
    layers: int = 2,
    frames: int = 800,
    batch: int = 8,
    device: str | None = None,
    backends: list[str] | None = None,
    padded: bool = False,
    repeats: int = 3,
    as_json: bool = False,
    time_chunk: int = 0,
) -> list[dict]:
    """Measure every row, print the ratio table (or JSON), return the rows as dicts."""
    for name, value in (("hidden", hidden), ("layers", layers), ("frames", frames), ("batch", batch)):
        _check(name, value)
    _check("repeats", repeats)
    if time_chunk < 0:
        raise ConfigError(f"--time-chunk={time_chunk}: must be >= 0 (0 = off)")
    rows = _rows(archs or [v.name for v in VARIANTS], backends or list(DEFAULT_BACKENDS))
    dev = resolve_device(device)
    keep_freed_memory()  # as training runs (snnasr.malloc); both the LSTM and the SNNs gain
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(frames, batch, N_IN, generator=gen)
    y = torch.randint(0, N_OUT, (frames, batch), generator=gen)
    lengths = (
        torch.linspace(frames, (frames + 1) // 2, batch).round().long() if padded else torch.full((batch,), frames)
    )
    mask = torch.arange(frames)[:, None] < lengths[None]
    x, y, mask = (x * mask[..., None]).to(dev), y.to(dev), mask.to(dev)
    n_frames = int(lengths.sum())
    cases = [
        _Case(
            r,
            model_config(r.variant.arch, hidden=hidden, layers=layers, **r.variant.overrides),
            x,
            mask,
            y,
            time_chunk,
        )
        for r in rows
    ]
    train: list[list[float]] = [[] for _ in rows]
    infer: list[list[float]] = [[] for _ in rows]
    for case in cases:  # warm-up
        with backends_run() as ran:
            case.train_step()
            case.infer()
        case.native = "native" in ran
    # A native row of a variant without native kernels ran fused: left out where the fused row
    # measures it anyway, else shown as what it ran.
    fused = {r.variant.name for r in rows if r.backend == "fused"}
    ran_fused = [r.backend == "native" and not c.native for r, c in zip(rows, cases)]
    keep = [not (f and r.variant.name in fused) for r, f in zip(rows, ran_fused)]
    rows = [r._replace(backend="fused") if f else r for r, f in zip(rows, ran_fused)]
    rows, cases = [r for r, k in zip(rows, keep) if k], [c for c, k in zip(cases, keep) if k]
    for _ in range(repeats):
        for k, case in enumerate(cases):
            train[k].append(_timed(case.train_step, dev))
            infer[k].append(_timed(case.infer, dev))
    # Memory last: the allocator setting it needs (every large block mapped and unmapped, so
    # that the resident set follows the tensors) makes each step fault in fresh pages, which
    # would slow the timed steps; they run with the allocator as `snnasr train` sets it.
    peaks = [peak_memory(case.train_step, dev) for case in cases]
    out: list[dict[str, Any]] = []
    for row, tr, inf, peak in zip(rows, train, infer, peaks):
        out.append(
            {
                "arch": row.variant.name,
                "backend": row.backend,
                "train_frames_per_s": n_frames / statistics.median(tr),
                "infer_frames_per_s": n_frames / statistics.median(inf),
                "peak_mem_bytes": peak,
                "train_s": tr,
                "infer_s": inf,
            }
        )
    ref = out[0]
    eager = {r["arch"]: r for r in out if r["backend"] == "eager"}
    for r in out:
        # Per round (the rows of one round ran back to back): the spread of the ratios.
        per_round = [a / b for a, b in zip(ref["train_s"], r["train_s"])]
        r["ratio_to_lstm_min"], r["ratio_to_lstm_max"] = min(per_round), max(per_round)
        e = eager.get(r["arch"])
        r["speedup_vs_eager"] = (
            statistics.median(a / b for a, b in zip(e["train_s"], r["train_s"])) if e and e is not r else None
        )
        r["ratio_to_lstm"] = r["train_frames_per_s"] / ref["train_frames_per_s"]
        r["infer_ratio_to_lstm"] = r["infer_frames_per_s"] / ref["infer_frames_per_s"]
        r["mem_ratio_to_lstm"] = r["peak_mem_bytes"] / ref["peak_mem_bytes"] if ref["peak_mem_bytes"] > 0 else None
    settings = {
        "device": str(dev),
        "hidden": hidden,
        "layers": layers,
        "frames": frames,
        "batch": batch,
        "padded": padded,
        "real_frames": n_frames,
        "repeats": repeats,
        "time_chunk": time_chunk,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if as_json:
        print(json.dumps({"settings": settings, "rows": out}, indent=1))
    else:
        _print_table(settings, out)
    return out


def _print_table(settings: dict, rows: list[dict]) -> None:
    s = settings
    print(
        f"device {s['device']}, {s['layers']} x {s['hidden']}, batch {s['batch']}, {s['frames']} frames"
        f"{' (padded: ' + str(s['real_frames']) + ' real)' if s['padded'] else ''}, {s['threads']} thread(s), "
        f"median of {s['repeats']} interleaved rounds, load average {s['load_average']:.2f}"
        f"{', time_chunk ' + str(s['time_chunk']) if s['time_chunk'] else ''}"
    )
    print(
        f"{'arch':<12} {'backend':<7} {'train fr/s':>10} {'vs lstm':>7} {'(rounds)':>11} {'vs eager':>8}"
        f" {'infer fr/s':>10} {'vs lstm':>7} {'peak MB':>8} {'vs lstm':>7}"
    )
    for r in rows:
        mem = f"{r['peak_mem_bytes'] / 2**20:>8.1f}" if r["peak_mem_bytes"] >= 0 else f"{'?':>8}"
        mem_ratio = f"{r['mem_ratio_to_lstm']:>7.2f}" if r["mem_ratio_to_lstm"] is not None else f"{'?':>7}"
        spread = f"{r['ratio_to_lstm_min']:.2f}-{r['ratio_to_lstm_max']:.2f}"
        vs_eager = f"{r['speedup_vs_eager']:>8.2f}" if r["speedup_vs_eager"] is not None else f"{'':>8}"
        print(
            f"{r['arch']:<12} {r['backend']:<7} {r['train_frames_per_s']:>10.0f} {r['ratio_to_lstm']:>7.2f}"
            f" {spread:>11} {vs_eager} {r['infer_frames_per_s']:>10.0f} {r['infer_ratio_to_lstm']:>7.2f}"
            f" {mem} {mem_ratio}"
        )
