"""snnasr prep timit on generated LDC-layout copies: splits, tables, lang maps, and every bad input."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from timit_fixture import make_timit, write_speaker_list

from snnasr import cli as cli_module
from snnasr.data.datadir import read_segments, read_table, validate_data_dir
from snnasr.data.timit import phone_map, prepare_timit, standard_speakers
from snnasr.io import DataError
from snnasr.lang import load_lang


def _speakers(recipe, name):
    return sorted(set(read_table(recipe / "data" / name / "utt2spk").values()))


def test_standard_lists_are_kaldis():
    dev, test = standard_speakers("dev"), standard_speakers("test")
    assert len(dev) == len(set(dev)) == 50 and len(test) == len(set(test)) == 24
    assert not set(dev) & set(test)
    assert dev[0] == "faks0" and test[:3] == ["mdab0", "mwbt0", "felc0"] and test[-1] == "fmld0"


def test_upper_case_ldc_copy(tmp_path):
    mini = make_timit(tmp_path / "TIMIT")
    recipe = tmp_path / "recipe"
    assert prepare_timit(mini.root, recipe) == {"train": 4, "dev": 4, "test": 4}
    for name, group in (("train", "train"), ("dev", "dev"), ("test", "test")):
        assert validate_data_dir(recipe / "data" / name) == {"utterances": 4, "speakers": 2}
        assert _speakers(recipe, name) == sorted(mini.speakers[group])
    wav = read_table(recipe / "data" / "train" / "wav.scp")
    assert sorted(wav) == ["fcjf0_si1027", "fcjf0_sx127", "mdab1_si1027", "mdab1_sx127"]  # no SA
    assert wav["fcjf0_si1027"] == str(mini.audio["fcjf0_si1027"].resolve())
    assert wav["fcjf0_si1027"].endswith("TRAIN/DR1/FCJF0/SI1027.WAV")
    assert mini.audio["fcjf0_si1027"].read_bytes().startswith(b"NIST_1A")  # the SPHERE file went through
    dev = read_table(recipe / "data" / "dev" / "wav.scp")
    assert not any(utt.startswith(tuple(mini.speakers["other"])) for utt in dev)
    # re-running over existing output is safe and gives the same tables
    before = (recipe / "data" / "dev" / "text").read_text()
    assert prepare_timit(mini.root, recipe) == {"train": 4, "dev": 4, "test": 4}
    assert (recipe / "data" / "dev" / "text").read_text() == before


def test_phone_segments_keep_q_and_text_drops_it(tmp_path):
    mini = make_timit(tmp_path / "TIMIT")
    recipe = tmp_path / "recipe"
    prepare_timit(mini.root, recipe)
    segs = read_segments(recipe / "data" / "test" / "phone_segments")
    text = read_table(recipe / "data" / "test" / "text")
    for utt in segs:
        assert segs[utt] == mini.segments[utt]
        assert "q" in [p for _, _, p in segs[utt]]
        assert text[utt].split() == [p for _, _, p in mini.segments[utt] if p != "q"]
        assert text[utt].startswith("h# ") and text[utt].endswith(" h#")


def test_lower_case_copy_with_riff_duplicates(tmp_path):
    mini = make_timit(tmp_path / "timit", upper=False, riff_copies=True)
    recipe = tmp_path / "recipe"
    assert prepare_timit(mini.root, recipe) == {"train": 4, "dev": 4, "test": 4}
    wav = read_table(recipe / "data" / "dev" / "wav.scp")
    assert all(p.endswith(".wav") and not p.endswith(".wav.wav") for p in wav.values())
    assert "/test/dr1/faks0/si1027.wav" in wav["faks0_si1027"]


def test_riff_copies_only_and_corpus_one_level_up(tmp_path):
    mini = make_timit(tmp_path / "download" / "TIMIT", riff_copies=True)
    for path in mini.audio.values():
        path.unlink()  # keep only the SA1.WAV.wav-style copies
    recipe = tmp_path / "recipe"
    assert prepare_timit(tmp_path / "download", recipe) == {"train": 4, "dev": 4, "test": 4}
    wav = read_table(recipe / "data" / "test" / "wav.scp")
    assert all(p.endswith(".WAV.wav") for p in wav.values())


def test_mixed_case_names(tmp_path):
    mini = make_timit(tmp_path / "TIMIT", upper=False)
    (mini.root / "train").rename(mini.root / "Train")
    (mini.root / "test" / "dr1").rename(mini.root / "test" / "Dr1")
    assert prepare_timit(mini.root, tmp_path / "recipe") == {"train": 4, "dev": 4, "test": 4}


def test_lang_levels_and_maps(tmp_path):
    mini = make_timit(tmp_path / "TIMIT", train_speakers=1, dev_speakers=1, test_speakers=1, other_speakers=0)
    prepare_timit(mini.root, tmp_path / "recipe")
    lang = load_lang(tmp_path / "recipe" / "data" / "lang")
    assert [lang.num_classes(level) for level in ("phone61", "phone48", "phone39")] == [60, 48, 39]
    assert "q" not in lang.symbols("phone61")
    assert (lang.default, lang.score, lang.silence, lang.segment_level) == ("phone48", "phone39", ["sil"], "phone61")
    m48, m39 = lang.symbol_map("phone61", "phone48"), lang.symbol_map("phone61", "phone39")
    assert (m48["ao"], m39["ao"]) == ("ao", "aa")
    assert (m48["zh"], m39["zh"]) == ("zh", "sh")
    assert (m48["ix"], m39["ix"]) == ("ix", "ih")
    assert (m48["pcl"], m39["pcl"], m48["h#"], m48["ax-h"]) == ("cl", "sil", "sil", "ax")
    assert lang.symbol_map("phone48", "phone39")["vcl"] == "sil"
    fold = lang.fold("phone61", "phone39")
    assert fold.min() >= 0 and len(set(fold.tolist())) == 39
    assert phone_map()["q"] == ("-", "-")


def test_custom_speaker_lists(tmp_path):
    mini = make_timit(tmp_path / "TIMIT", other_speakers=2)
    dev = write_speaker_list(tmp_path / "dev.list", ["# held-out voices", mini.speakers["other"][0].upper()])
    test = write_speaker_list(tmp_path / "test.list", [mini.speakers["other"][1], "", mini.speakers["test"][0]])
    recipe = tmp_path / "recipe"
    assert prepare_timit(mini.root, recipe, dev_speakers=dev, test_speakers=test) == {"train": 4, "dev": 2, "test": 4}
    assert _speakers(recipe, "dev") == [mini.speakers["other"][0]]
    assert _speakers(recipe, "test") == sorted([mini.speakers["other"][1], mini.speakers["test"][0]])


def test_standard_lists_matching_nothing_point_at_the_options(tmp_path):
    mini = make_timit(tmp_path / "TIMIT", dev_speakers=0, test_speakers=0, other_speakers=2)
    with pytest.raises(DataError, match=r"none of the 50 standard dev speakers.*--dev-speakers FILE --test-speakers"):
        prepare_timit(mini.root, tmp_path / "recipe")
    assert not (tmp_path / "recipe").exists()


def test_partial_copy_keeps_the_standard_speakers_it_has(tmp_path):
    mini = make_timit(tmp_path / "TIMIT", dev_speakers=1, test_speakers=3)
    assert prepare_timit(mini.root, tmp_path / "recipe") == {"train": 4, "dev": 2, "test": 6}


@pytest.mark.parametrize(
    "dev, test, message",
    [
        (["fzzz0", "nobody9"], ["mdab0"], r"dev.list: 1 dev speakers not in .*nobody9"),
        (["fzzz0"], ["fzzz0"], r"fzzz0 in both the dev and the test list"),
        ([], ["mdab0"], r"dev.list: dev speaker list is empty"),
    ],
)
def test_bad_custom_lists(tmp_path, dev, test, message):
    mini = make_timit(tmp_path / "TIMIT")
    with pytest.raises(DataError, match=message):
        prepare_timit(
            mini.root,
            tmp_path / "recipe",
            dev_speakers=write_speaker_list(tmp_path / "dev.list", dev),
            test_speakers=write_speaker_list(tmp_path / "test.list", test),
        )
    assert not (tmp_path / "recipe").exists()


# --- bad inputs: each mutates a fresh mini corpus; prep must fail with one line and write nothing ---


def _write_phn(mini, utt, rows):
    mini.audio[utt].with_suffix(".PHN").write_text("".join(f"{s} {e} {p}\n" for s, e, p in rows))


def _replace_audio(mini, utt, audio, rate):
    sf.write(mini.audio[utt], audio, rate, format="WAV", subtype="PCM_16")


def _truncate(mini, utt):
    data = mini.audio[utt].read_bytes()
    mini.audio[utt].write_bytes(data[: len(data) // 2])


def _drop_train_audio(mini):
    for _utt, path in mini.audio.items():
        if "/TRAIN/" in str(path):
            path.unlink()


UTT = "fcjf0_si1027"  # the NIST SPHERE one
BAD_INPUTS = {
    "missing corpus": (lambda m: shutil.rmtree(m.root), r"corpus dir not found"),
    "empty corpus": (lambda m: [shutil.rmtree(p) for p in m.root.iterdir()], r"corpus dir is empty"),
    "only TRAIN": (lambda m: shutil.rmtree(m.root / "TEST"), r"has TRAIN/ but no TEST/"),
    "no audio": (_drop_train_audio, r"TRAIN: no audio found"),
    "wav without phn": (lambda m: m.audio[UTT].with_suffix(".PHN").unlink(), r"SI1027.WAV: no .PHN beside"),
    "phn without wav": (lambda m: m.audio["mdab1_sx127"].unlink(), r"SX127.PHN: no .WAV beside"),
    "overlap": (
        lambda m: _write_phn(m, UTT, [(0, 900, "h#"), (800, 1500, "aa"), (1500, 2000, "h#")]),
        r"SI1027.PHN:2: segment starts at 800, inside the previous one",
    ),
    "reversed": (
        lambda m: _write_phn(m, UTT, [(0, 900, "h#"), (1500, 1000, "aa")]),
        r"SI1027.PHN:2: segment ends \(1000\) before it starts",
    ),
    "gap": (
        lambda m: _write_phn(m, UTT, [(0, 900, "h#"), (950, 1500, "aa"), (1500, 2000, "h#")]),
        r"SI1027.PHN:2: segment starts at 950, after a gap",
    ),
    "beyond audio": (
        lambda m: _write_phn(m, UTT, [(0, 900, "h#"), (900, 10**6, "h#")]),
        r"SI1027.PHN: the segments run 61.98 s past the end of the audio .*more than the 0.5 s of edge silence",
    ),
    "unknown label": (
        lambda m: _write_phn(m, UTT, [(0, 900, "h#"), (900, 1000, "xyz")]),
        r"SI1027.PHN:2: unknown phone 'xyz'",
    ),
    "garbled phn": (lambda m: _write_phn(m, UTT, [(0, "nine", "h#")]), r"SI1027.PHN:1: expected"),
    "unreadable audio": (lambda m: m.audio[UTT].write_bytes(b"not audio at all" * 10), r"SI1027.WAV: unreadable audio"),
    "zero-byte audio": (lambda m: m.audio[UTT].write_bytes(b""), r"SI1027.WAV: unreadable audio"),
    "no samples": (lambda m: _replace_audio(m, UTT, np.zeros(0, np.int16), 16000), r"SI1027.WAV: audio is empty"),
    "truncated sphere": (lambda m: _truncate(m, UTT), r"SI1027.WAV: truncated audio \(header declares"),
    "truncated riff": (lambda m: _truncate(m, "mdab1_sx127"), r"SX127.WAV: truncated audio"),
    "8 kHz": (lambda m: _replace_audio(m, UTT, np.zeros(8000, np.int16), 8000), r"sample rate 8000 Hz, expected 16000"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_data_error_and_writes_nothing(tmp_path, case):
    mutate, message = BAD_INPUTS[case]
    mini = make_timit(tmp_path / "TIMIT", dev_speakers=1, test_speakers=1, other_speakers=0)
    mutate(mini)
    with pytest.raises(DataError, match=message) as err:
        prepare_timit(mini.root, tmp_path / "recipe")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "recipe").exists()


def _run_main(monkeypatch, capsys, args):
    """Run the installed entry point (snnasr.cli.main) as a user would; return (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["snnasr", *map(str, args)])
    with pytest.raises(SystemExit) as ex:
        cli_module.main()
    return ex.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["unknown label", "truncated sphere", "only TRAIN"])
def test_cli_reports_one_line_and_exit_1(tmp_path, monkeypatch, capsys, case):
    mini = make_timit(tmp_path / "TIMIT", dev_speakers=1, test_speakers=1, other_speakers=0)
    BAD_INPUTS[case][0](mini)
    code, err = _run_main(monkeypatch, capsys, ["prep", "timit", mini.root, "-d", tmp_path / "recipe"])
    assert code == 1
    # One warning line per dropped utterance, then the one error line (1 bad of 4 > 5 %).
    lines = [line for line in err.splitlines() if ": warning: dropped " not in line]
    assert len(lines) == 1 and lines[0].startswith("snnasr prep timit: ") and "Traceback" not in err
    assert not (tmp_path / "recipe" / "data").exists()


def test_cli_no_match_names_the_options(tmp_path, monkeypatch, capsys):
    mini = make_timit(tmp_path / "TIMIT", dev_speakers=0, test_speakers=0, other_speakers=1)
    code, err = _run_main(monkeypatch, capsys, ["prep", "timit", mini.root, "-d", tmp_path / "recipe"])
    assert code == 1 and "--dev-speakers" in err and err.count("\n") == 1


def test_cli_success(tmp_path):
    mini = make_timit(tmp_path / "TIMIT")
    dev = write_speaker_list(tmp_path / "dev.list", mini.speakers["dev"])
    result = CliRunner().invoke(
        cli_module.cli, ["prep", "timit", str(mini.root), "--dev-speakers", str(dev), "-d", str(tmp_path / "recipe")]
    )
    assert result.exit_code == 0, result.output
    assert "utterances: train 4, dev 4, test 4" in result.output
    assert (tmp_path / "recipe" / "data" / "lang" / "labels.yaml").is_file()


def test_cli_error_via_clirunner_exits_1(tmp_path):
    result = CliRunner().invoke(cli_module.cli, ["prep", "timit", str(tmp_path / "nowhere"), "-d", str(tmp_path)])
    assert result.exit_code == 1 and isinstance(result.exception, DataError)
    assert not (tmp_path / "data").exists()
