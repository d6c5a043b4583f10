"""glibc malloc settings: in a steady loop, kept freed memory is reused without faulting in pages."""

import resource

import pytest
import torch

from snnasr.malloc import _libc, keep_freed_memory, return_freed_memory


def _faults_of_a_step() -> int:
    """Page faults of one "training step": several large temporaries of mixed sizes, freed together.

    One size alone is a poor model: a 64-byte aligned request is a little larger than the chunk
    its predecessor freed, so glibc reuses memory only once freed chunks have coalesced, which a
    step's mix of sizes gives after a few iterations."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    temporaries = [torch.empty(n).fill_(1.0) for n in (5 * 2**20, 3 * 2**20, 2**20, 7 * 2**20)]  # 64 MB
    del temporaries
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _steady_faults() -> int:
    for _ in range(12):  # warm-up: the heap settles
        _faults_of_a_step()
    return max(_faults_of_a_step() for _ in range(3))


@pytest.mark.skipif(_libc() is None, reason="not glibc: the settings are no-ops")
def test_kept_memory_is_reused_in_a_steady_loop():
    assert keep_freed_memory()
    assert _steady_faults() < 100  # the same pages again (a step writes 16384 pages)


@pytest.mark.skipif(_libc() is None, reason="not glibc: the settings are no-ops")
def test_both_settings_are_accepted_by_glibc():
    """Whether returned memory is faulted in again depends on the heap's layout (a free chunk
    inside the heap is reused whatever the mmap threshold), so only the settings are pinned."""
    try:
        assert return_freed_memory()
    finally:
        assert keep_freed_memory()
