import json

import pytest
import torch
from click.testing import CliRunner

from snnasr.bench import VARIANTS, peak_memory, run_bench
from snnasr.cli import cli
from snnasr.io import ConfigError
from snnasr.models import native


def test_bench_reports_every_variant_and_backend_against_the_lstm(capsys):
    rows = run_bench(hidden=8, layers=1, frames=6, batch=2, device="cpu", repeats=2, padded=True)
    spiking = [v.name for v in VARIANTS if v.spiking]
    expected = [(v.name, "torch") for v in VARIANTS if not v.spiking]
    native_variants = {"lif", "proposed", "proposed-v1"} if native.available() else set()  # the others run fused
    expected += [(n, b) for n in spiking for b in ("native", "fused", "eager") if b != "native" or n in native_variants]
    assert sorted((r["arch"], r["backend"]) for r in rows) == sorted(expected)
    assert rows[0]["arch"] == "lstm" and rows[0]["ratio_to_lstm"] == 1.0
    for r in rows:
        assert r["train_frames_per_s"] > 0 and r["infer_frames_per_s"] > 0
        assert r["ratio_to_lstm"] == pytest.approx(r["train_frames_per_s"] / rows[0]["train_frames_per_s"])
        assert len(r["train_s"]) == 2 and r["ratio_to_lstm_min"] <= r["ratio_to_lstm_max"]
        # Kernel rows carry their speed-up over the eager row of the same variant, measured per round.
        assert (r["speedup_vs_eager"] is not None) == (r["backend"] in ("native", "fused"))
    out = capsys.readouterr().out
    assert "vs lstm" in out and "padded: 9 real" in out  # lengths 6, 3


def test_bench_json_rows_and_selection():
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "--archs",
            "proposed",
            "--hidden",
            "8",
            "--layers",
            "1",
            "--frames",
            "5",
            "--batch",
            "2",
            "--device",
            "cpu",
            "--backend",
            "fused",
            "--repeats",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [(r["arch"], r["backend"]) for r in data["rows"]] == [("lstm", "torch"), ("proposed", "fused")]
    assert set(data["rows"][1]) >= {
        "arch",
        "backend",
        "train_frames_per_s",
        "infer_frames_per_s",
        "peak_mem_bytes",
        "ratio_to_lstm",
    }
    assert data["settings"]["frames"] == 5


def test_native_alone_shows_what_ran():
    """``--backend native`` of a variant without native kernels measures and labels it ``fused``."""
    rows = run_bench(
        archs=["alif"], hidden=8, layers=1, frames=5, batch=2, device="cpu", backends=["native"], repeats=1
    )
    assert [(r["arch"], r["backend"]) for r in rows] == [("lstm", "torch"), ("alif", "fused")]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch": 0}, "--batch=0"),
        ({"frames": -1}, "--frames"),
        ({"archs": ["transformer"]}, "--archs"),
        ({"backends": ["triton"]}, "--backend"),
    ],
)
def test_bench_bad_arguments_are_one_line_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        run_bench(**{"hidden": 8, "frames": 5, "batch": 2, "device": "cpu", "repeats": 1, **kwargs})


def test_peak_memory_sees_a_large_temporary():
    def step():
        a = torch.ones(4_000_000)  # 16 MB
        del a

    peak = peak_memory(step, torch.device("cpu"))
    assert peak == -1 or peak > 10 * 2**20


def test_bench_on_absent_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        run_bench(device="cuda", hidden=8, batch=2, frames=5, repeats=1)
