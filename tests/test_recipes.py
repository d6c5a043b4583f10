"""End-to-end recipe runs (the SMALL demo and yes/no), in a copy of the recipe dir.

These are the project's smoke tests in the spirit of Kaldi's egs/yesno and SpeechBrain's recipe
tests: they check that every stage produced its files and that the report holds real numbers.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_YESNO = REPO.parent / "shared" / "data" / "kaldi-yesno"
SNNASR = Path(sys.executable).with_name("snnasr")

pytestmark = pytest.mark.slow


def _copy_recipe(name: str, tmp_path: Path) -> Path:
    shutil.copy(REPO / "recipes" / "common.mk", tmp_path / "common.mk")
    dst = tmp_path / name
    shutil.copytree(REPO / "recipes" / name, dst, ignore=shutil.ignore_patterns("corpus*", "data", "exp", ".stamps"))
    return dst


def _make(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["make", "-C", str(recipe), f"SNNASR={SNNASR}", *args], capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _check_results(recipe: Path, archs: list[str], eval_set: str) -> None:
    for arch in archs:
        run = recipe / "exp" / arch
        for name in ("config.yaml", "model.pt", "metrics.jsonl", "train.log"):
            assert (run / name).is_file(), f"{run / name} missing"
        results = json.loads((run / f"eval_{eval_set}" / "results.json").read_text())
        assert results["frames"] > 0
    report = (recipe / "exp" / "report.md").read_text()
    for arch in archs:
        assert arch in report
    assert list((recipe / "exp").glob("*.png"))


def test_demo_small_end_to_end(tmp_path):
    recipe = _copy_recipe("demo", tmp_path)
    _make(recipe, "SMALL=1")
    _check_results(recipe, ["lstm", "gru", "lif", "proposed", "alif", "scsr"], "test")
    # Re-running is a no-op: every stage is stamped.
    again = _make(recipe, "SMALL=1")
    assert "snnasr train" not in again.stdout
    # sweep.sh (README "Levers"): each line trained with its overrides, scored on dev, one report.
    (recipe / "tiny.txt").write_text("# a comment\nsw_tiny lstm train.epochs=1 model.hidden=8 train.curriculum=100*1\n")
    sweep = ["bash", "sweep.sh", "tiny.txt"]
    env = {**os.environ, "SNNASR": str(SNNASR)}
    out = subprocess.run(sweep, cwd=recipe, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "hidden: 8" in (recipe / "exp" / "sw_tiny" / "config.yaml").read_text()
    assert "Set `dev`" in (recipe / "exp" / "tiny" / "report.md").read_text()
    assert "exp/sw_tiny" in out.stdout.split("training seconds per run")[1]
    # A finished line is skipped on the next call (one timing row), and a missing file is refused.
    subprocess.run(sweep, cwd=recipe, env=env, check=True, capture_output=True, timeout=600)
    assert len((recipe / "exp" / "sweep_times.tsv").read_text().splitlines()) == 1
    bad = subprocess.run(["bash", "sweep.sh", "nothere.txt"], cwd=recipe, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "no such sweep file" in bad.stderr


def test_yesno_recipe_real_kaldi_alignments(tmp_path):
    if not (SHARED_YESNO / "waves_yesno").is_dir():
        pytest.skip(f"{SHARED_YESNO} absent: the shared Kaldi yes/no data is not on this machine")
    recipe = _copy_recipe("yesno", tmp_path)
    _make(recipe, f"YESNO={SHARED_YESNO}")
    _check_results(recipe, ["lstm", "proposed", "lstm_phone", "proposed_phone"], "train_yesno")
    levels = {
        json.loads((recipe / "exp" / run / "eval_train_yesno" / "results.json").read_text())["label_level"]
        for run in ("proposed", "proposed_phone")
    }
    assert levels == {"pdf", "phone"}


TINY_TRAIN = "TRAIN_ARGS=model.hidden=8 train.epochs=1 train.curriculum=1000*1"


def test_timit_recipe_on_ldc_layout_fixture(tmp_path):
    from timit_fixture import make_timit

    mini = make_timit(tmp_path / "TIMIT", train_speakers=3, dev_speakers=1, test_speakers=1)
    recipe = _copy_recipe("timit", tmp_path)
    _make(recipe, f"TIMIT={mini.root}", TINY_TRAIN, "ARCHS=lstm proposed", "JOBS=1")
    _check_results(recipe, ["lstm", "proposed"], "test")


def test_librispeech_recipe_on_fixture_with_textgrids(tmp_path):
    from test_librispeech import make_librispeech

    make_librispeech(
        tmp_path / "corpus", sets=("train-clean-100", "dev-clean", "test-clean"), textgrids=tmp_path / "mfa"
    )
    recipe = _copy_recipe("librispeech", tmp_path)
    _make(
        recipe,
        f"LIBRISPEECH={tmp_path / 'corpus'}",
        f"TEXTGRIDS={tmp_path / 'mfa'}",
        TINY_TRAIN,
        "ARCHS=lstm proposed",
        "JOBS=1",
    )
    _check_results(recipe, ["lstm", "proposed"], "test_clean")


def test_fsdd_recipe_on_shipped_recordings(tmp_path):
    shutil.copytree(REPO / "tests" / "data" / "fsdd" / "recordings", tmp_path / "fsdd_corpus" / "recordings")
    recipe = _copy_recipe("fsdd", tmp_path)
    _make(recipe, f"FSDD={tmp_path / 'fsdd_corpus'}", TINY_TRAIN, "JOBS=1")
    archs = ["lstm", "gru", "lif", "proposed", "alif", "scsr"]
    _check_results(recipe, archs + ["lstm_frame", "proposed_frame"], "test")
    tasks = {
        run: json.loads((recipe / "exp" / run / "eval_test" / "results.json").read_text())["task"]
        for run in ("scsr", "proposed_frame")
    }
    assert tasks == {"scsr": "utterance", "proposed_frame": "frame"}
    assert "Utt. acc. %" in (recipe / "exp" / "report.md").read_text()


def test_seeds_and_named_configs(tmp_path):
    # SEEDS="1 2" trains each run once per seed (<run>-s<seed>); a run name is its config's
    # (conf/train_lif_official.yaml), the architecture the name up to its first "_".
    shutil.copytree(REPO / "tests" / "data" / "fsdd" / "recordings", tmp_path / "fsdd_corpus" / "recordings")
    recipe = _copy_recipe("fsdd", tmp_path)
    _make(
        recipe,
        f"FSDD={tmp_path / 'fsdd_corpus'}",
        TINY_TRAIN,
        "JOBS=1",
        "ARCHS=lif_official",
        "FRAME_RUNS=",
        "SEEDS=1 2",
    )
    for seed in (1, 2):
        config = (recipe / "exp" / f"lif_official-s{seed}" / "config.yaml").read_text()
        assert f"seed: {seed}" in config and "arch: lif" in config and "lif_decay_init: 1.0" in config
    report = (recipe / "exp" / "report.md").read_text()
    assert "| lif | 2 |" in report


@pytest.mark.parametrize("sweep", sorted((REPO / "recipes" / "demo").glob("sweep_*.txt")), ids=lambda p: p.name)
def test_committed_sweep_lines_are_valid_configs(sweep):
    """Every line of a committed sweep file (README "Levers") still loads: its conf exists and its
    overrides name real, valid fields -- a conf edit that breaks a documented run fails here, not
    halfway through a sweep."""
    from snnasr.config import load_config

    lines = [ln.split() for ln in sweep.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines
    for run, conf, *overrides in lines:
        arch = conf.split("_")[0]  # as sweep.sh: the config name up to its first "_"
        cfg = load_config(sweep.parent / "conf" / f"train_{conf}.yaml", overrides, model={"arch": arch})
        assert cfg.model.arch == arch, run
