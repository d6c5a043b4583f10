"""Kaldi ark/scp: every matrix kind Kaldi writes is readable (snnasr.kaldi.ark over kaldiio).

The fixtures in tests/data/kaldi_matrices were written by Kaldi's own code (kaldi-native-io,
``make_fixtures.py`` there).  Each is checked against :func:`decode_kaldi_matrix`, a decoder
written here from Kaldi's ``matrix/compressed-matrix.cc`` that shares no code with kaldiio.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from snnasr.io import DataError
from snnasr.kaldi.ark import (
    load_mat_entry,
    load_mat_rows,
    load_vec_int_entry,
    mat_shape,
    read_mat_ark,
    read_mat_scp,
    read_vec_int_ark,
    read_vec_int_scp,
    scp_entries,
    write_mat_ark_scp,
    write_vec_int_ark_scp,
)

FIXTURES = Path(__file__).parent / "data" / "kaldi_matrices"
KINDS = {"fm": "FM", "dm": "DM", "cm": "CM", "cm2": "CM2", "cm3": "CM3"}


def _uint_to_float(min_value: float, range_: float, q: np.ndarray, levels: float) -> np.ndarray:
    return min_value + range_ * q.astype(np.float64) / levels


def decode_kaldi_matrix(buf: bytes, pos: int) -> tuple[str, np.ndarray]:
    """Decode the binary matrix at ``buf[pos:]`` (after ``key ``): ``(kind token, float64 values)``.

    Kaldi's layout: ``\\0B``, then ``FM``/``DM`` ``\\4 rows \\4 cols`` + row-major data, or
    ``CM*`` + ``float min, float range, int32 rows, int32 cols``; ``CM2``: uint16 row-major,
    value = min + range * q / 65535; ``CM3``: uint8, q / 255; ``CM``: per column four uint16
    quantiles (p0, p25, p75, p100, each min + range * q / 65535), then uint8 data column by
    column, piecewise linear: q <= 64 on [p0, p25], q <= 192 on [p25, p75], else [p75, p100].
    """
    assert buf[pos : pos + 2] == b"\0B"
    end = buf.index(b" ", pos + 2)
    kind, pos = buf[pos + 2 : end].decode(), end + 1
    if kind in ("FM", "DM"):
        _, rows, _, cols = struct.unpack("<bibi", buf[pos : pos + 10])
        dtype = "<f4" if kind == "FM" else "<f8"
        return kind, np.frombuffer(buf, dtype, rows * cols, pos + 10).astype(np.float64).reshape(rows, cols)
    min_value, range_, rows, cols = struct.unpack("<ffii", buf[pos : pos + 16])
    pos += 16
    if kind == "CM2":
        return kind, _uint_to_float(min_value, range_, np.frombuffer(buf, "<u2", rows * cols, pos), 65535).reshape(
            rows, cols
        )
    if kind == "CM3":
        return kind, _uint_to_float(min_value, range_, np.frombuffer(buf, "u1", rows * cols, pos), 255).reshape(
            rows, cols
        )
    assert kind == "CM", kind
    heads = _uint_to_float(min_value, range_, np.frombuffer(buf, "<u2", 4 * cols, pos), 65535).reshape(cols, 4)
    data = np.frombuffer(buf, "u1", rows * cols, pos + 8 * cols).reshape(cols, rows).astype(np.float64)
    out = np.empty((cols, rows))
    for c, (p0, p25, p75, p100) in enumerate(heads):
        q = data[c]
        out[c] = np.where(
            q <= 64,
            p0 + (p25 - p0) * q / 64,
            np.where(q <= 192, p25 + (p75 - p25) * (q - 64) / 128, p75 + (p100 - p75) * (q - 192) / 63),
        )
    return kind, out.T


def independent(name: str) -> dict[str, tuple[str, np.ndarray]]:
    """Every entry of fixture ``name`` through its scp offsets, by the decoder above."""
    buf = (FIXTURES / f"{name}.ark").read_bytes()
    out = {}
    for line in (FIXTURES / f"{name}.scp").read_text().splitlines():
        key, loc = line.split()
        out[key] = decode_kaldi_matrix(buf, int(loc.rsplit(":", 1)[1]))
    return out


@pytest.fixture
def in_fixtures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)  # the shipped scps hold relative paths, as Kaldi's may


@pytest.mark.parametrize("name", [*KINDS, "auto"])
def test_every_matrix_kind_matches_the_independent_decoder(name: str, in_fixtures: None) -> None:
    ref = independent(name)
    if name in KINDS:
        assert {kind for kind, _ in ref.values()} == {KINDS[name]}
    else:  # copy-feats --compress=true: CM for the 20-frame matrix, CM2 for the 3-frame one
        assert {k: kind for k, (kind, _) in ref.items()} == {"utt_a": "CM", "utt_b": "CM2"}
    for got in (dict(read_mat_scp(f"{name}.scp")), dict(read_mat_ark(f"{name}.ark"))):
        assert list(got) == ["utt_a", "utt_b"]
        for key, (kind, want) in ref.items():
            assert got[key].dtype == (np.float64 if kind == "DM" else np.float32)
            scale = max(float(np.abs(want).max()), 1.0)
            np.testing.assert_allclose(got[key], want, rtol=0, atol=2e-6 * scale)


@pytest.mark.parametrize("name", [*KINDS, "auto"])
def test_shapes_from_headers_and_entries_read_on_demand(name: str, in_fixtures: None) -> None:
    """The lazy dataset's index: header-only shapes and one-entry reads agree with a full read."""
    full = dict(read_mat_scp(f"{name}.scp"))
    for key, rxfile, n in scp_entries(f"{name}.scp"):
        assert mat_shape(rxfile, f"{name}.scp:{n}", key) == full[key].shape
        np.testing.assert_array_equal(load_mat_entry(rxfile, f"{name}.scp:{n}", key), full[key])
        for start, end in ((0, 1), (1, 3), (2, full[key].shape[0]), (3, 3)):
            np.testing.assert_array_equal(load_mat_rows(rxfile, "x", key, start, end), full[key][start:end])


@pytest.mark.parametrize("name, step", [("cm", 1 / 64), ("cm2", 1 / 65535), ("cm3", 1 / 255), ("auto", 1 / 64)])
def test_compressed_kinds_stay_within_their_quantisation_step(name: str, step: float, in_fixtures: None) -> None:
    exact = dict(read_mat_scp("fm.scp"))
    for key, got in read_mat_scp(f"{name}.scp"):
        span = float(exact[key].max() - exact[key].min())
        assert np.abs(got - exact[key]).max() <= span * step


def test_text_ark_and_double_equal_the_float_source(in_fixtures: None) -> None:
    exact = dict(read_mat_scp("fm.scp"))
    for key, got in read_mat_ark("text.ark"):
        np.testing.assert_allclose(got, exact[key], rtol=1e-6)
    for key, got in read_mat_scp("dm.scp"):
        np.testing.assert_array_equal(got, exact[key])


@pytest.mark.parametrize("compress", [None, "CM", "CM2", "CM3"])
def test_written_arks_read_back_with_scp_offsets(tmp_path: Path, compress: str | None) -> None:
    mats = {f"u{i}": np.linspace(-i, i + 1, 12 * (i + 2), dtype=np.float32).reshape(-1, 3) for i in range(3)}
    assert write_mat_ark_scp(mats.items(), tmp_path / "f.ark", tmp_path / "f.scp", compress=compress) == 3
    got = dict(read_mat_scp(tmp_path / "f.scp"))
    buf = (tmp_path / "f.ark").read_bytes()
    for line in (tmp_path / "f.scp").read_text().splitlines():
        key, loc = line.split()
        kind, want = decode_kaldi_matrix(buf, int(loc.rsplit(":", 1)[1]))
        assert kind == (compress or "FM")
        np.testing.assert_allclose(got[key], want, atol=1e-5)
        np.testing.assert_allclose(got[key], mats[key], atol=0.05 if compress else 0)


def test_int_vectors_binary_text_and_gzip(tmp_path: Path) -> None:
    vecs = {"a": np.arange(7, dtype=np.int32), "b": np.array([3, 3, 1], np.int32)}
    write_vec_int_ark_scp(vecs.items(), tmp_path / "v.ark", tmp_path / "v.scp")
    (tmp_path / "v.ark.gz").write_bytes(gzip.compress((tmp_path / "v.ark").read_bytes()))
    (tmp_path / "t.ark.gz").write_bytes(gzip.compress(b"a 0 1 2 3 4 5 6\nb 3 3 1\n"))
    for key, rxfile, n in scp_entries(tmp_path / "v.scp"):  # the lazy dataset's per-item read
        np.testing.assert_array_equal(load_vec_int_entry(rxfile, f"v.scp:{n}", key), vecs[key])
    for got in (
        read_vec_int_scp(tmp_path / "v.scp"),
        read_vec_int_ark(tmp_path / "v.ark"),
        read_vec_int_ark(tmp_path / "v.ark.gz"),
        read_vec_int_ark(tmp_path / "t.ark.gz"),
    ):
        got = dict(got)
        assert list(got) == ["a", "b"] and all(np.array_equal(got[k], vecs[k]) for k in vecs)


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    scp = tmp_path / "feats.scp"
    scp.write_text("u1 compute-feats foo.wav - |\n")
    with pytest.raises(DataError, match=r"feats.scp:1: entry 'u1' is a command"):
        list(read_mat_scp(scp))
    scp.write_text(f"u1 {tmp_path / 'missing.ark'}:6\n")
    with pytest.raises(DataError, match=r"missing.ark not found"):
        list(read_mat_scp(scp))
    (tmp_path / "bad.ark").write_bytes(b"u1 \0BXM garbage")
    scp.write_text(f"u1 {tmp_path / 'bad.ark'}:3\n")
    with pytest.raises(DataError, match=r"feats.scp:1: cannot read 'u1'"):
        list(read_mat_scp(scp))
    with pytest.raises(DataError, match=r"not an int vector"):
        list(read_vec_int_scp(_abs_scp(tmp_path, "fm")))
    with pytest.raises(DataError, match=r"not found; run the stage"):
        list(read_mat_scp(tmp_path / "nope.scp"))


def _abs_scp(tmp_path: Path, name: str) -> Path:
    """A copy of fixture ``name``'s scp with absolute paths."""
    out = tmp_path / f"{name}.scp"
    lines = (FIXTURES / f"{name}.scp").read_text().splitlines()
    out.write_text("".join(f"{k} {FIXTURES / loc}\n" for k, loc in (line.split() for line in lines)))
    return out
