"""A small yes/no recipe dir from the shipped real recordings and Kaldi's real alignments."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from snnasr.data.datadir import read_table
from snnasr.data.yesno import prepare_yesno
from snnasr.kaldi.ark import read_vec_int_ark

DATA = Path(__file__).parent / "data" / "kaldi_yesno"
KALDI_LANG = DATA / "data" / "lang"


def yesno_with_alignments(root: Path) -> tuple[Path, Path]:
    """``root/data/train_yesno`` (2 utterances) and ``root/exp/mono_ali`` (final.mdl + ali.1.gz for them)."""
    prepare_yesno(DATA, root)
    data = root / "data" / "train_yesno"
    ali = root / "exp" / "mono_ali"
    ali.mkdir(parents=True)
    shutil.copy(DATA / "exp" / "mono" / "40.mdl", ali / "final.mdl")
    alis = dict(read_vec_int_ark(DATA / "exp" / "mono" / "ali.1.gz"))
    with gzip.open(ali / "ali.1.gz", "wt") as f:
        f.writelines(f"{u} {' '.join(map(str, alis[u]))}\n" for u in read_table(data / "wav.scp"))
    return data, ali


def yesno_recipe(root: Path) -> Path:
    """A trainable recipe dir: the 2 utterances above with MFCC + deltas and pdf/phone frame labels."""
    from snnasr.features import FeatureOptions, make_features
    from snnasr.kaldi.alignments import prepare_kaldi

    data, ali = yesno_with_alignments(root)
    make_features(data, FeatureOptions.load(None, ftype="mfcc", deltas=True, cmvn="utt"))
    prepare_kaldi(data, ali, root, lang_dir=KALDI_LANG)
    return root


# `snnasr train` arguments for a seconds-long run on yesno_recipe (dev = the training set).
TINY_TRAIN = ["--device", "cpu", "model.hidden=16", "train.batch_frames=4000", "train.curriculum=1000*1"]
TINY_TRAIN += ["data.train_set=train_yesno", "data.dev_set=train_yesno"]
