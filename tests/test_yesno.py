"""prep yesno: Kaldi's yes/no corpus as data/train_yesno and data/test_yesno."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from snnasr.data.datadir import read_table, validate_data_dir
from snnasr.data.yesno import prepare_yesno
from snnasr.io import DataError

DATA = Path(__file__).parent / "data" / "kaldi_yesno"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "kaldi-yesno"


@pytest.mark.parametrize("corpus", [DATA, DATA / "waves_yesno"], ids=["parent", "folder"])
def test_mini_corpus(tmp_path, corpus):
    assert prepare_yesno(corpus, tmp_path) == {"train_yesno": 2, "test_yesno": 1}
    train, test = tmp_path / "data" / "train_yesno", tmp_path / "data" / "test_yesno"
    assert validate_data_dir(train) == {"utterances": 2, "speakers": 1}
    assert read_table(train / "text") == {
        "0_0_0_0_1_1_1_1": "NO NO NO NO YES YES YES YES",
        "0_0_1_0_0_1_1_0": "NO NO YES NO NO YES YES NO",
    }
    assert read_table(test / "utt2spk") == {"1_0_0_0_0_0_0_1": "global"}
    assert read_table(test / "spk2utt") == {"global": "1_0_0_0_0_0_0_1"}
    wav = Path(read_table(test / "wav.scp")["1_0_0_0_0_0_0_1"])
    assert wav.is_absolute() and wav.samefile(DATA / "waves_yesno" / "1_0_0_0_0_0_0_1.wav")


def test_full_corpus_matches_kaldis_train_set(tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} absent: the full yes/no corpus is only in the shared data folder")
    assert prepare_yesno(SHARED, tmp_path) == {"train_yesno": 31, "test_yesno": 29}
    train = tmp_path / "data" / "train_yesno"
    assert (train / "text").read_text() == (SHARED / "data" / "train_yesno" / "text").read_text()
    assert (train / "utt2spk").read_text() == (SHARED / "data" / "train_yesno" / "utt2spk").read_text()
    test_utts = set(read_table(tmp_path / "data" / "test_yesno" / "text"))
    all_utts = {p.stem for p in (SHARED / "waves_yesno").glob("*.wav")}
    assert test_utts == all_utts - set(read_table(train / "text"))


def make_corpus(root: Path, names: list[str]) -> Path:
    folder = root / "waves_yesno"
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(DATA / "waves_yesno" / "1_0_0_0_0_0_0_1.wav", folder / name)
    (folder / "README").write_text("not audio\n")
    return folder


def test_errors_are_one_line_data_errors(tmp_path):
    with pytest.raises(DataError, match="nowhere: folder not found"):
        prepare_yesno(tmp_path / "nowhere", tmp_path / "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no .wav files"):
        prepare_yesno(tmp_path / "empty", tmp_path / "r")
    make_corpus(tmp_path / "bad", ["0_1.wav", "0_2_1.wav"])
    with pytest.raises(DataError, match=r"0_2_1\.wav: not a yes/no recording name"):
        prepare_yesno(tmp_path / "bad", tmp_path / "r")
    make_corpus(tmp_path / "half", ["0_1_1.wav", "0_0_1.wav"])
    with pytest.raises(DataError, match="no recording starting with 1_ for test_yesno"):
        prepare_yesno(tmp_path / "half", tmp_path / "r")
    folder = make_corpus(tmp_path / "rate", ["0_1.wav"])
    sf.write(folder / "1_1.wav", np.zeros(1600, dtype=np.int16), 16000)
    with pytest.raises(DataError, match=r"1_1\.wav: sample rate 16000 Hz, expected 8000 Hz"):
        prepare_yesno(tmp_path / "rate", tmp_path / "r")
    assert not (tmp_path / "r" / "data").exists()
