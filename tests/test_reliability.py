"""The bad-input battery: one test per case, each checking the message and that nothing is lost.

Real speech first: FSDD recordings (tests/data/fsdd, CC BY-SA 4.0) laid out as LDC TIMIT, with
the `.PHN` quirks of real LDC copies.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from snnasr import cli as cli_module
from snnasr.data.datadir import read_table
from snnasr.data.drops import read_dropped
from snnasr.data.fsdd import word_bounds
from snnasr.data.timit import prepare_timit
from snnasr.features import FeatureOptions, make_features
from snnasr.io import DataError
from snnasr.kaldi.ark import read_vec_int_scp
from snnasr.lang import load_lang

FSDD = Path(__file__).parent / "data" / "fsdd"
RATE = 16000
DIGIT_PHONES = {2: "t uw", 3: "th r iy", 4: "f ao r", 7: "s eh v ax n"}
EARLY = 18  # frames: the .PHN of the kept utterance ends this much before its audio


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["snnasr", *map(str, args)])
    try:
        cli_module.main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": warning: dropped " not in line]


def _timit_utterance(spk_dir: Path, sent: str, wav: Path, start_at: int = 0, end_early: int = 0) -> str:
    """Write ``sent``.WAV (the recording at 16 kHz) and a .PHN: h#, the digit's phones, h#.

    The phones split the energy-endpointed word evenly; ``start_at``/``end_early`` (samples) move
    the first h#'s start and the last h#'s end inwards, as in the broken LDC files.
    """
    samples, rate = sf.read(wav, dtype="int16")
    audio = torchaudio.functional.resample(torch.from_numpy(samples.astype(np.float32)), rate, RATE)
    audio = audio.round().clamp(-32768, 32767).numpy().astype(np.int16)
    start, end = word_bounds(audio.astype(np.float32), RATE)
    phones = DIGIT_PHONES[int(wav.name[0])].split()
    bounds = np.linspace(start, end, len(phones) + 1).astype(int)
    rows = [(start_at, start, "h#")]
    rows += [(int(a), int(b), p) for a, b, p in zip(bounds[:-1], bounds[1:], phones)]
    rows.append((end, len(audio) - end_early, "h#"))
    spk_dir.mkdir(parents=True, exist_ok=True)
    sf.write(spk_dir / f"{sent}.WAV", audio, RATE, subtype="PCM_16")
    (spk_dir / f"{sent}.PHN").write_text("".join(f"{a} {b} {p}\n" for a, b, p in rows))
    return f"{spk_dir.name.lower()}_{sent.lower()}"


def fsdd_timit(root: Path) -> dict[str, str]:
    """Real speech in the LDC layout: TRAIN/DR1/LUCAS0 (6 utts), TEST/DR1/YWEW0 dev, TEST/DR2/YWEW1 test.

    Returns the special uttids: ``early`` (.PHN ends 18 frames early: kept), ``late_start`` (first
    h# starts 10 ms in: kept), ``too_early`` (ends 0.7 s early, beyond the 0.5 s limit: dropped).
    YWEW0/YWEW1 are one FSDD speaker (yweweler) split in two dirs to fill TIMIT's dev and test.
    """
    train = root / "TRAIN" / "DR1" / "LUCAS0"
    special = {
        "early": _timit_utterance(train, "SI729", FSDD / "long" / "7_lucas_29.wav", end_early=EARLY * 160),
        "late_start": _timit_utterance(train, "SI309", FSDD / "long" / "3_lucas_9.wav", start_at=160),
        "too_early": _timit_utterance(train, "SI724", FSDD / "long" / "7_lucas_24.wav", end_early=int(0.7 * RATE)),
    }
    _timit_utterance(train, "SI249", FSDD / "long" / "2_lucas_49.wav")
    _timit_utterance(train, "SX200", FSDD / "recordings" / "2_lucas_0.wav")
    _timit_utterance(train, "SX400", FSDD / "recordings" / "4_lucas_0.wav")
    for spk, digit in (("YWEW0", 2), ("YWEW1", 4)):
        for idx in (0, 5, 10):
            _timit_utterance(
                root / "TEST" / f"DR{digit // 2}" / spk,
                f"SX{digit}{idx:02d}",
                FSDD / "recordings" / f"{digit}_yweweler_{idx}.wav",
            )
    (root / "dev.list").write_text("ywew0\n")
    (root / "test.list").write_text("ywew1\n")
    return special


def test_real_speech_timit_quirks_go_through_features(tmp_path, capsys):
    corpus = tmp_path / "TIMIT"
    special = fsdd_timit(corpus)
    recipe = tmp_path / "recipe"
    lists = dict(dev_speakers=corpus / "dev.list", test_speakers=corpus / "test.list")

    # Kaldi's default 5 %: 1 bad utterance of 6 is too many, and nothing is written.
    with pytest.raises(DataError, match=r"data/train: 1 of 6 utterances are bad, more than 5% .*lucas0_si724"):
        prepare_timit(corpus, recipe, **lists)
    assert not (recipe / "data").exists()
    capsys.readouterr()

    counts = prepare_timit(corpus, recipe, **lists, max_bad_fraction=0.25)
    assert counts == {"train": 5, "dev": 3, "test": 3, "dropped": 1}
    err = capsys.readouterr().err
    assert re.search(
        r"^snnasr prep timit: warning: dropped lucas0_si724: .*SI724.PHN: 0.70 s of audio after the last segment "
        r"is unlabelled .*more than the 0.5 s of edge silence",
        err,
        re.M,
    )
    data = recipe / "data" / "train"
    assert special["too_early"] not in read_table(data / "wav.scp")
    assert list(read_dropped(data)) == [special["too_early"]]
    assert read_dropped(data)[special["too_early"]].startswith("prep timit: ")

    # A recording damaged after prep: features drops it by name, keeps the early-ending one.
    broken = Path(read_table(data / "wav.scp")["lucas0_sx400"])
    broken.write_bytes(broken.read_bytes()[:3000])
    counts = make_features(data, FeatureOptions.load(None), max_bad_fraction=0.25)
    err = capsys.readouterr().err
    assert re.search(r"^snnasr features: warning: dropped lucas0_sx400: .*truncated audio", err, re.M)
    assert counts["utterances"] == counts["labelled"] == 4 and counts["dropped"] == 1
    feats = [line.split()[0] for line in (data / "feats.scp").read_text().splitlines()]
    assert special["early"] in feats and special["late_start"] in feats and "lucas0_sx400" not in feats
    assert set(read_dropped(data)) == {special["too_early"], "lucas0_sx400"}
    assert read_dropped(data)["lucas0_sx400"].startswith("features: ")

    # The unlabelled tail of the early .PHN is silence: its last 18+ frames are h# (= sil in phone48).
    frames = int(read_table(data / "utt2num_frames")[special["early"]])
    labels = dict(read_vec_int_scp(data / "labels_phone48.scp"))[special["early"]]
    assert len(labels) == frames
    sil = load_lang(recipe / "data" / "lang").index("phone48")["sil"]
    assert (labels[-EARLY:] == sil).all() and (labels != sil).any()

    # Later stages read only what was kept; a rerun skips and says so, keeping the list.
    make_features(data, FeatureOptions.load(None), max_bad_fraction=0.25)
    assert "up to date" in capsys.readouterr().err
    assert set(read_dropped(data)) == {special["too_early"], "lucas0_sx400"}


def test_real_speech_strict_fails_at_the_first_bad_utterance(tmp_path, monkeypatch, capsys):
    corpus = tmp_path / "TIMIT"
    fsdd_timit(corpus)
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "prep",
        "timit",
        corpus,
        "--dev-speakers",
        corpus / "dev.list",
        "--test-speakers",
        corpus / "test.list",
        "--strict",
        "-d",
        tmp_path / "recipe",
    )
    assert code == 1 and "Traceback" not in err
    (line,) = error_lines(err)
    assert line.startswith("snnasr prep timit: lucas0_si724: ") and "--strict" in line
    assert not (tmp_path / "recipe" / "data").exists()


# ---------------------------------------------------------------- provenance


TRAIN_ARGS = (
    "--arch",
    "lstm",
    "--device",
    "cpu",
    "model.hidden=8",
    "model.layers=1",
    "train.epochs=1",
    "train.batch_frames=400",
    "train.curriculum=50*1",
    "train.eval_max_len=50",
    "data.dev_set=train",
)


@pytest.fixture
def trained(tmp_path, monkeypatch, capsys):
    """A tiny recipe (tests/test_features.make_recipe) with features and a 1-epoch LSTM in exp/lstm."""
    from test_features import make_recipe

    recipe = make_recipe(tmp_path)
    assert run_cli(monkeypatch, capsys, "features", "--sets", "train", "-d", recipe)[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "train", *TRAIN_ARGS, "-d", recipe)
    assert code == 0, err
    return recipe


def test_eval_refuses_features_the_model_was_not_trained_on(trained, monkeypatch, capsys):
    results = trained / "exp" / "lstm" / "eval_train" / "results.json"
    assert run_cli(monkeypatch, capsys, "eval", "exp/lstm", "--set", "train", "-d", trained)[0] == 0
    before = results.read_bytes()
    assert run_cli(monkeypatch, capsys, "features", "--sets", "train", "--cmvn", "utt", "-d", trained)[0] == 0
    code, _, err = run_cli(monkeypatch, capsys, "eval", "exp/lstm", "--set", "train", "-d", trained)
    assert code == 1 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("snnasr eval: ") and "not the features/labels lstm was trained on" in line
    assert "CMVN speaker -> utt" in line and "re-train" in line
    assert results.read_bytes() == before  # the earlier, valid result is untouched


def test_resume_refuses_changed_data(trained, monkeypatch, capsys):
    assert run_cli(monkeypatch, capsys, "features", "--sets", "train", "--num-bins", "23", "-d", trained)[0] == 0
    ckpts = sorted((trained / "exp" / "lstm" / "checkpoints").iterdir())
    args = [a if a != "train.epochs=1" else "train.epochs=2" for a in TRAIN_ARGS]
    code, _, err = run_cli(monkeypatch, capsys, "train", *args, "--resume", "-d", trained)
    assert code == 1 and "Traceback" not in err
    line = error_lines(err)[-1]
    assert line.startswith("snnasr train: ")
    assert "feature dimension 40 -> 23" in line or "inputs" in line
    assert sorted((trained / "exp" / "lstm" / "checkpoints").iterdir()) == ckpts


def test_resume_refuses_changed_utterance_list(trained, monkeypatch, capsys):
    data = trained / "data" / "train"
    for name in ("wav.scp", "text", "utt2spk"):
        table = (data / name).read_text().splitlines()
        (data / name).write_text("\n".join(line for line in table if not line.startswith("spk1_u3")) + "\n")
    (data / "spk2utt").write_text("spk0 spk0_u0 spk0_u1\nspk1 spk1_u2\n")
    assert run_cli(monkeypatch, capsys, "features", "--sets", "train", "-d", trained)[0] == 0
    args = [a if a != "train.epochs=1" else "train.epochs=2" for a in TRAIN_ARGS]
    code, _, err = run_cli(monkeypatch, capsys, "train", *args, "--resume", "-d", trained)
    assert code == 1
    line = error_lines(err)[-1]
    assert "the train data changed since epoch1.pt was written" in line and "number of utterances 4 -> 3" in line


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_damaged_model_or_checkpoint_is_one_line(trained, monkeypatch, capsys, damage):
    run = trained / "exp" / "lstm"
    for path, stage, args in (
        (run / "model.pt", "eval", ["eval", "exp/lstm", "--set", "train"]),
        (run / "checkpoints" / "epoch1.pt", "train", ["train", *TRAIN_ARGS, "--resume"]),
    ):
        blob = path.read_bytes()
        path.write_bytes({"empty": b"", "truncated": blob[: len(blob) // 2], "garbage": b"not a model" * 10}[damage])
        code, _, err = run_cli(monkeypatch, capsys, *args, "-d", trained)
        assert code == 1 and "Traceback" not in err and "Aborted" not in err
        line = error_lines(err)[-1]
        assert line.startswith(f"snnasr {stage}: {path}: "), line
        assert ("empty" if damage == "empty" else "truncated or corrupt") in line
        path.write_bytes(blob)


# ---------------------------------------------------------------- stale and unfinished results


def test_unfinished_then_stale_results_and_own_file_per_convention(tmp_path, monkeypatch, capsys):
    import shlex

    from test_features import make_recipe

    import snnasr.train as T

    recipe = make_recipe(tmp_path)
    assert run_cli(monkeypatch, capsys, "features", "--sets", "train", "-d", recipe)[0] == 0
    real_evaluate, calls = T.evaluate, {"n": 0}

    def interrupt_in_epoch_2(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kw)

    monkeypatch.setattr(T, "evaluate", interrupt_in_epoch_2)
    args = [a if a != "train.epochs=1" else "train.epochs=2" for a in TRAIN_ARGS]
    code, _, err = run_cli(monkeypatch, capsys, "train", *args, "-d", recipe)
    assert code == 130
    resume = err.strip().splitlines()[-1].split("continue with: ")[1]
    assert "--resume" in resume and all(a in shlex.split(resume) for a in args)  # every override kept
    monkeypatch.setattr(T, "evaluate", real_evaluate)

    # An evaluation of the unfinished run is marked so in the report.
    assert run_cli(monkeypatch, capsys, "eval", "exp/lstm", "--set", "train", "-d", recipe)[0] == 0
    results = recipe / "exp" / "lstm" / "eval_train" / "results.json"
    stamp = json.loads(results.read_text())["model"]
    assert stamp["epoch"] == 1 and stamp["epochs"] == 2 and stamp["finished"] is False
    assert run_cli(monkeypatch, capsys, "report", "-d", recipe)[0] == 0
    md = (recipe / "exp" / "report.md").read_text()
    assert "| lstm (unfinished: lstm) |" in md and "Unfinished" in md

    # The printed command resumes the run; the finished model makes the old evaluation stale.
    code, _, err = run_cli(monkeypatch, capsys, *shlex.split(resume)[1:])
    assert code == 0, err
    code, _, err = run_cli(monkeypatch, capsys, "report", "-d", recipe)
    assert code == 1
    assert re.search(r"warning: .*results.json: scored a model.pt that has since been replaced; left out", err)
    assert error_lines(err)[-1].startswith("snnasr report: every result is stale")
    assert run_cli(monkeypatch, capsys, "eval", "exp/lstm", "--set", "train", "-d", recipe)[0] == 0
    assert json.loads(results.read_text())["model"]["finished"] is True
    assert run_cli(monkeypatch, capsys, "report", "-d", recipe)[0] == 0
    assert "unfinished" not in (recipe / "exp" / "report.md").read_text().lower()

    # Each ops convention has its own file: the official one does not replace what report reads.
    before = results.read_bytes()
    code, _, _ = run_cli(
        monkeypatch, capsys, "eval", "exp/lstm", "--set", "train", "--report-ops", "--ops-convention", "official",
        "-d", recipe,
    )  # fmt: skip
    assert code == 0 and results.read_bytes() == before
    official = json.loads((results.parent / "results_official.json").read_text())
    assert official["ops"]["convention"] == "official" and (results.parent / "ops_official.json").is_file()

    # A copy of a run (same config, same seed) is not a second seed.
    shutil.copytree(recipe / "exp" / "lstm", recipe / "exp" / "lstm_copy")
    code, _, err = run_cli(monkeypatch, capsys, "report", "-d", recipe)
    assert code == 1
    (line,) = error_lines(err)
    assert "same configuration and seed 1, so not independent repeats" in line
