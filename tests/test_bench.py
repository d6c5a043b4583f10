import pytest

from snnasr.bench import VARIANTS, run_bench
from snnasr.io import ConfigError


def test_bench_reports_every_variant_against_the_lstm(capsys):
    rows = run_bench(device="cpu", hidden=8, batch=2, steps=5, repeats=1)
    assert [r["model"] for r in rows] == [name for name, _, _ in VARIANTS]
    assert rows[0]["ratio_to_lstm"] == 1.0
    assert all(r["frames_per_s"] > 0 and r["seconds"] > 0 for r in rows)
    assert "vs lstm" in capsys.readouterr().out


def test_bench_on_absent_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        run_bench(device="cuda", hidden=8, batch=2, steps=5, repeats=1)
