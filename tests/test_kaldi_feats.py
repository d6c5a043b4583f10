"""A Kaldi data dir with Kaldi's own (compressed) features trains with no `snnasr features` run.

The user story of issue 14: Kaldi's make_mfcc.sh writes compressed ``CM`` matrices by default;
here real yes/no MFCCs are rewritten as such an ark (+ per-speaker ``DM`` CMVN stats, as
compute_cmvn_stats.sh writes), Kaldi's real alignments are imported with ``prep kaldi``, and
``snnasr train`` runs on the set as it is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from yesno_fixture import DATA, KALDI_LANG, yesno_with_alignments

from snnasr.cli import cli
from snnasr.data.datadir import read_table
from snnasr.data.yesno import prepare_yesno
from snnasr.features import FeatureOptions, make_features
from snnasr.io import DataError
from snnasr.kaldi.ark import read_mat_scp, write_mat_ark_scp
from snnasr.kaldi.feats import adopt_kaldi_features


def kaldi_recipe(root: Path, compress: str = "CM") -> Path:
    """``root/data/train_yesno`` as a Kaldi user has it: feats.scp (compressed), cmvn.scp, utt2spk; no conf/."""
    data, _ = yesno_with_alignments(root)
    scratch = root / "snnasr_feats"
    shutil.copytree(data, scratch)
    make_features(scratch, FeatureOptions.load(None, ftype="mfcc", deltas=True, cmvn="speaker"))
    write_mat_ark_scp(
        read_mat_scp(scratch / "feats.scp"), root / "mfcc" / "raw_mfcc.ark", data / "feats.scp", compress=compress
    )
    write_mat_ark_scp(read_mat_scp(scratch / "cmvn.scp"), root / "mfcc" / "cmvn.ark", data / "cmvn.scp", np.float64)
    shutil.rmtree(scratch)
    return data


def test_compressed_kaldi_feats_train_after_prep_kaldi(tmp_path: Path) -> None:
    data = kaldi_recipe(tmp_path)
    assert b"CM " in next((tmp_path / "mfcc").glob("raw_mfcc.ark")).read_bytes()[:64]
    assert not (data / "conf").exists()
    runner = CliRunner()
    train = ["train", "--arch", "lstm", "-d", str(tmp_path), "--device", "cpu"]
    train += ["model.hidden=8", "train.epochs=1", "train.batch_frames=4000", "train.curriculum=1000*1"]
    train += ["data.train_set=train_yesno", "data.dev_set=train_yesno"]
    result = runner.invoke(
        cli,
        ["prep", "kaldi", "--data", str(data), "--ali", str(tmp_path / "exp" / "mono_ali")]
        + ["--lang", str(KALDI_LANG), "-d", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "kaldi_feats 2" in result.output
    state = yaml.safe_load((data / "conf" / "features.yaml").read_text())
    assert (state["type"], state["dim"], state["cmvn"]) == ("kaldi", 39, "speaker")
    result = runner.invoke(cli, train)
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and (tmp_path / "exp" / "lstm" / "model.pt").is_file()


@pytest.mark.parametrize("compress", ["CM2", "CM3", None])
def test_every_kind_is_adopted_with_its_frame_counts(tmp_path: Path, compress: str | None) -> None:
    data = kaldi_recipe(tmp_path, compress)
    frames = adopt_kaldi_features(data)
    wavs = read_table(data / "wav.scp")
    assert sorted(frames) == sorted(wavs) and all(n > 100 for n in frames.values())
    assert adopt_kaldi_features(data) == frames  # idempotent: its own record is not "made by snnasr"


def test_snnasr_features_are_left_alone_and_bad_cmvn_is_an_error(tmp_path: Path) -> None:
    prepare_yesno(DATA, tmp_path)
    data = tmp_path / "data" / "train_yesno"
    make_features(data, FeatureOptions.load(None, ftype="mfcc"))
    before = (data / "conf" / "features.yaml").read_text()
    assert adopt_kaldi_features(data) is None and (data / "conf" / "features.yaml").read_text() == before

    data = kaldi_recipe(tmp_path / "k")
    write_mat_ark_scp([("nobody", np.ones((2, 40)))], tmp_path / "c.ark", data / "cmvn.scp", np.float64)
    with pytest.raises(DataError, match="keys are neither the speakers"):
        adopt_kaldi_features(data)
    write_mat_ark_scp([("global", np.ones((2, 5)))], tmp_path / "c.ark", data / "cmvn.scp", np.float64)
    with pytest.raises(DataError, match="not 2x40"):
        adopt_kaldi_features(data)
