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
    assert "feature option cmvn speaker -> utt" in line and "with cmvn=speaker, or re-train" in line
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


# ---------------------------------------------------------------- audio the reader must refuse


def _write(path: Path, kind: str, n: int = 4800) -> Path:
    """A recording of ``n`` samples at 16 kHz broken in one way (``kind``)."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, n)
    if kind == "nan":
        x[100] = np.nan
        sf.write(path, x, RATE, subtype="FLOAT")
    elif kind == "inf":
        x[7] = np.inf
        sf.write(path, x, RATE, subtype="DOUBLE")
    elif kind == "stereo":
        sf.write(path, np.stack([x, x], 1), RATE, subtype="PCM_16")
    elif kind == "rate":
        sf.write(path, x, 8000, subtype="PCM_16")
    elif kind == "empty":
        sf.write(path, x[:0], RATE, subtype="PCM_16")
    elif kind == "zero bytes":
        path.write_bytes(b"")
    elif kind == "header":
        sf.write(path, x, RATE, subtype="PCM_16")
        blob = bytearray(path.read_bytes())
        blob[:12] = b"RIFX\0\0\0\0JUNK"
        path.write_bytes(bytes(blob))
    elif kind == "truncated":
        sf.write(path, x, RATE, subtype="PCM_16")
        path.write_bytes(path.read_bytes()[:4000])
    return path


AUDIO_CASES = {
    "nan": "1 non-finite samples (NaN/inf, first at sample 100)",
    "inf": "1 non-finite samples (NaN/inf, first at sample 7)",
    "stereo": "2 channels; snnasr expects mono",
    "rate": "sample rate 8000 Hz, expected 16000 Hz",
    "empty": "audio is empty",
    "zero bytes": "unreadable audio",
    "header": "unreadable audio",
    "truncated": "truncated audio (header declares 4800 samples, the file holds 1978)",
}


@pytest.mark.parametrize("kind", list(AUDIO_CASES))
def test_audio_reader_refuses(tmp_path, kind):
    from snnasr.audio import audio_info, read_audio

    path = _write(tmp_path / "x.wav", kind)
    readers = [read_audio] if kind in ("nan", "inf") else [read_audio, audio_info]  # header-only can't see NaN
    for read in readers:
        with pytest.raises(DataError) as e:
            read(path, expected_rate=RATE)
        assert str(e.value).startswith(f"{path}: ") and AUDIO_CASES[kind] in str(e.value)


@pytest.mark.parametrize("kind", ["nan", "stereo", "truncated"])
def test_features_drops_bad_audio_by_name_and_keeps_the_rest(tmp_path, capsys, kind):
    from test_features import make_recipe

    recipe = make_recipe(tmp_path, seconds=(0.31, 0.25, 0.42, 0.2, 0.3, 0.3) * 4)
    data = recipe / "data" / "train"
    wav = read_table(data / "wav.scp")
    victim = "spk1_u2"
    _write(Path(wav[victim]), kind, n=sf.info(wav[victim]).frames)
    counts = make_features(data, FeatureOptions.load(None), max_bad_fraction=0.05)
    assert counts["utterances"] == len(wav) - 1 == counts["labelled"] and counts["dropped"] == 1
    err = capsys.readouterr().err
    (warning,) = [line for line in err.splitlines() if "warning: dropped" in line]
    assert warning.startswith(f"snnasr features: warning: dropped {victim}: {wav[victim]}: ")
    assert victim not in [line.split()[0] for line in (data / "feats.scp").read_text().splitlines()]
    assert read_dropped(data) == {victim: "features: " + warning.split(f"dropped {victim}: ")[1]}
    # Training data are what was kept: every kept utterance, with labels, and nothing else.
    from snnasr.dataset import UtteranceDataset

    ds = UtteranceDataset(data)
    assert ds.uttids == [u for u in wav if u != victim] and ds.skipped == 0


def test_truncated_yesno_recording_is_dropped_at_prep(tmp_path, capsys):
    """The yes/no case of the issue: a truncated WAV was accepted (123 frames instead of 633)."""
    from snnasr.data.yesno import prepare_yesno

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "kaldi-yesno" / "waves_yesno"
    if not shared.is_dir():
        pytest.skip(f"{shared} absent: the full yes/no corpus (31 + 29 recordings) is only in the shared data folder")
    corpus = tmp_path / "waves_yesno"
    shutil.copytree(shared, corpus)
    victim = sorted(corpus.glob("0_*.wav"))[0]
    victim.chmod(0o644)  # the shared copy is read-only
    victim.write_bytes(victim.read_bytes()[:20000])
    with pytest.raises(DataError, match=rf"{re.escape(str(victim))}: truncated audio \(header declares \d+ samples"):
        prepare_yesno(corpus, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict" / "data").exists()
    capsys.readouterr()
    counts = prepare_yesno(corpus, tmp_path / "recipe")
    n_train = len(list(corpus.glob("0_*.wav")))
    assert counts["train_yesno"] == n_train - 1 and counts["dropped"] == 1
    data = tmp_path / "recipe" / "data" / "train_yesno"
    assert victim.stem not in read_table(data / "wav.scp")
    assert "truncated audio" in read_dropped(data)[victim.stem]
    assert f"snnasr prep yesno: warning: dropped {victim.stem}: {victim}: truncated audio" in capsys.readouterr().err


def test_bad_fsdd_recording_is_dropped_by_name(tmp_path, capsys):
    from snnasr.data.fsdd import prepare_fsdd

    corpus = tmp_path / "fsdd" / "recordings"
    shutil.copytree(FSDD / "recordings", corpus)
    (corpus / "4_lucas_10.wav").write_bytes((corpus / "4_lucas_10.wav").read_bytes()[:1000])
    with pytest.raises(DataError, match=r"data/train: 1 of 4 utterances are bad, more than 5% .*lucas_4_10"):
        prepare_fsdd(corpus, tmp_path / "r")
    assert not (tmp_path / "r" / "data").exists()
    counts = prepare_fsdd(corpus, tmp_path / "r", max_bad_fraction=0.3)
    assert counts == {"train": 3, "dev": 4, "test": 4, "dropped": 1}
    assert list(read_dropped(tmp_path / "r" / "data" / "train")) == ["lucas_4_10"]


# ---------------------------------------------------------------- config values out of range


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.ema_momentum=5", "model.ema_momentum=5.0: must be in (0, 1]"),
        ("model.ema_momentum=0", "model.ema_momentum=0.0: must be in (0, 1]"),
        ("model.surrogate_scale=0", "model.surrogate_scale=0.0: must be a positive finite number"),
        ("model.surrogate_scale=.nan", "model.surrogate_scale=nan: must be a positive finite number"),
        ("train.eval_max_len=0", "train.eval_max_len=0: must be positive"),
        ("train.eval_max_len=-5", "train.eval_max_len=-5: must be positive"),
        ("train.lr=.inf", "train.lr=inf: must be a positive finite number"),
        ("train.lr_floor=0.1", "train.lr_floor=0.1: must not exceed train.lr=0.001"),
        ("train.grad_clip=-1", "train.grad_clip=-1.0: must be >= 0"),
        ("train.newbob_threshold=2", "train.newbob_threshold=2.0: must be in [0, 1)"),
        ("train.max_nonfinite_steps=0", "train.max_nonfinite_steps=0: must be positive"),
    ],
)
def test_config_ranges(tmp_path, monkeypatch, capsys, override, message):
    code, _, err = run_cli(monkeypatch, capsys, "train", override, "-d", tmp_path)
    assert code == 1 and "Traceback" not in err
    assert err.strip() == f"snnasr train: {message}" or err.strip().startswith(f"snnasr train: {message}")
    assert not (tmp_path / "exp").exists()


# ---------------------------------------------------------------- non-finite loss


def test_nan_loss_skips_the_step_and_too_many_stop_keeping_the_last_good_checkpoint(tmp_path, monkeypatch):
    from test_train import TinyModel, _cfg, _data

    import snnasr.checkpoint as C
    import snnasr.train as T
    from snnasr.io import SnnasrError

    monkeypatch.setattr(C, "build_model", lambda arch, mcfg, n_in, n_out: TinyModel(n_in, n_out))
    real, calls = T._forward_stats, {"n": 0}

    def poisoned(model, batch, *args):  # training minibatches number 1, 2, ... over the run
        loss, *rest = real(model, batch, *args)
        if not model.training:
            return (loss, *rest)
        calls["n"] += 1
        return (loss * float("nan"), *rest) if calls["n"] in bad else (loss, *rest)

    monkeypatch.setattr(T, "_forward_stats", poisoned)
    bad = {3}
    metrics = T.fit(_cfg(), *_data(), tmp_path / "one", device="cpu")
    assert [m["skipped_steps"] for m in metrics] == [1, 0]
    assert all(np.isfinite(m["loss"]) and np.isfinite(m["dev_loss"]) for m in metrics)
    model, _, _ = C.load_model(tmp_path / "one", device="cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())

    calls["n"] = 0
    from snnasr.batching import epoch_plan

    in_epoch1 = len(epoch_plan(_data()[0].lengths, 20, 64, seed=T.batch_seed(1, 0)))
    bad = set(range(in_epoch1 + 2, 10_000))  # every step from the second minibatch of epoch 2 on
    with pytest.raises(
        SnnasrError, match=r"3 minibatches in a row had a non-finite loss or gradient \(epoch 2, up to minibatch 4\)"
    ) as e:
        T.fit(_cfg("train.max_nonfinite_steps=3", "train.epochs=3"), *_data(), tmp_path / "many", device="cpu")
    assert "checkpoints/epoch1.pt is kept" in str(e.value)
    assert sorted(p.name for p in (tmp_path / "many" / "checkpoints").iterdir()) == ["epoch1.pt"]
    assert C.load_model(tmp_path / "many", device="cpu")[2]["epoch"] == 1


# ---------------------------------------------------------------- one line instead of a traceback


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.arch=*x", "override 'model.arch=*x': the value is not valid YAML (found undefined alias"),
        ("train.curriculum=[100", "override 'train.curriculum=[100': the value is not valid YAML ("),
        ("model=3", "model: expected a mapping"),
    ],
)
def test_yaml_breaking_override_is_one_line(tmp_path, monkeypatch, capsys, override, words):
    code, _, err = run_cli(monkeypatch, capsys, "train", override, "-d", tmp_path)
    assert code == 1 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("snnasr train: ") and words in line


def test_non_utf8_table_is_one_line_naming_the_line(tmp_path, monkeypatch, capsys):
    from test_features import make_recipe

    recipe = make_recipe(tmp_path)
    text = recipe / "data" / "train" / "text"
    lines = text.read_bytes().splitlines()
    lines[2] = lines[2] + b" caf\xe9"
    text.write_bytes(b"\n".join(lines) + b"\n")
    code, _, err = run_cli(monkeypatch, capsys, "features", "--sets", "train", "-d", recipe)
    assert code == 1
    (line,) = err.strip().splitlines()
    assert (
        line
        == f"snnasr features: {text}:3: not UTF-8 text (byte 0xe9 at column 17); re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    )
    assert not (recipe / "data" / "train" / "feats.scp").exists()


def test_recipe_dir_inside_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(monkeypatch, capsys, "prep", "fsdd", FSDD / "recordings", "-d", tmp_path / "afile" / "r")
    assert code == 1 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"snnasr prep fsdd: {tmp_path / 'afile'}") and "Not a directory" in line
    assert "a component of the path is a file, not a directory" in line


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_module, "DEBUG", False)  # restored after the test (the flag sets it)
    monkeypatch.setattr("sys.argv", ["snnasr", "--debug", "train", "model.arch=*x", "-d", str(tmp_path)])
    with pytest.raises(Exception, match="not valid YAML"):
        cli_module.main()


@pytest.mark.parametrize("option", ["--batch", "--frames", "--layers", "--repeats", "--hidden"])
def test_bench_argument_errors_are_one_line(monkeypatch, capsys, option):
    code, _, err = run_cli(monkeypatch, capsys, "bench", option, "0")
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"snnasr bench: Invalid value for '{option}': 0 is not in the range x>=1")


# ---------------------------------------------------------------- file systems that fail: read-only, full


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (needs root and mount); yields a function (size, read_only) -> its path."""
    import os
    import subprocess

    mounted = []

    def mount(size: str = "1m", read_only: bool = False) -> Path:
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)]).returncode:
            pytest.skip("cannot mount a tmpfs here (needs root and mount): the disk-full/read-only cases are not run")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp"))


def test_read_only_recipe_dir_is_one_line(tmpfs, monkeypatch, capsys):
    recipe = tmpfs(read_only=True)
    code, _, err = run_cli(
        monkeypatch, capsys, "prep", "fsdd", FSDD / "recordings", "-d", recipe
    )  # fmt: skip
    assert code == 1 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"snnasr prep fsdd: {recipe}") and "Read-only file system" in line
    assert "choose a writable recipe dir with -d" in line


def test_disk_full_during_features_is_one_line_and_leaves_nothing_trusted(tmp_path, tmpfs, monkeypatch, capsys):
    from test_features import make_recipe

    recipe = make_recipe(tmp_path, seconds=(3.0, 3.0, 3.0, 3.0))
    small = tmpfs(size="96k")
    shutil.copytree(recipe / "data", small / "data")
    code, _, err = run_cli(monkeypatch, capsys, "features", "--sets", "train", "-d", small)
    assert code == 1 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith("snnasr features: ") and "No space left on device" in line and "the disk is full" in line
    data = small / "data" / "train"
    assert not (data / "conf" / "features.yaml").exists()  # the stage is not marked done
    assert _leftovers(small) == []  # no temporary file left behind
    # With room again, the same command completes (and gives what a roomy disk gives).
    roomy = tmp_path / "roomy"
    shutil.copytree(small, roomy)
    assert run_cli(monkeypatch, capsys, "features", "--sets", "train", "-d", roomy)[0] == 0
    assert run_cli(monkeypatch, capsys, "features", "--sets", "train", "-d", recipe)[0] == 0
    assert (roomy / "data" / "train" / "feats.ark").read_bytes() == (
        recipe / "data" / "train" / "feats.ark"
    ).read_bytes()


# ---------------------------------------------------------------- data dirs: validate, --fix, ids


def _edit(path: Path, fn) -> None:
    path.write_text("\n".join(fn(path.read_text().splitlines())) + "\n")


@pytest.mark.parametrize(
    "case, edit, words",
    [
        (
            "uttid with a space",
            ("utt2spk", lambda ls: [ls[0].replace("spk0_u0", "spk0 u0", 1)] + ls[1:]),
            "utt2spk:1: 'spk0 u0 spk0' has 3 fields, expected '<uttid> <speaker>'; ids cannot contain spaces",
        ),
        (
            "empty speaker",
            ("utt2spk", lambda ls: ["spk0_u0"] + ls[1:]),
            "utt2spk:1: utterance 'spk0_u0' has no speaker",
        ),
        ("duplicate uttid", ("text", lambda ls: ls[:1] + ls), "text:2: duplicate key 'spk0_u0'"),
        ("unsorted uttids", ("wav.scp", lambda ls: ls[::-1]), "wav.scp: not sorted by key (C locale)"),
        ("utterance without text", ("text", lambda ls: ls[1:]), "utterances differ from wav.scp"),
    ],
)
def test_validate_names_the_problem_and_fix_writes_a_repaired_copy(tmp_path, monkeypatch, capsys, case, edit, words):
    from test_features import make_recipe

    recipe = make_recipe(tmp_path)
    data = recipe / "data" / "train"
    _edit(data / edit[0], edit[1])
    before = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    for args in (["validate", "--sets", "train"], ["features", "--sets", "train"]):  # features validates first
        code, _, err = run_cli(monkeypatch, capsys, *args, "-d", recipe)
        assert code == 1
        (line,) = err.strip().splitlines()
        assert line.startswith(f"snnasr {args[0]}: {data}/") and words in line and "validate --fix" in line
    assert not (data / "feats.scp").exists()

    code, out, _ = run_cli(monkeypatch, capsys, "validate", data, "--fix")
    assert code == 0
    fixed = data.with_name("train_fixed")
    dropped = read_dropped(fixed)
    n_bad = 0 if case == "unsorted uttids" else 1
    assert f"wrote {fixed}: utterances {4 - n_bad}, dropped {n_bad}" in out and len(dropped) == n_bad
    assert run_cli(monkeypatch, capsys, "validate", fixed)[0] == 0
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()} == before  # the original is untouched
    assert run_cli(monkeypatch, capsys, "features", "--sets", "train_fixed", "-d", recipe)[0] == 0


def test_killed_features_is_redone_identically_and_its_temporaries_cleaned(tmp_path, capsys):
    """kill -9 in the middle of writing feats.ark: nothing is trusted, the rerun gives the clean result."""
    import os
    import subprocess
    import sys

    from test_features import make_recipe

    recipe = make_recipe(tmp_path, seconds=(0.31, 0.25, 0.42, 0.2) * 3)
    data = recipe / "data" / "train"
    killer = (
        "import os, signal, sys\n"
        "import snnasr.features as F\n"
        "real = F.cmvn_stats\n"
        "calls = []\n"
        "def stats(x):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 5:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(x)\n"
        "F.cmvn_stats = stats\n"
        "F.make_features(sys.argv[1], F.FeatureOptions.load(None))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", killer, str(data)], env=env, capture_output=True)
    assert proc.returncode == -9
    assert _leftovers(data), "the kill should leave a temporary feats.ark behind"
    assert not (data / "conf" / "features.yaml").exists()

    make_features(data, FeatureOptions.load(None))
    err = capsys.readouterr().err
    assert re.search(r"removed [12] temporary files left by an interrupted run", err) and _leftovers(data) == []
    clean = make_recipe(tmp_path / "clean", seconds=(0.31, 0.25, 0.42, 0.2) * 3) / "data" / "train"
    make_features(clean, FeatureOptions.load(None))
    for name in ("feats.ark", "cmvn.ark", "utt2num_frames", "labels_phone48.ark"):
        assert (data / name).read_bytes() == (clean / name).read_bytes(), name


def test_rerun_skips_force_redoes(tmp_path, monkeypatch, capsys):
    from test_features import make_recipe

    recipe = make_recipe(tmp_path)
    ark = recipe / "data" / "train" / "feats.ark"
    assert run_cli(monkeypatch, capsys, "features", "--sets", "train", "-d", recipe)[0] == 0
    first = ark.stat().st_mtime_ns
    code, _, err = run_cli(monkeypatch, capsys, "features", "--sets", "train", "-d", recipe)
    assert code == 0 and "features up to date" in err and ark.stat().st_mtime_ns == first
    code, _, err = run_cli(monkeypatch, capsys, "features", "--sets", "train", "--force", "-d", recipe)
    assert code == 0 and "up to date" not in err and ark.stat().st_mtime_ns != first


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_respect_the_umask(tmp_path, umask):
    import os

    from test_features import make_recipe

    recipe = make_recipe(tmp_path)
    old = os.umask(umask)
    try:
        make_features(recipe / "data" / "train", FeatureOptions.load(None))
    finally:
        os.umask(old)
    for name in ("feats.ark", "feats.scp", "cmvn.ark", "utt2num_frames", "conf/features.yaml"):
        assert (recipe / "data" / "train" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


# ---------------------------------------------------------------- training signals


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "frames_per_s")} for r in rows]


TWO_EPOCHS = [a if a != "train.epochs=1" else "train.epochs=2" for a in TRAIN_ARGS] + [
    "train.curriculum=20*1|50*1",
    "train.batch_frames=60",
]


@pytest.fixture
def features_only(tmp_path, monkeypatch, capsys):
    from test_features import make_recipe

    recipe = make_recipe(tmp_path, seconds=(0.31, 0.25, 0.42, 0.2) * 2)
    assert run_cli(monkeypatch, capsys, "features", "--sets", "train", "-d", recipe)[0] == 0
    assert run_cli(monkeypatch, capsys, "train", *TWO_EPOCHS, "--exp", "straight", "-d", recipe)[0] == 0
    return recipe


def test_sigterm_finishes_the_step_checkpoints_and_the_printed_command_resumes_exactly(
    features_only, monkeypatch, capsys
):
    import os
    import shlex
    import signal

    import snnasr.train as T

    recipe = features_only
    real, calls = T._train_step, {"n": 0}

    def step(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler's time limit would
        return real(*args, **kw)

    monkeypatch.setattr(T, "_train_step", step)
    code, _, err = run_cli(monkeypatch, capsys, "train", *TWO_EPOCHS, "--exp", "cut", "-d", recipe)
    assert code == 130 and "SIGTERM: finishing this step" in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler removed again
    ckpts = sorted(p.name for p in (recipe / "exp" / "cut" / "checkpoints").iterdir())
    assert ckpts[-1].endswith(".interrupted.pt") and _leftovers(recipe / "exp") == []
    monkeypatch.setattr(T, "_train_step", real)
    command = shlex.split(err.strip().splitlines()[-1].split("continue with: ")[1])
    assert run_cli(monkeypatch, capsys, *command[1:])[0] == 0
    assert _metrics(recipe / "exp" / "cut") == _metrics(recipe / "exp" / "straight")


@pytest.mark.parametrize("every", [0, 2])
def test_kill_9_resumes_from_the_last_complete_checkpoint_with_the_same_result(
    features_only, monkeypatch, capsys, every
):
    import os
    import subprocess
    import sys

    recipe = features_only
    killer = (
        "import os, signal, sys\n"
        "import snnasr.train as T\n"
        "from snnasr.cli import main\n"
        "real, calls = T._train_step, []\n"
        "def step(*a, **k):\n"
        "    calls.append(1)\n"
        "    if len(calls) == int(os.environ['KILL_AT']):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(*a, **k)\n"
        "T._train_step = step\n"
        "sys.argv = ['snnasr', *sys.argv[1:]]\n"
        "main()\n"
    )
    import snnasr.train as T

    real, calls = T._train_step, []
    monkeypatch.setattr(T, "_train_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    one_epoch = [a if a != "train.epochs=2" else "train.epochs=1" for a in TWO_EPOCHS]
    assert run_cli(monkeypatch, capsys, "train", *one_epoch, "--exp", "count", "-d", recipe)[0] == 0
    monkeypatch.setattr(T, "_train_step", real)
    # Killed during the 3rd minibatch of epoch 2, after the mid-epoch checkpoint of minibatch 2.
    # The killed run must compute with this process's thread count: the comparison is exact.
    threads = str(torch.get_num_threads())
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, KILL_AT=str(len(calls) + 3))
    args = ["train", *TWO_EPOCHS, f"train.checkpoint_every={every}", "--exp", "killed", "-d", str(recipe)]
    proc = subprocess.run([sys.executable, "-c", killer, *args], env=env, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    run = recipe / "exp" / "killed"
    left = sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith("."))
    assert left == (["epoch1.pt", "epoch2.interrupted.pt"] if every else ["epoch1.pt"])
    code, _, err = run_cli(monkeypatch, capsys, *args, "--resume")
    assert code == 0, err
    assert ("minibatch 2" in (run / "train.log").read_text()) == bool(every)  # resumed mid-epoch
    assert _metrics(run) == _metrics(recipe / "exp" / "straight")
    assert _leftovers(run) == []


def test_labels_of_an_unknown_utterance_are_refused(tmp_path):
    from test_features import make_recipe

    from snnasr.dataset import UtteranceDataset
    from snnasr.kaldi.ark import write_vec_int_ark_scp

    data = make_recipe(tmp_path) / "data" / "train"
    make_features(data, FeatureOptions.load(None))
    labels = dict(read_vec_int_scp(data / "labels_phone48.scp"))
    labels["zz_stranger"] = labels["spk0_u0"]
    write_vec_int_ark_scp(sorted(labels.items()), data / "labels_phone48.ark", data / "labels_phone48.scp")
    with pytest.raises(
        DataError, match=r"labels_phone48.scp: labels for 1 utterances that are not in feats.scp \(e.g. zz_stranger\)"
    ):
        UtteranceDataset(data)


def test_no_hidden_draw_from_the_global_rng():
    """Exact resume compares runs in different processes: a one-time check drawing from the
    global RNG (oneDNN's self-test once did) shifts the first run of a process only."""
    from snnasr.models import gemm

    gemm._onednn_works.cache_clear()
    before = torch.get_rng_state()
    gemm._onednn_works()
    assert torch.equal(torch.get_rng_state(), before)


def test_an_ignored_sigint_stays_ignored_and_sigterm_requests_a_stop():
    import os
    import signal

    from snnasr.runtime import deferred_stop

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job
    try:
        with deferred_stop() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            stop.check()  # nothing requested
            os.kill(os.getpid(), signal.SIGTERM)
            with pytest.raises(KeyboardInterrupt):
                stop.check()
            assert stop.requested == "SIGTERM"
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, previous)
