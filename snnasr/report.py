"""``snnasr report``: collect ``exp/*/eval_*/results.json`` into report.md/.csv and plots.

Outputs in ``<out>`` (default ``<recipe>/exp``): ``report.md`` (the Markdown tables README
pastes), ``report.csv`` (one row per run and set), ``accuracy_vs_ops.png``,
``zeros_per_layer.png`` and ``training_curves.png`` (dev accuracy per epoch from each run's
``metrics.jsonl``).

Numbers are only comparable on the same frames and labels, so results are split into one table
per (set, training label level, score level, ops convention, energy preset); each table starts
with a line naming them.  Within a table, runs of the same architecture whose configs differ
only in the seed (same ``config_key``) are one row with mean +- sd (sample sd) over the seeds;
two such runs with the same seed are refused (they are not repeats).

Bookkeeping: a result whose model has since been replaced (retrained, resumed) is left out with
a warning (:func:`current_results`); one of a model that had not finished training is marked
"unfinished" in its row and below the tables.  ``eval --ops-convention official`` writes
``results_official.json`` (``--encoder-ops free``: ``results_encoder-free.json``), which the
report reads only when given it explicitly.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from snnasr.io import DataError, atomic_write, write_text

COLUMNS = [
    "Architecture",
    "Runs",
    "Frame acc. %",
    "PER %",
    "Collapse PER %",
    "Zeros %",
    "Norm. ops",
    "Params",
    "MACs/frame",
    "ACs/frame",
    "Energy/frame nJ (est.)",
]
# task: utterance tables: accuracy per utterance instead of frame accuracy and PER.
UTTERANCE_COLUMNS = ["Architecture", "Runs", "Utt. acc. %"] + [
    c for c in COLUMNS[2:] if c not in ("Frame acc. %", "PER %", "Collapse PER %")
]


def columns_for(r: dict) -> list[str]:
    return UTTERANCE_COLUMNS if r.get("task") == "utterance" else COLUMNS


def accuracy_of(r: dict) -> float | None:
    """The headline accuracy of a result: per utterance for ``task: utterance``, else per frame."""
    return r.get("utterance_accuracy") if r.get("task") == "utterance" else r.get("frame_accuracy")


def arch_order() -> tuple[str, ...]:
    """Architectures in the registry's order (the order tables list them)."""
    from snnasr.models.registry import arch_names

    return arch_names()


# Column -> (value from one results dict, format of one number).
_METRICS: dict[str, tuple[Callable[[dict], float | None], str]] = {
    "Frame acc. %": (lambda r: _pct(r.get("frame_accuracy")), "{:.2f}"),
    "Utt. acc. %": (lambda r: _pct(r.get("utterance_accuracy")), "{:.2f}"),
    "PER %": (lambda r: _pct(r.get("per", {}).get("per")), "{:.2f}"),
    "Collapse PER %": (lambda r: _pct(r.get("collapse_per", {}).get("per")), "{:.2f}"),
    "Zeros %": (lambda r: _pct(r.get("zero_frac", {}).get("overall")), "{:.1f}"),
    "Norm. ops": (lambda r: r.get("ops", {}).get("normalised_vs_lstm"), "{:.3f}"),
    "Params": (lambda r: r.get("params"), "{:,.0f}"),
    "MACs/frame": (lambda r: r.get("ops", {}).get("mac_per_frame"), "{:,.0f}"),
    "ACs/frame": (lambda r: r.get("ops", {}).get("ac_per_frame"), "{:,.0f}"),
    "Energy/frame nJ (est.)": (lambda r: _scale(r.get("ops", {}).get("energy_pj_per_frame"), 1e-3), "{:.3g}"),
}


def _pct(v: float | None) -> float | None:
    return _scale(v, 100.0)


def _scale(v: float | None, k: float) -> float | None:
    return None if v is None else v * k


def _fmt(values: list[float | None], fmt: str) -> str:
    """One value (also when all are equal), or mean +- sample sd; missing values (or NaN) give an em dash."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "—"
    mean = sum(vals) / len(vals)
    if len(set(vals)) == 1:
        return fmt.format(mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{fmt.format(mean)} ± {fmt.format(sd)}"


def result_row(*results: dict, label: str | None = None) -> dict[str, str]:
    """Table cells for one run, or mean ± sd over several runs of one configuration."""
    row = {
        "Architecture": label or results[0].get("arch_label", results[0].get("arch", "?")),
        "Runs": str(len(results)),
    }
    for col, (get, fmt) in _METRICS.items():
        row[col] = _fmt([get(r) for r in results], fmt)
    return row


def markdown_table(rows: list[dict[str, str]], columns: list[str] | None = None) -> str:
    """GitHub Markdown table over ``columns`` (default :data:`COLUMNS`); missing cells are an em dash."""
    columns = columns or COLUMNS
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(row.get(c, "—") for c in columns) + " |")
    return "\n".join(lines)


def table_key(r: dict) -> tuple[str, ...]:
    ops = r.get("ops", {})
    per = r.get("per", {})
    return (
        str(r.get("set")),
        str(r.get("task", "frame")),
        str(r.get("label_level")),
        str(r.get("score_level")),
        str(ops.get("convention", "—")),
        str(ops.get("energy_preset", "—")),
        # A model without an input encoder (LSTM, GRU) fits the default convention's table.
        str({"none": "counted"}.get(ops.get("encoder"), ops.get("encoder", "—"))),
        str(per.get("min_dur", "—")),
    )


def table_caption(r: dict) -> str:
    """The line that says exactly what each number of a table counts."""
    set_name, task, level, score, convention, energy, encoder, min_dur = table_key(r)
    per = r.get("per", {})
    if task == "utterance":
        text = (
            f"Set `{set_name}`; one `{level}` label per utterance. Utt. acc.: utterances whose pooled "
            f"readout (each run's `utterance.pool` over its valid frames) picks their class. "
        )
    else:
        text = (
            f"Set `{set_name}`; trained on `{level}` labels, scored on `{score}`. "
            f"Frame acc.: frames whose argmax class, folded to `{score}`, equals the frame label, over "
            f"every valid frame, silence frames included. "
        )
        if "acwt" in per:
            text += (
                f"PER: (S + D + I) / N of the decoded {score} sequence (phone loop with a {min_dur}-frame "
                f"minimum duration, bigram LM and priors from the training labels, acoustic scale and LM "
                f"weight tuned on `{per.get('tuned_on')}`), silence dropped from reference and hypothesis. "
            )
        text += "Collapse PER: the same on the frame argmax with repeats collapsed (every flicker an insertion). "
    text += "Zeros: exact zeros among the hidden layers' outputs over valid frames."
    if convention != "—":
        enc = {
            "counted": "the SNNs' sigma-delta input encoder counted",
            "free": "the SNNs' input encoder not counted (as the official code)",
        }.get(encoder, "input encoder not recorded")
        text += (
            f" Ops per frame counted from this set's activations, padded frames excluded, "
            f"{convention} convention, {enc}, normalised to an LSTM of the same widths on dense features; "
            f"{r['ops'].get('mac_ac_rule', '')}. Energy: {energy}, "
            f"{r['ops'].get('energy_note', 'estimate')}."
        )
    else:
        text += " No op counts (run `snnasr eval --report-ops`)."
    return text


def _find_results(recipe_dir: Path, runs: Iterable[str | os.PathLike]) -> list[Path]:
    runs = list(runs)
    if not runs:
        found = sorted((recipe_dir / "exp").glob("*/eval_*/results.json"))
        if not found:
            raise DataError(f"{recipe_dir / 'exp'}: no */eval_*/results.json; run snnasr eval first")
        return found
    out: list[Path] = []
    for run in runs:
        p = Path(run)
        if not p.exists() and (recipe_dir / p).exists():
            p = recipe_dir / p
        if p.is_file():
            found = [p]
        elif (p / "results.json").is_file():
            found = [p / "results.json"]
        else:
            found = sorted(p.glob("eval_*/results.json"))
        if not found:
            raise DataError(f"{run}: no eval_*/results.json; run snnasr eval {run} first")
        out.extend(found)
    return out


def load_results(paths: list[Path]) -> list[dict]:
    """Read results files; each gets ``_path`` and ``_run_dir`` (its exp/<run>, for curves)."""
    out = []
    for path in paths:
        try:
            r = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: unreadable results ({e}); re-run snnasr eval") from None
        missing = [k for k in ("arch", "set", "label_level", "frame_accuracy") if k not in r]
        if missing:
            raise DataError(f"{path}: missing {', '.join(missing)}; re-run snnasr eval with this version")
        r["_path"] = str(path)
        r["_run_dir"] = str(path.parent.parent)
        r.setdefault("run", path.parent.parent.name)
        out.append(r)
    return out


def current_results(results: list[dict]) -> list[dict]:
    """Results whose model is still the run's ``model.pt``; stale ones are left out, one warning each.

    A result records its model's content hash (``model.sha``, see
    :func:`snnasr.checkpoint.model_stamp`): a model retrained or resumed since the evaluation
    makes the numbers describe a model that no longer exists.  Results without the record
    (older snnasr) are kept.
    """
    import hashlib

    kept = []
    for r in results:
        sha = (r.get("model") or {}).get("sha")
        model = Path(r["_run_dir"]) / "model.pt"
        if sha is not None:
            now = hashlib.sha256(model.read_bytes()).hexdigest()[:16] if model.is_file() else None
            if now != sha:
                click.echo(
                    f"snnasr report: warning: {r['_path']}: scored a model.pt that has since been "
                    f"{'replaced' if now else 'removed'}; left out (re-run snnasr eval {r['_run_dir']} --set {r['set']})",
                    err=True,
                )
                continue
        kept.append(r)
    if results and not kept:
        raise DataError("every result is stale (see the warnings above); re-run snnasr eval for each run")
    return kept


def _unfinished(r: dict) -> bool:
    return (r.get("model") or {}).get("finished") is False


def _arch_rank(r: dict) -> tuple[int, str]:
    arch, order = str(r.get("arch")), arch_order()
    return (order.index(arch) if arch in order else len(order), str(r.get("arch_label", arch)))


def group_rows(results: list[dict]) -> list[tuple[str, list[dict]]]:
    """Rows of one table: (label, runs) per (architecture, config without seed)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[(str(r.get("arch_label", r["arch"])), str(r.get("config_key", r["run"])))].append(r)
    per_label: dict[str, int] = defaultdict(int)
    for label, _ in groups:
        per_label[label] += 1
    rows = []
    for (label, _), runs in sorted(groups.items(), key=lambda kv: _arch_rank(kv[1][0])):
        _check_distinct_seeds(runs)
        if per_label[label] > 1:
            label = f"{label} [{', '.join(sorted(r['run'] for r in runs))}]"
        if any(_unfinished(r) for r in runs):
            label += " (unfinished: " + ", ".join(sorted(r["run"] for r in runs if _unfinished(r))) + ")"
        rows.append((label, runs))
    return rows


def _check_distinct_seeds(runs: list[dict]) -> None:
    """Runs averaged into one row must be independent repeats: one per seed."""
    by_seed: dict[Any, str] = {}
    for r in runs:
        seed = r.get("seed")
        if seed in by_seed:
            raise DataError(
                f"{by_seed[seed]} and {r['_path']}: same configuration and seed {seed}, so not independent "
                f"repeats; remove one (or give the runs to report explicitly), or retrain with another seed="
            )
        by_seed[seed] = r["_path"]


def render_markdown(results: list[dict], plots: list[str]) -> str:
    tables: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        tables[table_key(r)].append(r)
    parts = ["# snnasr results", ""]
    if len(tables) > 1:
        parts += [
            "Results use different sets, label levels or counting rules: one table each; "
            "numbers are comparable only within a table.",
            "",
        ]
    for key in sorted(tables):
        rs = tables[key]
        parts += [
            table_caption(rs[0]),
            "",
            markdown_table([result_row(*runs, label=label) for label, runs in group_rows(rs)], columns_for(rs[0])),
            "",
        ]
    parts += [
        "Runs: " + ", ".join(sorted({f"`{r['run']}`" for r in results})) + ". Several runs in a row: "
        "mean ± sample sd over seeds (configs otherwise identical).",
        "",
    ]
    unfinished = sorted({r["run"] for r in results if _unfinished(r)})
    if unfinished:
        parts += [
            "Unfinished (evaluated before training ran all its epochs; numbers will change): "
            + ", ".join(f"`{u}`" for u in unfinished)
            + ".",
            "",
        ]
    parts += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(parts) + "\n"


def render_csv(results: list[dict]) -> str:
    fields = [
        "run",
        "arch",
        "arch_label",
        "set",
        "label_level",
        "score_level",
        "seed",
        "config_key",
        "frames",
        "task",
        "frame_accuracy",
        "utterance_accuracy",
        "per",
        "substitutions",
        "deletions",
        "insertions",
        "ref_phones",
        "zero_frac",
        "zero_frac_layers",
        "params",
        "mac_per_frame",
        "ac_per_frame",
        "total_per_frame",
        "normalised_vs_lstm",
        "energy_pj_per_frame",
        "ops_convention",
        "energy_preset",
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in results:
        per, ops, zf = r.get("per", {}), r.get("ops", {}), r.get("zero_frac", {})
        row = {
            k: r.get(k, "")
            for k in (
                "run",
                "arch",
                "arch_label",
                "set",
                "label_level",
                "score_level",
                "seed",
                "config_key",
                "frames",
                "task",
                "frame_accuracy",
                "utterance_accuracy",
                "params",
            )
        }
        row.update({k: per.get(k, "") for k in ("per", "substitutions", "deletions", "insertions", "ref_phones")})
        row.update(
            {
                k: ops.get(k, "")
                for k in (
                    "mac_per_frame",
                    "ac_per_frame",
                    "total_per_frame",
                    "normalised_vs_lstm",
                    "energy_pj_per_frame",
                )
            }
        )
        row["zero_frac"] = zf.get("overall", "")
        row["zero_frac_layers"] = ";".join(f"{v:.6g}" for v in zf.get("layers", []))
        row["ops_convention"] = ops.get("convention", "")
        row["energy_preset"] = ops.get("energy_preset", "")
        w.writerow(row)
    return buf.getvalue()


def read_curves(run_dir: Path) -> list[tuple[int, float]]:
    """(epoch, dev accuracy) from metrics.jsonl; lines without both keys or unparsable are skipped."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("epoch") is not None and rec.get("dev_acc") is not None:
            out.append((int(rec["epoch"]), float(rec["dev_acc"])))
    return out


def _save(fig: Any, ax: Any, title: str, path: Path) -> Path:
    """Title, write atomically, and free the figure (pyplot keeps every open figure alive)."""
    import matplotlib.pyplot as plt

    ax.set_title(title)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def make_plots(results: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        a: f"C{i}"
        for i, a in enumerate(
            sorted(
                {str(r.get("arch_label", r["arch"])) for r in results},
                key=lambda a: (a.split()[0] not in arch_order(), a),
            )
        )
    }
    paths = []

    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [r for r in results if r.get("ops", {}).get("normalised_vs_lstm") and accuracy_of(r) is not None]
    if pts:
        for r in pts:
            label = str(r.get("arch_label", r["arch"]))
            acc = 100 * accuracy_of(r)  # type: ignore[operator]
            ax.scatter(r["ops"]["normalised_vs_lstm"], acc, color=colors[label], label=label)
            ax.annotate(
                f"{r['run']} ({r['set']})",
                (r["ops"]["normalised_vs_lstm"], acc),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("ops per frame / LSTM of same widths (log)")
        ax.set_ylabel("accuracy % (per frame at the score level, or per utterance)")
        ax.grid(True, which="both", alpha=0.3)
    else:
        _no_data(ax, "no op counts: run snnasr eval --report-ops")
    paths.append(_save(fig, ax, "Accuracy vs normalised operations", out_dir / "accuracy_vs_ops.png"))

    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(results) + 2), 4))
    layered = [r for r in results if r.get("zero_frac", {}).get("layers")]
    if layered:
        n_layers = max(len(r["zero_frac"]["layers"]) for r in layered)
        width = 0.8 / n_layers
        for li in range(n_layers):
            xs = [i + li * width for i in range(len(layered))]
            ys = [100 * r["zero_frac"]["layers"][li] if li < len(r["zero_frac"]["layers"]) else 0 for r in layered]
            ax.bar(xs, ys, width=width, label=f"layer {li + 1}")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(layered))])
        ax.set_xticklabels([f"{r['run']}\n{r['set']}" for r in layered], fontsize=7)
        ax.set_ylabel("% exact zeros among outputs")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "no per-layer zero fractions")
    paths.append(_save(fig, ax, "Zero outputs per hidden layer", out_dir / "zeros_per_layer.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    seen = set()
    for r in results:
        if r["_run_dir"] in seen:
            continue
        seen.add(r["_run_dir"])
        curve = read_curves(Path(r["_run_dir"]))
        if curve:
            ax.plot([e for e, _ in curve], [100 * a for _, a in curve], marker=".", label=r["run"])
    if ax.lines:
        ax.set_xlabel("epoch")
        ax.set_ylabel("dev accuracy % (training level: frames or utterances)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "no metrics.jsonl with epoch and dev_acc")
    paths.append(_save(fig, ax, "Training curves", out_dir / "training_curves.png"))
    return paths


def build_report(
    recipe_dir: str | os.PathLike,
    runs: Iterable[str | os.PathLike] | None = None,
    out_dir: str | os.PathLike | None = None,
) -> Path:
    """Write report.md, report.csv and the plots; return the report.md path.

    ``runs``: exp/<run> dirs, eval_<set> dirs or results.json files (default: every
    ``<recipe>/exp/*/eval_*/results.json``).  Raises DataError when nothing is found.
    """
    recipe_dir = Path(recipe_dir)
    out = Path(out_dir) if out_dir is not None else recipe_dir / "exp"
    results = current_results(load_results(_find_results(recipe_dir, runs or [])))
    out.mkdir(parents=True, exist_ok=True)
    plots = make_plots(results, out)
    write_text(out / "report.csv", render_csv(results))
    md = out / "report.md"
    write_text(md, render_markdown(results, [str(p) for p in plots]))
    click.echo(f"wrote {md}, {out / 'report.csv'} and {len(plots)} plots ({len(results)} results)")
    return md
