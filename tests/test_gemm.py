"""oneDNN products equal torch's (float32 rounding); other dtypes take torch's op unchanged."""

import pytest
import torch
import torch.nn.functional as F

from snnasr.models.gemm import PACKED_MIN_MACS, PackedWeight, linear, mm, onednn


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_products_equal_torch(dtype):
    torch.manual_seed(0)
    x = torch.randn(6, 3, 7, dtype=dtype, requires_grad=True)
    w = torch.randn(5, 7, dtype=dtype, requires_grad=True)
    g = torch.randn(6, 3, 5, dtype=dtype)
    xr, wr = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    (linear(x, w) * g).sum().backward()
    (F.linear(xr, wr) * g).sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(linear(x, w), F.linear(xr, wr), atol=tol)
    assert torch.allclose(x.grad, xr.grad, atol=tol) and torch.allclose(w.grad, wr.grad, atol=tol)
    a, b = torch.randn(4, 9, dtype=dtype), torch.randn(9, 2, dtype=dtype)
    assert torch.allclose(mm(a.t().contiguous().t(), b), a @ b, atol=tol)
    bias, s = torch.randn(3, 5, dtype=dtype), torch.randn(3, 7, dtype=dtype)
    for rows in (3, PACKED_MIN_MACS):  # small: torch's GEMM; large: oneDNN where it applies
        packed = PackedWeight(w.detach(), rows)
        assert torch.allclose(packed.addmm(bias, s), torch.addmm(bias, s, w.detach().t()), atol=tol)
        assert (packed.packed is not None) == (rows > 3 and onednn(w))
    assert not onednn(torch.zeros(1, dtype=torch.float64))


def test_availability_check_draws_no_random_numbers():
    """It runs on first use, mid-training: a draw would shift every later dropout mask."""
    from snnasr.models import gemm

    gemm._onednn_works.cache_clear()
    state = torch.get_rng_state()
    gemm._onednn_works()
    assert torch.equal(state, torch.get_rng_state())
