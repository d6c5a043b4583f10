"""``snnasr eval``: score a trained run on one set; optionally count operations from activations.

Inputs: ``exp/<run>/model.pt`` (``snnasr train``), ``data/<set>/feats.scp`` + ``cmvn.scp`` +
``labels_<level>.scp`` (``snnasr features``), ``data/lang/``.  Outputs:
``exp/<run>/eval_<set>/results.json`` (and ``ops.json`` with ``--report-ops``; ``results_official.json``
/ ``ops_official.json`` with ``--ops-convention official``, so the report never mixes them), and a
paper-style table on stdout.

Whole utterances are evaluated (no cutting), batched with right padding and a mask: padded
frames enter no count (accuracy, PER, zeros, ops).  Scores are given at every label level the
training level folds into (TIMIT phone48 -> phone48, phone39; Kaldi pdf -> pdf, phone), each
named.  PER is scored at the recipe's score level (``data/lang/labels.yaml``), silence dropped,
two ways: the reported PER decodes the posteriors with the hybrid phone-loop decoder of
:mod:`snnasr.decode` (priors, durations and bigram LM from the training set's labels; acoustic
scale and LM weight chosen on the dev set), and the "collapse PER" beside it turns the frame
argmax into phone sequences by :func:`snnasr.metrics.phone_sequence` (every flicker an insertion).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, cast

import click
import numpy as np
import torch
from tqdm import tqdm

from snnasr import decode as decodemod
from snnasr import ops as opsmod
from snnasr.io import ConfigError, DataError, write_text
from snnasr.lang import Lang, load_lang
from snnasr.metrics import EditCounts, collapse, edit_distance, frame_accuracy, phone_sequence
from snnasr.ops import ActivationStats, count_ops

DEFAULT_BATCH_FRAMES = 20000


def resolve_exp(exp: str | Path, recipe_dir: Path) -> Path:
    """EXP as given (relative to the cwd), else under the recipe dir, else a run name in exp/."""
    exp = Path(exp)
    for cand in (exp, recipe_dir / exp, recipe_dir / "exp" / exp):
        if (cand / "model.pt").is_file():
            return cand
    raise DataError(f"{exp}/model.pt: not found; run snnasr train first (or give exp/<run>)")


def _check_features(data_dir: Path, set_name: str) -> None:
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such set; run snnasr prep and snnasr features for {set_name}")
    if not (data_dir / "feats.scp").is_file():
        raise DataError(f"{data_dir}/feats.scp: no features for set {set_name}; run snnasr features --sets {set_name}")


def exp_and_set(exp: str | Path, recipe_dir: Path, set_name: str) -> tuple[Path, Path]:
    """``(exp_dir, data/<set>)`` of a command that runs a trained model over a set (eval,
    bench --sparse, stream): the run found and the set's features there, or one line why not."""
    exp_dir = resolve_exp(exp, recipe_dir)
    data_dir = recipe_dir / "data" / set_name
    _check_features(data_dir, set_name)
    return exp_dir, data_dir


def _check_labels(data_dir: Path, set_name: str, level: str, lang: Lang, n_out: int) -> None:
    """Fail early, in one line, on a set whose labels the model cannot be scored against."""
    if level not in lang.levels:
        raise DataError(
            f"{lang.dir}: the model was trained on label level {level!r} but this recipe has "
            f"{', '.join(lang.levels)}; evaluate it in the recipe it was trained in"
        )
    if lang.num_classes(level) != n_out:
        raise DataError(
            f"{lang.dir}/{level}.txt: {lang.num_classes(level)} classes but the model outputs "
            f"{n_out}; mismatched label sets (re-train on this recipe's labels)"
        )
    if not (data_dir / f"labels_{level}.scp").is_file():
        raise DataError(
            f"{data_dir}/labels_{level}.scp: no {level} labels for set {set_name}; "
            f"run snnasr features (with phone_segments) or snnasr prep kaldi for it"
        )


def _check_trained_on(exp_dir: Path, data_dir: Path, saved: dict | None, data: Any) -> dict:
    """The set's data fingerprint; DataError when its features or labels are not the model's."""
    from snnasr.checkpoint import FEATURE_FIELDS, data_fingerprint, fingerprint_changes, training_options

    fingerprint = data_fingerprint(data)
    if saved is None:
        click.echo(f"snnasr eval: warning: {exp_dir}/model.pt records no data fingerprint (older snnasr)", err=True)
        return fingerprint
    changes = fingerprint_changes(saved["train"], fingerprint, FEATURE_FIELDS)
    if changes:
        raise DataError(
            f"{data_dir}: not the features/labels {exp_dir.name} was trained on ({'; '.join(changes)}); "
            f"recompute them (snnasr features) with {training_options(saved['train'], fingerprint)}, or re-train"
        )
    return fingerprint


def _check_utterance_labels(data_dir: Path, set_name: str, level: str, lang: Lang, n_out: int) -> None:
    """``task: utterance``: the set has utt2<level> and the recipe the model's classes."""
    if lang.utterance_level != level or len(lang.utterance_classes) != n_out:
        raise DataError(
            f"{lang.dir}: the model classifies utterances into {n_out} {level!r} classes but this recipe has "
            f"{lang.utterance_level or 'no utterance level'}; evaluate it in the recipe it was trained in"
        )
    if not (data_dir / f"utt2{level}").is_file():
        raise DataError(f"{data_dir}/utt2{level}: no utterance labels for set {set_name}; re-run snnasr prep")


def level_folds(lang: Lang, level: str) -> dict[str, np.ndarray]:
    """Class-id maps from ``level`` to itself and to every level reachable through map files.

    Chains compose (pdf -> phone -> stripped phone), so the score level is reached even without
    a direct map; -1 ("no label") stays -1 along a chain.  Ordered as the recipe lists levels.
    """
    folds = {level: np.arange(lang.num_classes(level))}
    frontier = [level]
    while frontier:
        src = frontier.pop(0)
        for a, b in sorted(lang.maps):
            if a == src and b not in folds:
                step = lang.fold(a, b)
                folds[b] = np.where(folds[a] >= 0, step[np.clip(folds[a], 0, None)], -1)
                frontier.append(b)
    return {lv: folds[lv] for lv in [level] + [lv for lv in lang.levels if lv != level and lv in folds]}


def _references(
    data_dir: Path, train_labels: dict[str, np.ndarray], level: str, target: str, fold: np.ndarray
) -> dict[str, np.ndarray]:
    """Reference frames at ``target``: its own label file where present, else the folded training labels.

    The set's own labels are preferred because some folds are lossy (Kaldi pdf -> phone is a
    majority map); the fold fills frames the file lacks (length tolerance of the features stage).
    """
    refs = {u: np.where(y >= 0, fold[np.clip(y, 0, None)], -1) for u, y in train_labels.items()}
    scp = data_dir / f"labels_{target}.scp"
    if target == level or not scp.is_file():
        return refs
    from snnasr.kaldi.ark import read_vec_int_scp

    for uttid, lab in read_vec_int_scp(scp):
        if uttid in refs:
            n = min(len(lab), len(refs[uttid]))
            refs[uttid][:n] = lab[:n]
    return refs


def pad_batch(feats: list[torch.Tensor], pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``[T_i, F]`` tensors to ``x [T, B, F]`` and ``mask [T, B]`` (True on real frames)."""
    x = torch.nn.utils.rnn.pad_sequence(feats, padding_value=pad_value)
    lens = torch.tensor([f.shape[0] for f in feats])
    mask = torch.arange(x.shape[0])[:, None] < lens[None, :]
    return x, mask


class _Tensors:
    """Feature tensors a caller already holds (``[T_i, F]`` each), as a dataset for :func:`_forward`."""

    def __init__(self, feats: list[torch.Tensor]):
        self.feats, self.lengths = feats, [len(f) for f in feats]

    def piece(self, i: int, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.feats[i][start:end], torch.zeros(end - start, dtype=torch.long)


def _forward(model: torch.nn.Module, data: Any, batch_frames: int, desc: str, on_batch: Any) -> None:
    """Run ``model`` over whole utterances batched by length; ``on_batch(idx, x, mask, out)`` per batch.

    ``data``: a dataset with ``.lengths`` (an :class:`snnasr.dataset.UtteranceDataset`), read batch
    by batch (:func:`snnasr.batching.batch_loader`): only the batches in flight are in memory,
    however large the set; or a list of feature tensors.
    """
    from snnasr.batching import BucketBatchSampler, batch_loader, plan_batches

    if not hasattr(data, "lengths"):
        data = _Tensors(data)
    dev = next(model.parameters()).device
    model.eval()
    # Whole utterances (max_len = the longest: no cutting), shortest first, frame budget per batch.
    plan = plan_batches(data.lengths, max(data.lengths), batch_frames)
    loader = batch_loader(data, BucketBatchSampler(plan, drop_last=False), device=dev)
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not sys.stderr.isatty()):
            batch = batch.to(dev)
            on_batch(batch.utts, batch.x, batch.mask, model(batch.x, batch.mask))


def _set_labels(recipe_dir: Path, set_name: str, level: str, score: str, fold: np.ndarray) -> dict[str, np.ndarray]:
    """Score-level frame labels of a set (its own file where present, else folded from ``level``)."""
    from snnasr.kaldi.ark import read_vec_int_scp

    data_dir = recipe_dir / "data" / set_name
    scp = data_dir / f"labels_{level}.scp"
    if not scp.is_file():
        raise DataError(
            f"{scp}: the decoder estimates its priors, durations and phone LM from the training labels; "
            f"run snnasr features for set {set_name} (or set data.train_set)"
        )
    own = {u: np.asarray(y, dtype=np.int64) for u, y in read_vec_int_scp(scp)}
    return _references(data_dir, own, level, score, fold)


def _decoded_per(
    model: torch.nn.Module,
    cfg: Any,
    lang: Lang,
    recipe_dir: Path,
    set_name: str,
    level: str,
    score: str,
    folds: dict[str, np.ndarray],
    fold: torch.Tensor,
    log_posts: list[torch.Tensor],
    refs: dict[str, np.ndarray],
    batch_frames: int,
    min_dur: int,
) -> dict[str, Any]:
    """Decoded PER of this set: decoder estimated on the training set, tuned on the dev set."""
    train = _set_labels(recipe_dir, cfg.data.train_set, level, score, folds[score])
    loop = decodemod.PhoneLoop.estimate(list(train.values()), lang.num_classes(score), min_dur)
    silence = lang.silence_ids(score)

    def ref_seq(y: np.ndarray) -> list[int]:
        return collapse(y[y >= 0])

    dev_name = cfg.data.dev_set
    if dev_name == set_name:
        dev_posts, dev_refs = log_posts, [ref_seq(y) for y in refs.values()]
    else:
        from snnasr.dataset import UtteranceDataset

        dev_dir = recipe_dir / "data" / dev_name
        _check_features(dev_dir, dev_name)
        dev_data = UtteranceDataset(
            dev_dir, level=level, norm_vars=cfg.data.norm_vars, context=cfg.data.context, lang_dir=lang.dir
        )
        dev_labels = _references(dev_dir, _all_labels(dev_data), level, score, folds[score])
        dev_posts = [torch.empty(0)] * len(dev_data)

        def keep(idx: list[int], x: torch.Tensor, mask: torch.Tensor, out: Any) -> None:
            post = decodemod.fold_log_posteriors(out.logits, fold).cpu()
            for b, i in enumerate(idx):
                dev_posts[i] = post[: dev_data.lengths[i], b]

        _forward(model, dev_data, batch_frames, f"decode {dev_name}", keep)
        dev_refs = [ref_seq(dev_labels[u]) for u in dev_data.uttids]
    acwt, lmw, dev_per = decodemod.tune(loop, dev_posts, dev_refs, silence)
    hyps = loop.decode(log_posts, acwt, lmw)
    edits = decodemod.score([ref_seq(y) for y in refs.values()], hyps, silence)
    return {
        "level": score,
        **edits.as_result(),
        "decoder": "phone loop + bigram LM (snnasr.decode)",
        "min_dur": min_dur,
        "acwt": acwt,
        "lm_weight": lmw,
        "tuned_on": dev_name,
        "dev_per": dev_per,
        "silence_dropped": [s for s in lang.silence if s in lang.index(score)],
    }


def _all_labels(data: Any) -> dict[str, np.ndarray]:
    """Every utterance's frame labels (int64): what scoring and decoder tuning compare against."""
    return {u: data.labels(i) for i, u in enumerate(data.uttids)}


def config_key(cfg_dict: dict) -> str:
    """Hash of a run's config without its seed: runs sharing it are repeats (mean +- sd)."""
    rest = {k: v for k, v in cfg_dict.items() if k != "seed"}
    rest["train"] = {k: v for k, v in rest.get("train", {}).items() if k != "workers"}  # speed only
    return hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_evaluation(
    exp: str | Path,
    recipe_dir: str | Path,
    set_name: str = "test",
    report_ops: bool = False,
    energy: str = "45nm-fp32",
    device: str | None = None,
    ops_convention: str = "honest",
    encoder_ops: str = "counted",
    smooth_window: int = 1,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    min_dur: int = 3,
    sparse: bool = False,
) -> dict[str, Any]:
    """Evaluate ``exp`` on ``data/<set_name>``; write and return the results dict.

    ``sparse``: run the spiking layers event-driven (:mod:`snnasr.sparse`) and report the MACs
    they executed.  ``smooth_window`` (odd, 1 = off) is the majority filter applied to frame
    decisions before the collapse PER; ``min_dur`` the decoder's minimum phone duration in frames.  Raises DataError (one line) for a run without model.pt, a set without features or
    labels, or a set whose labels differ from the model's.
    """
    recipe_dir = Path(recipe_dir)
    opsmod.check_convention(ops_convention)
    opsmod.encoder_ops(0, 0, encoder_ops)  # validates the encoder convention before any work
    opsmod.energy_pj(0.0, 0.0, energy)  # validates the preset name before any work
    if smooth_window < 1 or smooth_window % 2 == 0:
        raise ConfigError(f"smoothing window {smooth_window}: must be an odd number of frames (1 = off)")
    if min_dur < 1:
        raise ConfigError(f"minimum duration {min_dur}: must be at least 1 frame")
    exp_dir, data_dir = exp_and_set(exp, recipe_dir, set_name)
    lang = load_lang(recipe_dir / "data" / "lang")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"

    from snnasr.checkpoint import load_model, model_stamp

    model, cfg, meta = load_model(exp_dir, device)
    stamp = model_stamp(exp_dir)
    level = meta["level"]
    n_out = int(meta.get("n_out", model.n_out))
    utterance = getattr(cfg, "task", "frame") == "utterance"
    if utterance:
        _check_utterance_labels(data_dir, set_name, level, lang, n_out)
    else:
        _check_labels(data_dir, set_name, level, lang, n_out)

    from snnasr.dataset import UtteranceDataset

    data = UtteranceDataset(
        data_dir,
        level=level,
        norm_vars=cfg.data.norm_vars,
        context=cfg.data.context,
        lang_dir=lang.dir,
        task="utterance" if utterance else "frame",
    )
    if data.num_classes != n_out:
        raise DataError(
            f"{data_dir}: {data.num_classes} {level} classes but the model outputs {n_out}; mismatched label sets"
        )
    if data.dim != int(meta["n_in"]):
        raise DataError(
            f"{data_dir}/feats.scp: {data.dim}-dim features but the model expects {meta['n_in']}; "
            f"compute features with the options used for training"
        )

    fingerprint = _check_trained_on(exp_dir, data_dir, meta.get("data"), data)

    if not len(data):
        raise DataError(f"{data_dir}: no utterances to evaluate")
    specs = cast(Any, model).layer_specs()
    stats = ActivationStats(len(specs))
    directions = [s.directions for s in specs]
    tallies: list[Any] = []
    if sparse:
        from snnasr.sparse import event_driven

        model, tallies = event_driven(model)
    set_tallies: list[Any] = []  # the tallies after this set's last batch (the dev decode runs later)

    def add_stats(x: torch.Tensor, mask: torch.Tensor, out: Any) -> None:
        set_tallies[:] = [dataclasses.replace(t) for t in tallies]
        stats.update(
            x,
            mask,
            out.layer_inputs,
            out.layer_outputs,
            step_mask=out.step_mask,
            readout_input=out.readout_input,
            directions=directions,
        )

    if utterance:
        from snnasr.train import utterance_task

        scores = _score_utterances(model, utterance_task(cfg), data, data.classes, batch_frames, set_name, add_stats)
    else:
        scores = _score_frames(
            model,
            cfg,
            lang,
            recipe_dir,
            data_dir,
            set_name,
            level,
            data,
            batch_frames,
            smooth_window,
            min_dur,
            add_stats,
        )
    from snnasr.models.registry import arch_label

    cfg_dict = dataclasses.asdict(cfg)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lstm_params = opsmod.rnn_params("lstm", specs, n_out)
    results: dict[str, Any] = {
        "run": exp_dir.name,
        "exp_dir": str(exp_dir),
        "arch": model.arch,
        "arch_label": arch_label(cfg.model),
        "set": set_name,
        "task": "utterance" if utterance else "frame",
        "label_level": level,
        "utterances": len(data),
        "frames": stats.frames,
        **scores,
        "zero_frac": stats.zero_fraction(),
        "params": params,
        "params_lstm_ref": lstm_params,
        "params_vs_lstm": params / lstm_params,
        "params_gru_ref": opsmod.rnn_params("gru", specs, n_out),
        "seed": cfg_dict.get("seed"),
        "config_key": config_key(cfg_dict),
        "config": cfg_dict,
        "model": stamp,
        "data": fingerprint,
        "trained_on": (meta.get("data") or {}).get("train"),
    }
    out_dir = exp_dir / f"eval_{set_name}"
    suffix = ("" if ops_convention == "honest" else f"_{ops_convention}") + (
        "" if encoder_ops == "counted" else f"_encoder-{encoder_ops}"
    )
    results["results_file"] = f"results{suffix}.json"
    if report_ops:
        enc_width = int(meta["n_in"]) if getattr(model, "encoder", None) is not None else 0
        details = count_ops(
            stats,
            specs,
            n_out,
            ops_convention,
            energy,
            enc_width,
            encoder_ops,
            readout_elementwise=int(getattr(model.readout, "elementwise_ops", 0)),
        )
        results["ops"] = {k: v for k, v in details.items() if k not in ("layers", "readout", "reference")}
        for kind in ("lstm", "gru"):
            for key in ("total_per_frame", "energy_pj_per_frame"):
                results["ops"][f"{kind}_{key}"] = details["reference"][kind][key]
        write_text(out_dir / f"ops{suffix}.json", json.dumps(details, indent=2) + "\n")
    if sparse:
        from snnasr.sparse import executed_ops

        results["sparse"] = executed_ops(set_tallies, specs, details if report_ops else None, stats.frames)
    if utterance:
        from snnasr.utterance import plot_confusion

        title = f"{exp_dir.name} on {set_name}: {100 * results['utterance_accuracy']:.2f}% of {len(data)}"
        plot_confusion(np.array(results["confusion"]["matrix"]), data.classes, title, out_dir / "confusion.png")
    write_text(out_dir / results["results_file"], json.dumps(results, indent=2) + "\n")
    _print_summary(results)
    return results


def _score_frames(
    model: torch.nn.Module,
    cfg: Any,
    lang: Lang,
    recipe_dir: Path,
    data_dir: Path,
    set_name: str,
    level: str,
    data: Any,
    batch_frames: int,
    smooth_window: int,
    min_dur: int,
    add_stats: Any,
) -> dict[str, Any]:
    """``task: frame``: frame accuracy at every level the training level folds into, decoded and
    collapse PER at the score level."""
    folds = level_folds(lang, level)
    levels = list(folds)
    score = lang.score if lang.score in folds else level
    train_labels = _all_labels(data)
    refs = {lv: _references(data_dir, train_labels, level, lv, folds[lv]) for lv in levels}
    silence = lang.silence_ids(score)

    acc = {lv: [0, 0] for lv in levels}
    edits = EditCounts()
    n_score = lang.num_classes(score)
    fold = decodemod.fold_matrix(folds[score], n_score)
    log_posts: list[torch.Tensor] = [torch.empty(0)] * len(data)

    def on_batch(idx: list[int], x: torch.Tensor, mask: torch.Tensor, out: Any) -> None:
        nonlocal edits
        add_stats(x, mask, out)
        pred = out.logits.argmax(-1).cpu().numpy()
        post = decodemod.fold_log_posteriors(out.logits, fold).cpu()
        for b, i in enumerate(idx):
            uttid, n = data.uttids[i], data.lengths[i]
            log_posts[i] = post[:n, b]
            p = pred[:n, b]
            for lv in levels:
                c, n = frame_accuracy(folds[lv][p], refs[lv][uttid])
                acc[lv][0] += c
                acc[lv][1] += n
            hyp = phone_sequence(p, folds[score], silence, smooth_window)
            ref = phone_sequence(refs[score][uttid], None, silence)
            edits = edits + edit_distance(ref, hyp)

    _forward(model, data, batch_frames, f"eval {set_name}", on_batch)
    decoded = _decoded_per(
        model, cfg, lang, recipe_dir, set_name, level, score, folds, fold, log_posts, refs[score], batch_frames, min_dur
    )

    return {
        "score_level": score,
        "accuracy": {lv: c / n if n else float("nan") for lv, (c, n) in acc.items()},
        "frame_accuracy": acc[score][0] / acc[score][1] if acc[score][1] else float("nan"),
        "per": decoded,
        "collapse_per": {
            "level": score,
            **edits.as_result(),
            "smooth_window": smooth_window,
            "silence_dropped": [s for s in lang.silence if s in lang.index(score)],
        },
    }


def _score_utterances(
    model: torch.nn.Module, task: Any, data: Any, classes: list[str], batch_frames: int, set_name: str, add_stats: Any
) -> dict[str, Any]:
    """``task: utterance``: accuracy per utterance of the pooled readout and the confusion matrix."""
    from snnasr.utterance import confusion_matrix

    refs: list[int] = []
    hyps: list[int] = []

    def on_batch(idx: list[int], x: torch.Tensor, mask: torch.Tensor, out: Any) -> None:
        add_stats(x, mask, out)
        hyps.extend(task.scores(out.logits, mask).argmax(-1).tolist())
        refs.extend(int(data.labels(i)[0]) for i in idx)

    _forward(model, data, batch_frames, f"eval {set_name}", on_batch)
    matrix = confusion_matrix(refs, hyps, len(classes))
    correct, total = int(np.trace(matrix)), int(matrix.sum())
    per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
    accuracy = correct / total if total else float("nan")
    return {
        "score_level": None,
        "utterance_accuracy": accuracy,
        "accuracy": {"utterance": accuracy},
        "frame_accuracy": None,
        "pool": {"pool": task.pool, "burn_in": task.burn_in},
        "confusion": {
            "classes": classes,
            "matrix": matrix.tolist(),
            "rows": "reference",
            "per_class_accuracy": dict(zip(classes, per_class.tolist())),
        },
    }


def _print_summary(results: dict[str, Any]) -> None:
    """Paper-style table: this run beside every other run of the recipe evaluated the same way."""
    from snnasr.report import (
        columns_for,
        current_results,
        group_rows,
        load_results,
        markdown_table,
        result_row,
        table_caption,
        table_key,
    )

    siblings = Path(results["exp_dir"]).parent.glob(f"*/eval_{results['set']}/{results['results_file']}")
    try:
        same = [r for r in current_results(load_results(sorted(siblings))) if table_key(r) == table_key(results)]
    except DataError as e:  # a stale sibling must not hide this run's numbers
        click.echo(f"note: other runs not shown ({e})", err=True)
        same = []
    rows = [result_row(*runs, label=label) for label, runs in group_rows(same)] or [result_row(results)]
    ops = results.get("ops")
    if ops:
        for kind in ("lstm", "gru"):
            total = ops[f"{kind}_total_per_frame"]
            rows.append(
                {
                    "Architecture": f"{kind.upper()} (analytic, same widths)",
                    "Norm. ops": f"{total / ops['lstm_total_per_frame']:.3f}",
                    "MACs/frame": f"{total:,.0f}",
                    "ACs/frame": "0",
                    "Params": f"{results[f'params_{kind}_ref']:,}",
                    "Energy/frame nJ (est.)": f"{ops[f'{kind}_energy_pj_per_frame'] / 1000:.3g}",
                }
            )
    click.echo(table_caption(results) + "\n")
    click.echo(markdown_table(rows, columns_for(results)))
    if results.get("task") == "utterance":
        conf = results["confusion"]
        per_class = ", ".join(f"{c} {100 * a:.0f}" for c, a in conf["per_class_accuracy"].items())
        click.echo(
            f"utterance accuracy ({results['label_level']}, pool {results['pool']['pool']}): "
            f"{100 * results['utterance_accuracy']:.2f}% of {results['utterances']}; per class (%): {per_class}"
        )
        click.echo(_confusion_text(conf["classes"], conf["matrix"]))
    else:
        per, cper = results["per"], results["collapse_per"]
        acc = ", ".join(f"{lv} {100 * a:.2f}%" for lv, a in results["accuracy"].items())
        click.echo(
            f"frame accuracy (silence frames included): {acc}; decoded PER ({per['level']}): {100 * per['per']:.2f}% "
            f"(S {per['substitutions']}, D {per['deletions']}, I {per['insertions']}, N {per['ref_phones']}; "
            f"acwt {per['acwt']}, LM weight {per['lm_weight']}, min. duration {per['min_dur']} frames, "
            f"tuned on {per['tuned_on']}: {100 * per['dev_per']:.2f}%); collapse PER: {100 * cper['per']:.2f}%"
        )
    if "sparse" in results:
        sp = results["sparse"]
        counted = f", counted events {sp['counted_mac_per_frame']:,.0f}" if "counted_mac_per_frame" in sp else ""
        click.echo(
            f"event-driven: synaptic + recurrent MACs per frame executed {sp['executed_mac_per_frame']:,.0f}{counted}, "
            f"dense GEMMs {sp['dense_mac_per_frame']:,.0f} ({sp['executed_mac_per_frame'] / sp['dense_mac_per_frame']:.3f}x)"
        )
    zeros = ", ".join(f"{100 * z:.1f}" for z in results["zero_frac"]["layers"])
    click.echo(f"zero outputs per hidden layer (%): {zeros}; overall {100 * results['zero_frac']['overall']:.1f}")
    if ops:
        click.echo(f"MAC/AC: {ops['mac_ac_rule']}. Energy: {ops['energy_note']}.")
    if not results["model"]["finished"]:
        click.echo(
            f"note: {results['run']} has not finished training (best epoch {results['model']['epoch']} so far); "
            f"snnasr report marks it unfinished",
            err=True,
        )
    click.echo(f"wrote {Path(results['exp_dir']) / ('eval_' + results['set'])}/{results['results_file']}")


def _confusion_text(classes: list[str], matrix: list[list[int]]) -> str:
    """The confusion matrix as aligned text: rows reference, columns hypothesis."""
    width = max(max(len(c) for c in classes), max(len(str(v)) for row in matrix for v in row)) + 1
    lines = [
        "confusion (rows: reference, columns: hypothesis):",
        " " * width + "".join(c.rjust(width) for c in classes),
    ]
    for c, row in zip(classes, matrix):
        lines.append(c.rjust(width) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)
