"""glibc malloc settings: kept freed memory is reused without faulting in fresh pages."""

import resource

import pytest
import torch

from snnasr.malloc import _libc, keep_freed_memory, return_freed_memory


def _faults_of_one_large_temporary() -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(5 * 2**20).fill_(1.0)  # 20 MB, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(_libc() is None, reason="not glibc: the settings are no-ops")
def test_kept_memory_is_reused_and_returned_memory_is_faulted_in_again():
    try:
        assert keep_freed_memory()
        _faults_of_one_large_temporary()
        assert _faults_of_one_large_temporary() < 100  # the same pages again (20 MB = 5120 pages)
        assert return_freed_memory()
        assert _faults_of_one_large_temporary() > 1000  # mapped afresh each time
    finally:
        keep_freed_memory()
