"""prep fsdd: the Free Spoken Digit Dataset as data/{train,dev,test} with word segments."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from snnasr.cli import cli
from snnasr.data.datadir import read_segments, read_table, validate_data_dir
from snnasr.data.fsdd import WORDS, prepare_fsdd, word_bounds
from snnasr.io import DataError
from snnasr.kaldi.ark import read_vec_int_scp
from snnasr.labels import frame_labels_from_segments, num_frames
from snnasr.lang import load_lang

DATA = Path(__file__).parent / "data" / "fsdd"
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
SPEAKERS = ("lucas", "yweweler")


def make_corpus(root: Path, names: list[str] | None = None) -> Path:
    """A corpus folder with recordings/ holding the fixture WAVs (or copies of one under ``names``)."""
    folder = root / "recordings"
    folder.mkdir(parents=True)
    if names is None:
        for wav in (DATA / "recordings").glob("*.wav"):
            shutil.copy(wav, folder / wav.name)
    else:
        for name in names:
            shutil.copy(DATA / "recordings" / "2_lucas_0.wav", folder / name)
    (root / "README.md").write_text("not audio\n")
    (folder / "notes.txt").write_text("not audio\n")
    return root


@pytest.mark.parametrize("which", ["parent", "recordings"])
def test_mini_corpus(tmp_path, which):
    corpus = make_corpus(tmp_path / "fsdd")
    recipe = tmp_path / "r"
    assert prepare_fsdd(corpus if which == "parent" else corpus / "recordings", recipe) == {
        "train": 4,
        "dev": 4,
        "test": 4,
    }
    data = recipe / "data"
    for name, index in (("train", "10"), ("dev", "5"), ("test", "0")):
        assert validate_data_dir(data / name) == {"utterances": 4, "speakers": 2}
        utts = [f"{spk}_{digit}_{index}" for spk in SPEAKERS for digit in (2, 4)]
        assert list(read_table(data / name / "text")) == utts  # sorted, speaker first
        assert read_table(data / name / "text") == {u: WORDS[int(u.split("_")[1])].upper() for u in utts}
        assert read_table(data / name / "utt2spk") == {u: u.split("_")[0] for u in utts}
        assert read_table(data / name / "spk2utt") == {
            spk: " ".join(u for u in utts if u.startswith(spk)) for spk in SPEAKERS
        }
    wav = Path(read_table(data / "dev" / "wav.scp")["yweweler_4_5"])
    assert wav.is_absolute() and wav.samefile(corpus / "recordings" / "4_yweweler_5.wav")

    lang = load_lang(data / "lang")
    assert lang.levels == {"word": ["sil", *WORDS]}
    assert (lang.default, lang.score, lang.silence, lang.segment_level) == ("word", "word", ["sil"], "word")


def test_segments_are_sil_word_sil_covering_the_audio(tmp_path):
    prepare_fsdd(make_corpus(tmp_path / "fsdd"), tmp_path / "r")
    shapes = set()
    for name in ("train", "dev", "test"):
        data = tmp_path / "r" / "data" / name
        segs = read_segments(data / "phone_segments")
        wav = read_table(data / "wav.scp")
        assert set(segs) == set(wav)
        for utt, utt_segs in segs.items():
            word = WORDS[int(utt.split("_")[1])]
            symbols = [s for _, _, s in utt_segs]
            assert symbols in (["sil", word, "sil"], ["sil", word], [word, "sil"], [word]), (utt, symbols)
            assert utt_segs[0][0] == 0 and utt_segs[-1][1] == sf.info(wav[utt]).frames
            assert all(a[1] == b[0] for a, b in zip(utt_segs, utt_segs[1:]))
            assert all(start < end for start, end, _ in utt_segs)
            shapes.add(len(utt_segs))
    assert shapes == {2, 3}  # the fixture has both kinds


def test_word_bounds_find_the_loud_part():
    rate = 8000
    quiet = np.zeros(2400, dtype=np.float32)
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(3200) / rate)).astype(np.float32)
    samples = np.concatenate([quiet, tone, quiet])
    start, end = word_bounds(samples, rate)
    assert 2400 - 200 < start < 2400 and 5600 < end < 5600 + 200
    segs = [(0, start, "sil"), (start, end, "one"), (end, len(samples), "sil")]
    labels = frame_labels_from_segments(segs, num_frames(len(samples), rate), rate)
    # frame i covers [80 i, 80 i + 200): word exactly where the frame overlaps the tone
    expect = ["one" if 80 * i + 200 > 2400 and 80 * i < 5600 else "sil" for i in range(len(labels))]
    assert labels == expect
    assert word_bounds(tone, rate) == (0, len(tone))  # loud at both ends: the word is everything
    assert word_bounds(np.zeros(800, dtype=np.float32), rate)[0] is None


def test_errors_are_one_line_data_errors(tmp_path):
    r = tmp_path / "r"
    with pytest.raises(DataError, match="nowhere: folder not found"):
        prepare_fsdd(tmp_path / "nowhere", r)
    (tmp_path / "empty" / "recordings").mkdir(parents=True)
    with pytest.raises(DataError, match="recordings: no .wav files"):
        prepare_fsdd(tmp_path / "empty", r)
    bad_names = ["2_lucas.wav", "x_lucas_1.wav", "2_lu_cas_1.wav", "12_lucas_1.wav", "2_lucas_a.wav"]
    for n, bad in enumerate(bad_names):
        make_corpus(tmp_path / f"name{n}", ["2_lucas_0.wav", "2_lucas_5.wav", "2_lucas_10.wav", bad])
        with pytest.raises(DataError, match=rf"{bad}: not an FSDD recording name"):
            prepare_fsdd(tmp_path / f"name{n}", r)
    for missing, rule in (
        ("10", "index 10 or above for the train set"),
        ("5", "index 5-9 for the dev set"),
        ("0", "index 0-4 for the test set"),
    ):
        names = [f"2_lucas_{i}.wav" for i in ("0", "5", "10") if i != missing]
        make_corpus(tmp_path / f"split{missing}", names)
        with pytest.raises(DataError, match=rule):
            prepare_fsdd(tmp_path / f"split{missing}", r)

    good = ["2_lucas_0.wav", "2_lucas_5.wav", "2_lucas_10.wav"]
    cases = {
        "rate": (
            lambda p: sf.write(p, np.zeros(1600, dtype=np.int16), 16000, subtype="PCM_16"),
            "sample rate 16000 Hz, expected 8000 Hz",
        ),
        "stereo": (lambda p: sf.write(p, np.zeros((1600, 2), dtype=np.int16), 8000, subtype="PCM_16"), "2 channels"),
        "empty": (lambda p: sf.write(p, np.zeros(0, dtype=np.int16), 8000, subtype="PCM_16"), "audio is empty"),
        "garbage": (lambda p: p.write_bytes(b"not a wav file at all"), "unreadable audio"),
        "short": (
            lambda p: sf.write(p, np.ones(150, dtype=np.int16), 8000, subtype="PCM_16"),
            "shorter than one 25 ms frame",
        ),
        "silent": (lambda p: sf.write(p, np.zeros(4000, dtype=np.int16), 8000, subtype="PCM_16"), "audio is silent"),
    }
    for case, (write, message) in cases.items():
        corpus = make_corpus(tmp_path / f"audio-{case}", good)
        write(corpus / "recordings" / "4_lucas_11.wav")
        with pytest.raises(DataError, match=rf"4_lucas_11\.wav: {message}"):
            prepare_fsdd(corpus, r)
    assert not r.exists()  # nothing half-written


def test_cli(tmp_path):
    corpus = make_corpus(tmp_path / "fsdd")
    result = CliRunner().invoke(cli, ["prep", "fsdd", str(corpus), "-d", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "utterances: train 4, dev 4, test 4" in result.output
    result = CliRunner().invoke(cli, ["prep", "fsdd", str(tmp_path / "nowhere"), "-d", str(tmp_path / "r2")])
    assert result.exit_code == 1
    assert isinstance(result.exception, DataError) and "folder not found" in str(result.exception)
    assert not (tmp_path / "r2").exists()


def test_features_write_word_labels(tmp_path):
    recipe = tmp_path / "r"
    prepare_fsdd(make_corpus(tmp_path / "fsdd"), recipe)
    config = REPO / "recipes" / "fsdd" / "conf" / "mfcc.yaml"
    result = CliRunner().invoke(cli, ["features", "--config", str(config), "-d", str(recipe)])
    assert result.exit_code == 0, result.output
    for name in ("train", "dev", "test"):
        data = recipe / "data" / name
        frames = {u: int(n) for u, n in read_table(data / "utt2num_frames").items()}
        labels = dict(read_vec_int_scp(data / "labels_word.scp"))
        assert list(labels) == list(frames) and len(labels) == 4
        for utt, lab in labels.items():
            assert len(lab) == frames[utt]
            word_id = 1 + int(utt.split("_")[1])
            assert set(lab.tolist()) <= {0, word_id} and word_id in lab


def test_full_corpus_official_split(tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} absent: the full FSDD is only in the shared data folder")
    assert prepare_fsdd(SHARED, tmp_path) == {"train": 2400, "dev": 300, "test": 300}
    data = tmp_path / "data"
    for name, n in (("train", 2400), ("dev", 300), ("test", 300)):
        assert validate_data_dir(data / name) == {"utterances": n, "speakers": 6}
        assert len(read_segments(data / name / "phone_segments")) == n
    indices = {int(u.rsplit("_", 1)[1]) for u in read_table(data / "test" / "text")}
    assert indices == {0, 1, 2, 3, 4}
