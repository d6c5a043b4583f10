"""Lhotse manifests out and back in: the data dir round-trips, alignments included (real recordings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from yesno_fixture import yesno_recipe

from snnasr.cli import cli
from snnasr.data.datadir import read_segments, read_table
from snnasr.data.fsdd import prepare_fsdd
from snnasr.io import DataError

lhotse = pytest.importorskip("lhotse", reason="the [lhotse] extra is not installed: pip install 'snnasr[lhotse]'")
from lhotse.supervision import AlignmentItem  # noqa: E402
from lhotse.utils import compute_num_samples  # noqa: E402

from snnasr.lhotse_io import export_lhotse, prepare_lhotse  # noqa: E402

FSDD = Path(__file__).parent / "data" / "fsdd"
TABLES = ("wav.scp", "text", "utt2spk", "spk2utt")


def test_fsdd_data_dir_round_trips_through_lhotse(tmp_path: Path) -> None:
    prepare_fsdd(FSDD, tmp_path / "a")
    result = CliRunner().invoke(cli, ["export", "lhotse", str(tmp_path / "a" / "data" / "test"), str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    recs = lhotse.load_manifest(tmp_path / "m" / "test_recordings.jsonl.gz")
    sups = lhotse.load_manifest(tmp_path / "m" / "test_supervisions.jsonl.gz")
    lhotse.validate_recordings_and_supervisions(recs, sups)  # Lhotse's own consistency checks
    sup = sups[sorted(s.id for s in sups)[0]]
    assert sup.speaker and sup.text and [it.symbol for it in sup.alignment["phone"]][::2] == ["sil", "sil"]
    assert recs[sup.recording_id].sampling_rate == 8000

    args = ["prep", "lhotse", str(tmp_path / "m" / "test_recordings.jsonl.gz")]
    args += [str(tmp_path / "m" / "test_supervisions.jsonl.gz"), "--set", "test", "-d", str(tmp_path / "b")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    a, b = tmp_path / "a" / "data" / "test", tmp_path / "b" / "data" / "test"
    for name in TABLES:
        assert read_table(b / name) == read_table(a / name), name
    assert read_segments(b / "phone_segments") == read_segments(a / "phone_segments")
    assert (tmp_path / "b" / "data" / "lang" / "labels.yaml").is_file()
    # the imported set goes through the pipeline: features make frame labels from its segments
    result = CliRunner().invoke(cli, ["features", "--sets", "test", "--type", "mfcc", "-d", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert (b / "labels_phone.scp").is_file()


def test_kaldi_frame_alignments_are_exported_as_alignment_items(tmp_path: Path) -> None:
    data = yesno_recipe(tmp_path) / "data" / "train_yesno"
    assert export_lhotse(data, tmp_path / "m") == {"recordings": 2, "supervisions": 2, "aligned": 2}
    sups = lhotse.load_manifest(tmp_path / "m" / "train_yesno_supervisions.jsonl.gz")
    items = sups["0_0_0_0_1_1_1_1"].alignment["phone"]
    assert [it.symbol for it in items][:3] == ["SIL", "N", "SIL"]  # text: NO NO NO NO YES YES YES YES
    assert items[0].start == 0 and all(
        x.start + x.duration == pytest.approx(y.start) for x, y in zip(items, items[1:])
    )  # frame runs tile the utterance at the 10 ms frame shift


def test_part_of_a_recording_is_cut_out_and_gaps_become_sil(tmp_path: Path) -> None:
    wav = sorted((FSDD / "recordings").glob("*.wav"))[0]
    n, rate = sf.info(str(wav)).frames, sf.info(str(wav)).samplerate
    rec = lhotse.Recording.from_file(wav, recording_id="r1")
    half = n / rate / 2
    sups = [
        lhotse.SupervisionSegment(
            "spk-a", "r1", 0.0, half, text="ONE", speaker="spk", alignment={"phone": [AlignmentItem("w", 0.05, 0.1)]}
        ),  # fmt: skip
        lhotse.SupervisionSegment(
            "spk-b", "r1", half, half, text="TWO", speaker="spk", alignment={"phone": [AlignmentItem("w", half, half)]}
        ),  # fmt: skip
    ]
    lhotse.RecordingSet.from_recordings([rec]).to_file(tmp_path / "r.jsonl.gz")
    lhotse.SupervisionSet.from_segments(sups).to_file(tmp_path / "s.jsonl.gz")
    counts = prepare_lhotse(tmp_path / "r.jsonl.gz", tmp_path / "s.jsonl.gz", tmp_path / "x", "set")
    assert counts == {"utterances": 2, "aligned": 2, "clips written": 2}
    d = tmp_path / "x" / "data" / "set"
    clip, _ = sf.read(read_table(d / "wav.scp")["spk-b"])
    full, _ = sf.read(str(wav))
    start = compute_num_samples(half, rate)  # Lhotse's rounding of the offset
    assert abs(len(clip) - (n - start)) <= 1  # Lhotse may pad the last sample
    m = min(len(clip), n - start)
    np.testing.assert_allclose(clip[:m], full[start : start + m], atol=1 / 32768)
    segs = read_segments(d / "phone_segments")
    assert [p for _, _, p in segs["spk-a"]] == ["sil", "w", "sil"] and segs["spk-a"][1][:2] == (400, 1200)


def test_bad_manifests_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a Lhotse manifest"):
        prepare_lhotse(tmp_path / "bad.jsonl.gz", tmp_path / "bad.jsonl.gz", tmp_path / "x", "s")
    prepare_fsdd(FSDD, tmp_path / "a")
    export_lhotse(tmp_path / "a" / "data" / "dev", tmp_path / "m")
    recs, sups = tmp_path / "m" / "dev_recordings.jsonl.gz", tmp_path / "m" / "dev_supervisions.jsonl.gz"
    with pytest.raises(DataError, match="a SupervisionSet, expected a RecordingSet; check the argument order"):
        prepare_lhotse(sups, recs, tmp_path / "x", "s")
    prepare_lhotse(recs, sups, tmp_path / "y", "dev")  # writes a lang of sil + the digit words
    (tmp_path / "y" / "data" / "lang" / "phone.txt").write_text("x 0\n")
    with pytest.raises(DataError, match="lang: has no symbol 'four' of these alignments"):
        prepare_lhotse(recs, sups, tmp_path / "y", "dev2")
