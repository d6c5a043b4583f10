"""Features made by Kaldi (``feats.scp`` + ``cmvn.scp`` of a Kaldi data dir) used as they are.

The seed trains on Kaldi fMLLR features; a Kaldi user has ``data/<set>/feats.scp`` (often
compressed ``CM`` matrices, Kaldi's default), ``cmvn.scp`` from ``compute_cmvn_stats.sh`` and
``utt2spk``.  Training reads a set through ``conf/features.yaml`` (what CMVN key to apply, the
dimension), which ``snnasr features`` writes for its own features.  :func:`adopt_kaldi_features`
writes the same record for Kaldi's, after reading every matrix once, so a set is trusted only
when all of it is readable -- and no ``snnasr features`` run (which would replace Kaldi's
features with its own) is needed.  ``snnasr prep kaldi`` calls it.

CMVN key: Kaldi's ``compute_cmvn_stats.sh`` keys stats by speaker (``spk2utt``), or by
utterance with ``--fake``/per-utterance setups; the key is read off the stats themselves: all
keys speakers of ``utt2spk`` -> ``speaker``, all utterances -> ``utt``.  No ``cmvn.scp`` ->
``none`` (fMLLR features are often used without CMVN).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import yaml

from snnasr.data.datadir import read_table
from snnasr.features import STATE_FILE
from snnasr.io import DataError, write_text
from snnasr.kaldi.ark import read_mat_scp

KALDI_FRAME_SHIFT = 0.01  # seconds; Kaldi's default, used when the data dir has no frame_shift file


def _sha(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0" + (p.read_bytes() if p.is_file() else b""))
    return h.hexdigest()[:16]


def _made_by_snnasr(state_path: Path) -> bool:
    try:
        state = yaml.safe_load(state_path.read_text()) if state_path.is_file() else None
    except (yaml.YAMLError, OSError):
        return False
    return isinstance(state, dict) and bool(state.get("hash")) and state.get("type") != "kaldi"


def adopt_kaldi_features(data_dir: str | os.PathLike) -> dict[str, int] | None:
    """Record the Kaldi features of ``data_dir`` for training; return frames per utterance.

    Returns None (and writes nothing) when the set has no ``feats.scp`` or its features were
    made by ``snnasr features``.  Raises DataError when an entry cannot be read, dimensions
    differ, a value is not finite, or ``cmvn.scp`` is keyed by neither speakers nor utterances.
    """
    data_dir = Path(data_dir)
    feats_scp, cmvn_scp = data_dir / "feats.scp", data_dir / "cmvn.scp"
    state_path = data_dir / STATE_FILE
    if not feats_scp.is_file() or _made_by_snnasr(state_path):
        return None
    frames, dims = {}, set()
    for utt, mat in read_mat_scp(feats_scp):
        if not np.isfinite(mat).all():
            raise DataError(f"{feats_scp}: {utt} has non-finite values; recompute the Kaldi features")
        frames[utt] = int(mat.shape[0])
        dims.add(int(mat.shape[1]))
    if not frames:
        raise DataError(f"{feats_scp}: empty; run Kaldi's feature extraction for {data_dir} first")
    if len(dims) > 1:
        raise DataError(f"{feats_scp}: matrices of dimensions {sorted(dims)}; one set needs one feature type")
    dim = dims.pop()
    cmvn = "none"
    if cmvn_scp.is_file():
        keys = set()
        for key, stats in read_mat_scp(cmvn_scp):
            if stats.shape != (2, dim + 1):
                raise DataError(
                    f"{cmvn_scp}: stats of {key!r} are {stats.shape[0]}x{stats.shape[1]}, not 2x{dim + 1} for "
                    f"{dim}-dim features; recompute them with steps/compute_cmvn_stats.sh"
                )
            keys.add(key)
        speakers = set(read_table(data_dir / "utt2spk").values()) if (data_dir / "utt2spk").is_file() else set()
        if keys and keys <= speakers:
            cmvn = "speaker"
        elif keys and keys <= set(frames):
            cmvn = "utt"
        else:
            raise DataError(
                f"{cmvn_scp}: keys are neither the speakers of utt2spk nor utterances of feats.scp "
                f"(e.g. {sorted(keys)[0]!r}); recompute it with steps/compute_cmvn_stats.sh {data_dir}"
            )
    shift_file = data_dir / "frame_shift"
    shift = float(shift_file.read_text().split()[0]) if shift_file.is_file() else KALDI_FRAME_SHIFT
    state = {
        "type": "kaldi",
        "dim": dim,
        "cmvn": cmvn,
        "frame_shift": shift,
        "utterances": len(frames),
        "frames": int(sum(frames.values())),
        "hash": _sha([feats_scp, cmvn_scp]),
        "inputs": {"feats.scp": _sha([feats_scp]), "cmvn.scp": _sha([cmvn_scp])},
    }
    write_text(state_path, yaml.safe_dump(state, sort_keys=False))
    return frames
