"""The native scan's C library: built once into the cache, shared safely, absent cleanly."""

import shutil

import pytest

from snnasr.models import compiled

needs_cc = pytest.mark.skipif(compiled.compiler() is None, reason="no C compiler on this machine")


@needs_cc
def test_builds_once_into_the_cache_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNASR_CACHE_DIR", str(tmp_path))
    lib = compiled.library.__wrapped__()  # not the process's cached library
    assert lib is not None and hasattr(lib, "gated_forward_f") and hasattr(lib, "gated_backward_d")
    built = list(tmp_path.iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no temporary left behind
    stamp = built[0].stat().st_mtime_ns
    assert compiled.library.__wrapped__() is not None
    assert [p.stat().st_mtime_ns for p in tmp_path.iterdir()] == [stamp]  # reused, not rebuilt


def test_no_compiler_means_no_library(monkeypatch):
    monkeypatch.setattr(compiled, "compiler", lambda: None)
    assert compiled.library.__wrapped__() is None


def test_a_failing_compiler_means_no_library_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SNNASR_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", shutil.which("false") or "false")
    if compiled.compiler() != shutil.which("false"):
        pytest.skip("no `false` program to stand in for a broken compiler")
    assert compiled.library.__wrapped__() is None
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_cache_dir_falls_back_to_a_private_one(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SNNASR_CACHE_DIR", str(blocker / "cache"))
    path = compiled.cache_dir()
    assert path.is_dir() and blocker not in path.parents
