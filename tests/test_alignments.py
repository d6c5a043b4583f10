"""prep kaldi: frame labels and data/lang from Kaldi's real yes/no alignments."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from snnasr.cli import cli
from snnasr.data.datadir import read_table, write_data_dir, write_table
from snnasr.data.yesno import prepare_yesno
from snnasr.io import DataError
from snnasr.kaldi.alignments import prepare_kaldi, strip_marks
from snnasr.kaldi.ark import read_vec_int_ark, read_vec_int_scp, write_vec_int_ark_scp
from snnasr.kaldi.transition_model import read_transition_model
from snnasr.lang import load_lang

DATA = Path(__file__).parent / "data" / "kaldi_yesno"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "kaldi-yesno"
KALDI_LANG = DATA / "data" / "lang"
MODEL = DATA / "exp" / "mono" / "40.mdl"
ALIS = dict(read_vec_int_ark(DATA / "exp" / "mono" / "ali.1.gz"))
MINI = ["0_0_0_0_1_1_1_1", "0_0_1_0_0_1_1_0"]  # the training wavs copied into tests/data


def write_ali(path: Path, alis: dict[str, np.ndarray], binary: bool) -> None:
    """ali.N.gz as Kaldi writes it (binary) or as tutorials save it (text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if binary:
        write_vec_int_ark_scp(alis.items(), path.with_suffix(".ark"), path.with_suffix(".scp"))
        path.write_bytes(gzip.compress(path.with_suffix(".ark").read_bytes()))
        path.with_suffix(".ark").unlink()
        path.with_suffix(".scp").unlink()
    else:
        with gzip.open(path, "wt") as f:
            f.writelines(f"{u} {' '.join(map(str, a))}\n" for u, a in alis.items())


def mini_recipe(root: Path, binary: bool = False, model_name: str = "final.mdl") -> tuple[Path, Path]:
    """Recipe dir with data/train_yesno (2 real utterances) and exp/mono_ali aligned to them."""
    prepare_yesno(DATA, root)
    ali_dir = root / "exp" / "mono_ali"
    write_ali(ali_dir / "ali.1.gz", {u: ALIS[u] for u in MINI}, binary)
    shutil.copy(MODEL, ali_dir / model_name)
    return root / "data" / "train_yesno", ali_dir


def audio_frames(wav: Path) -> int:
    n = sf.info(str(wav)).frames
    return 1 + (n - 200) // 80  # 8 kHz: 25 ms window, 10 ms shift, snip-edges


def labels(data_dir: Path, level: str) -> dict[str, np.ndarray]:
    return dict(read_vec_int_scp(data_dir / f"labels_{level}.scp"))


@pytest.mark.parametrize("binary", [False, True], ids=["text-ark", "binary-ark"])
def test_labels_and_lang_from_real_alignments(tmp_path, binary):
    data_dir, ali_dir = mini_recipe(tmp_path, binary=binary)
    counts = prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG)
    frames = sum(len(ALIS[u]) for u in MINI)
    assert counts == {"utterances": 2, "frames": frames, "unaligned": 0, "pdfs": 11, "phones": 3}
    model = read_transition_model(MODEL)
    wav = read_table(data_dir / "wav.scp")
    pdf, phone = labels(data_dir, "pdf"), labels(data_dir, "phone")
    assert sorted(pdf) == sorted(phone) == MINI
    for utt in MINI:
        assert len(pdf[utt]) == len(phone[utt]) == len(ALIS[utt]) == audio_frames(Path(wav[utt]))
        assert pdf[utt].tolist() == model.pdfs(ALIS[utt]).tolist()
        assert phone[utt].tolist() == (model.phones_per_frame(ALIS[utt]) - 1).tolist()  # SIL 1 -> 0 ...
    lang = load_lang(tmp_path / "data" / "lang")
    assert lang.levels == {"pdf": [f"pdf{i}" for i in range(11)], "phone": ["SIL", "Y", "N"]}
    assert (lang.default, lang.score, lang.silence) == ("pdf", "phone", ["SIL"])
    assert lang.symbol_map("pdf", "phone") == {f"pdf{i}": "SIL" if i < 5 else "Y" if i < 8 else "N" for i in range(11)}


def test_numbered_model_and_lang_found_without_options(tmp_path, capsys):
    data_dir, ali_dir = mini_recipe(tmp_path, model_name="40.mdl")
    shutil.copy(MODEL, ali_dir / "8.mdl")
    shutil.copytree(KALDI_LANG, tmp_path / "data" / "lang")  # <ali>/../../data/lang, as in Kaldi recipes
    assert prepare_kaldi(data_dir, ali_dir, tmp_path, targets="phone")["utterances"] == 2
    assert "has no final.mdl; using 40.mdl" in capsys.readouterr().err
    lang = load_lang(tmp_path / "data" / "lang")
    assert lang.default == "phone" and (tmp_path / "data" / "lang" / "phones.txt").is_file()


def test_second_set_keeps_the_lang_and_other_models_conflict(tmp_path):
    data_dir, ali_dir = mini_recipe(tmp_path)
    prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG)
    map_file = tmp_path / "data" / "lang" / "map_pdf_phone.txt"
    before = map_file.read_text()
    prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG, targets="phone")
    assert load_lang(tmp_path / "data" / "lang").default == "phone" and map_file.read_text() == before
    other = tmp_path / "other_lang"
    other.mkdir()
    (other / "phones.txt").write_text("<eps> 0\nSIL 1\nYES 2\nNO 3\n")
    with pytest.raises(DataError, match="lang: already holds other labels"):
        prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=other)


def test_position_and_stress_marks_give_a_base_level(tmp_path):
    data_dir, ali_dir = mini_recipe(tmp_path)
    lang_dir = tmp_path / "kaldi_lang"
    lang_dir.mkdir()
    (lang_dir / "phones.txt").write_text("<eps> 0\nSIL_S 1\nAH0_B 2\nAH1_E 3\n#0 4\n#1 5\n")
    counts = prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=lang_dir)
    assert counts["phones"] == 3
    lang = load_lang(tmp_path / "data" / "lang")
    assert lang.levels["phone"] == ["SIL_S", "AH0_B", "AH1_E"] and lang.levels["phone_base"] == ["SIL", "AH"]
    assert (lang.score, lang.silence) == ("phone_base", ["SIL"])  # no phones/silence.txt: the sil heuristic
    assert lang.symbol_map("phone", "phone_base") == {"SIL_S": "SIL", "AH0_B": "AH", "AH1_E": "AH"}
    assert lang.symbol_map("pdf", "phone_base")["pdf9"] == "AH" and lang.symbol_map("pdf", "phone")["pdf9"] == "AH1_E"
    phone, base = labels(data_dir, "phone"), labels(data_dir, "phone_base")
    for utt in MINI:
        assert base[utt].tolist() == lang.fold("phone", "phone_base")[phone[utt]].tolist()
    assert [strip_marks(p) for p in ("AH0_B", "SIL", "K_I", "ER2", "B3", "sil_E")] == [
        "AH",
        "SIL",
        "K",
        "ER",
        "B3",
        "sil",
    ]


def test_alignment_of_unknown_utterance_is_a_data_error(tmp_path):
    data_dir, ali_dir = mini_recipe(tmp_path)
    write_ali(ali_dir / "ali.2.gz", {"0_0_0_1_0_0_0_1": ALIS["0_0_0_1_0_0_0_1"]}, binary=True)
    with pytest.raises(DataError, match=r"ali\.2\.gz: utterance 0_0_0_1_0_0_0_1 is not in the data dir"):
        prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG)
    write_ali(ali_dir / "ali.2.gz", {MINI[0]: ALIS[MINI[0]]}, binary=True)
    with pytest.raises(DataError, match=f"utterance {MINI[0]} is aligned twice"):
        prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG)


def test_frame_count_mismatch_beyond_tolerance_fails_and_within_is_fitted(tmp_path):
    data_dir, ali_dir = mini_recipe(tmp_path)
    n0, n1 = len(ALIS[MINI[0]]), len(ALIS[MINI[1]])
    write_table(data_dir / "utt2num_frames", {MINI[0]: str(n0 + 1), MINI[1]: str(n1 + 5)})
    with pytest.raises(DataError, match=f"utterance {MINI[1]} has {n1} aligned frames but {n1 + 5} feature frames"):
        prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG)
    write_table(data_dir / "utt2num_frames", {MINI[0]: str(n0 + 1), MINI[1]: str(n1 - 2)})
    prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG)
    pdf = labels(data_dir, "pdf")
    assert len(pdf[MINI[0]]) == n0 + 1 and pdf[MINI[0]][-1] == pdf[MINI[0]][-2]
    assert len(pdf[MINI[1]]) == n1 - 2
    with pytest.raises(DataError, match="tolerance 0"):
        prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG, tolerance=0)


def test_unaligned_utterances_warn_below_5_percent_and_fail_above(tmp_path, capsys):
    ali = ALIS[MINI[0]]
    utts = [f"u{i:02d}" for i in range(20)]
    data_dir = tmp_path / "data" / "big"
    write_data_dir(
        data_dir,
        wav={u: "/nonexistent.wav" for u in utts},
        text={u: "YES" for u in utts},
        utt2spk={u: "global" for u in utts},
    )
    write_table(data_dir / "utt2num_frames", {u: str(len(ali)) for u in utts})
    ali_dir = tmp_path / "exp" / "ali"
    write_ali(ali_dir / "ali.1.gz", {u: ali for u in utts[:19]}, binary=False)
    shutil.copy(MODEL, ali_dir / "final.mdl")
    counts = prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG)
    assert counts["utterances"] == 19 and counts["unaligned"] == 1
    assert "1 of 20 utterances" in capsys.readouterr().err and "u19" not in labels(data_dir, "phone")
    write_ali(ali_dir / "ali.1.gz", {u: ali for u in utts[:18]}, binary=False)
    with pytest.raises(DataError, match="only 18 of 20 utterances have alignments"):
        prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG)


def test_missing_inputs_are_data_errors(tmp_path):
    data_dir, ali_dir = mini_recipe(tmp_path)
    with pytest.raises(DataError, match="no phones.txt"):
        prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=tmp_path)
    with pytest.raises(DataError, match="pass --lang"):
        prepare_kaldi(data_dir, ali_dir, tmp_path)
    (ali_dir / "final.mdl").unlink()
    with pytest.raises(DataError, match="no final.mdl nor N.mdl"):
        prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG)
    (ali_dir / "final.mdl").write_text("not a model")
    with pytest.raises(DataError, match="not a Kaldi model"):
        prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG)
    shutil.copy(MODEL, ali_dir / "final.mdl")
    (ali_dir / "ali.1.gz").unlink()
    with pytest.raises(DataError, match="no ali.*gz"):
        prepare_kaldi(data_dir, ali_dir, tmp_path, lang_dir=KALDI_LANG)


def test_cli_prep_yesno_then_prep_kaldi(tmp_path):
    runner = CliRunner()
    recipe = tmp_path / "recipe"
    result = runner.invoke(cli, ["prep", "yesno", str(DATA), "-d", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "train_yesno 2, test_yesno 1" in result.output
    ali_dir = tmp_path / "kaldi" / "exp" / "mono"
    write_ali(ali_dir / "ali.1.gz", {u: ALIS[u] for u in MINI}, binary=False)
    shutil.copy(MODEL, ali_dir / "40.mdl")
    data_dir = recipe / "data" / "train_yesno"
    result = runner.invoke(
        cli,
        ["prep", "kaldi", "--data", str(data_dir), "--ali", str(ali_dir), "--lang", str(KALDI_LANG), "-d", str(recipe)],
    )
    assert result.exit_code == 0, result.output
    assert "utterances 2" in result.output and "pdfs 11" in result.output
    pdf, phone = labels(data_dir, "pdf"), labels(data_dir, "phone")
    wav = read_table(data_dir / "wav.scp")
    assert (
        {u: len(v) for u, v in pdf.items()}
        == {u: len(v) for u, v in phone.items()}
        == {u: audio_frames(Path(wav[u])) for u in MINI}
    )
    result = runner.invoke(
        cli,
        [
            "prep",
            "kaldi",
            "--data",
            str(recipe / "data" / "test_yesno"),
            "--ali",
            str(ali_dir),
            "--lang",
            str(KALDI_LANG),
            "-d",
            str(recipe),
        ],
    )
    assert result.exit_code != 0 and isinstance(result.exception, DataError)


def test_full_yesno_recipe(tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} absent: the full yes/no corpus is only in the shared data folder")
    assert prepare_yesno(SHARED, tmp_path) == {"train_yesno": 31, "test_yesno": 29}
    counts = prepare_kaldi(tmp_path / "data" / "train_yesno", SHARED / "exp" / "mono", tmp_path)
    assert counts == {"utterances": 31, "frames": 18996, "unaligned": 0, "pdfs": 11, "phones": 3}
