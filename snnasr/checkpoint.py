"""Checkpoints and trained models on disk, and the provenance they carry.

Files of ``exp/<run>/`` (written by :mod:`snnasr.train`):

``checkpoints/epoch<N>.pt``               state after epoch N (1-based);
``checkpoints/epoch<N>.interrupted.pt``   written when a run is stopped during epoch N;
``model.pt``                              best epoch on dev frame accuracy.

Every one of them holds the resolved config and a **data fingerprint** (:func:`data_fingerprint`)
of the sets it was trained on: the features' option hash (``conf/features.yaml``, which covers
type, dims, framing and CMVN), the CMVN mode, the label level and a hash of its symbol list,
and the number and a hash of the utterance list.  ``train --resume`` and ``eval`` compare it
with the data in front of them and refuse a mismatch in one line saying what changed
(:func:`fingerprint_changes`), because a model scored on features it was never trained on gives
a number, not an error.  ``model.pt`` also records ``epoch``, ``epochs`` (planned) and
``finished``; :func:`model_stamp` is what ``results.json`` keeps of it, so a report can tell an
evaluation of an unfinished or since-replaced model.

Writes are atomic (:func:`save`); a file that cannot be read back (truncated, empty, not a
snnasr file) is one DataError line naming it and what to do (:func:`load`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch

from snnasr.io import DataError, atomic_write

CHECKPOINT_RE = re.compile(r"^epoch(\d+)(\.interrupted)?\.pt$")
MODEL = "model.pt"
# Fingerprint fields that must agree between the training data and a set a model is scored on.
FEATURE_FIELDS = ("features", "feature_type", "cmvn", "dim", "label_level", "label_set")
_NAMES = {
    "features": "feature options (conf/features.yaml hash)",
    "feature_type": "feature type",
    "cmvn": "CMVN",
    "dim": "feature dimension",
    "label_level": "label level",
    "label_set": "label set (data/lang)",
    "utterances": "number of utterances",
    "utt_list": "utterance list",
}


def build_model(arch: str, model_cfg: Any, n_in: int, n_out: int) -> torch.nn.Module:
    # Imported late: the CLI must start without loading every model.
    from snnasr.models import build

    return build(arch, model_cfg, n_in, n_out)


def checkpoints(exp_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints of a run, oldest first (an interrupted epoch N sorts after epoch N-1)."""
    found = []
    for path in (Path(exp_dir) / "checkpoints").glob("epoch*.pt"):
        m = CHECKPOINT_RE.match(path.name)
        if m:
            found.append(((int(m.group(1)), m.group(2) is None), path))
    return [p for _, p in sorted(found)]


def check_exp_dir(exp_dir: str | os.PathLike, resume: bool) -> Path | None:
    """The checkpoint to resume from (None for a fresh run); refuse to overwrite or guess."""
    found = checkpoints(exp_dir)
    if resume and not found:
        raise DataError(f"{exp_dir}: no checkpoint to resume from; run without --resume")
    if not resume and found:
        raise DataError(f"{exp_dir}: already has checkpoints; pass --resume to continue it or choose another --exp")
    return found[-1] if resume else None


def save(path: str | os.PathLike, obj: dict) -> None:
    """Write atomically: a run killed mid-write leaves the previous file, never half of a new one."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def load(path: str | os.PathLike, what: str, hint: str, keys: tuple[str, ...], weights_only: bool = False) -> dict:
    """Read a checkpoint or model; DataError (one line) when it is empty, truncated or foreign."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: empty {what} (0 bytes); {hint}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=weights_only)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found; {hint}") from None
    except Exception as e:  # zip, pickle and EOF errors of a damaged file
        reason = (str(e).splitlines()[0] if str(e) else type(e).__name__).split(". ")[0][:120]
        raise DataError(f"{path}: unreadable {what}, truncated or corrupt ({reason}); {hint}") from None
    missing = [k for k in keys if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise DataError(f"{path}: not a snnasr {what} (no {', '.join(missing)}); {hint}")
    return blob


def load_checkpoint(path: Path) -> dict:
    """A checkpoint to resume from, with the hint of what to do when it is damaged."""
    previous = [p for p in checkpoints(path.parent.parent) if p != path]
    hint = (
        f"delete it to resume from {previous[-1].name}" if previous else "delete the run's checkpoints/ to start over"
    )
    return load(path, "checkpoint", hint, ("model", "optimizer", "config", "n_in", "n_out", "epoch"))


def load_model(
    exp_dir: str | os.PathLike, device: str | torch.device | None = None
) -> tuple[torch.nn.Module, Any, dict]:
    """The best model of a run, in eval mode on ``device``; ``meta`` = model.pt minus weights/config.

    Raises DataError when ``exp_dir/model.pt`` is missing, damaged or does not fit its config.
    """
    from snnasr.config import config_from_dict
    from snnasr.runtime import resolve_device

    path = Path(exp_dir) / MODEL
    if not path.is_file():
        raise DataError(f"{path}: no trained model; run snnasr train first (or check the exp name)")
    hint = f"re-train it (snnasr train --exp {Path(exp_dir).name} --resume) or restore the file"
    blob = load(path, "model", hint, ("config", "state_dict", "arch", "n_in", "n_out"), weights_only=True)
    cfg = config_from_dict(blob["config"])
    model = build_model(blob["arch"], cfg.model, blob["n_in"], blob["n_out"])
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:
        raise DataError(f"{path}: weights do not fit its config ({str(e).splitlines()[0]}); {hint}") from None
    model.to(resolve_device(device)).eval()
    return model, cfg, {k: v for k, v in blob.items() if k not in ("config", "state_dict")}


def check_resumable(
    exp_dir: Path, last: Path, ckpt: dict, config: dict, n_in: int, n_out: int, fingerprint: dict
) -> None:
    """Refuse to resume ``last`` with another model shape, config (``train.epochs`` may grow) or data.

    Each refusal is one line saying what changed and what to do.
    """
    from snnasr.io import ConfigError

    if (ckpt["n_in"], ckpt["n_out"]) != (n_in, n_out):
        raise DataError(
            f"{last}: model has {ckpt['n_in']} inputs and {ckpt['n_out']} outputs but the data "
            f"has {n_in} and {n_out}; resume with the data it was trained on or use another --exp"
        )
    from snnasr.config import config_from_dict

    # Through the current schema, so that a section layout that changed since is not a "difference".
    saved_config = dataclasses.asdict(config_from_dict(ckpt["config"]))
    diff = _config_changes(_comparable(saved_config), _comparable(config))
    if diff:
        raise ConfigError(
            f"{exp_dir}: config differs from the run being resumed in {', '.join(diff)}; "
            f"pass the same --config/overrides (only train.epochs may change)"
        )
    saved = ckpt.get("data")
    if saved is None:
        print(f"snnasr train: warning: {last} records no data fingerprint (older snnasr); not checked", file=sys.stderr)
        return
    for role in ("train", "dev"):
        changes = fingerprint_changes(saved.get(role, {}), fingerprint[role])
        if changes:
            raise DataError(
                f"{exp_dir}: the {role} data changed since {last.name} was written ({'; '.join(changes)}); "
                f"recompute the features with the run's options, or train a new run with --exp NAME"
            )


def _comparable(config: dict) -> dict:
    config = json.loads(json.dumps(config))
    config["train"].pop("epochs", None)
    config["train"].pop("workers", None)  # how fast the data is read does not change the numbers
    config.pop("log", None)  # where the numbers are shown (TensorBoard) does not change them
    return config


def _config_changes(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _config_changes(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def mark_finished(exp_dir: Path, epochs: int) -> None:
    """Record in model.pt that training ran all ``epochs``: evaluations of it are final, not partial."""
    path = exp_dir / MODEL
    if not path.is_file():
        return
    blob = load(path, "model", "re-train it", ("epoch",), weights_only=True)
    if blob.get("finished") and blob.get("epochs") == epochs:
        return
    blob.update(finished=True, epochs=epochs)
    save(path, blob)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def data_fingerprint(data: Any) -> dict:
    """What identifies the data a model sees (see the module doc); ``data`` is dataset-like.

    Reads ``data.uttids``, ``.level``, ``.dim`` and, where present, ``.lang`` and ``.data_dir``
    (its ``conf/features.yaml``).
    """
    from snnasr.features import read_feature_state

    data_dir = getattr(data, "data_dir", None)
    state = read_feature_state(data_dir) if data_dir is not None else {}
    lang = getattr(data, "lang", None)
    # The class list: a frame level's symbols, or the utterance classes of task: utterance.
    classes = getattr(data, "classes", None) or (lang.symbols(data.level) if lang is not None else None)
    return {
        "set": Path(data_dir).name if data_dir is not None else None,
        "features": state.get("hash"),
        "feature_options": state.get("options"),
        "feature_type": state.get("type"),
        "cmvn": state.get("cmvn"),
        "dim": int(data.dim),
        "label_level": data.level,
        "label_set": _sha(" ".join(classes)) if classes is not None else None,
        "utterances": len(data.uttids),
        "utt_list": _sha("\n".join(data.uttids)),
    }


def fingerprint_changes(old: dict, new: dict, fields: tuple[str, ...] | None = None) -> list[str]:
    """Readable differences, e.g. ``"CMVN speaker -> utt"``; hashes are shown shortened."""
    changes = []
    by_option = old.get("features") != new.get("features") and old.get("feature_options") and new.get("feature_options")
    for key in fields or tuple(_NAMES):
        a, b = old.get(key), new.get(key)
        if key == "features" and by_option:
            changes += option_changes(old["feature_options"], new["feature_options"])
        elif key in ("feature_type", "cmvn", "dim") and by_option:
            continue  # follow from the options listed
        elif a != b:
            if key in ("features", "label_set", "utt_list"):
                a, b = str(a)[:8], str(b)[:8]
            changes.append(f"{_NAMES[key]} {a} -> {b}")
    return changes


def option_changes(old: dict, new: dict) -> list[str]:
    """``["feature option cmvn speaker -> utt", ...]``: the features options that differ."""
    return [
        f"feature option {k} {old.get(k)} -> {new.get(k)}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]


def training_options(saved: dict, now: dict) -> str:
    """The features options a model was trained with where they differ now, as ``snnasr features``
    YAML keys (for hints)."""
    old, new = saved.get("feature_options") or {}, now.get("feature_options") or {}
    diff = [f"{'type' if k == 'ftype' else k}={v}" for k, v in old.items() if new.get(k) != v]
    return ", ".join(diff) or "the options it was trained with"


def model_stamp(exp_dir: str | os.PathLike) -> dict:
    """What an evaluation records of the model it scored: epoch, finished, and a content hash."""
    path = Path(exp_dir) / MODEL
    blob = load(path, "model", "re-train it", ("epoch",), weights_only=True)
    return {
        "epoch": blob["epoch"],
        "epochs": blob.get("epochs"),
        "finished": bool(blob.get("finished", False)),
        "sha": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
    }
