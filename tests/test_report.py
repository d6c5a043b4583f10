"""report built from fake results.json / metrics.jsonl files."""

import csv
import json

import pytest
from click.testing import CliRunner

from snnasr.cli import cli
from snnasr.io import DataError
from snnasr.report import build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_result(run, arch, acc, seed=1, key="cfgA", level="phone48", set_name="test", ops=True):
    r = {
        "run": run,
        "arch": arch,
        "arch_label": arch,
        "set": set_name,
        "label_level": level,
        "score_level": "phone39",
        "frames": 1000,
        "seed": seed,
        "config_key": key,
        "accuracy": {level: acc - 0.05, "phone39": acc},
        "frame_accuracy": acc,
        "per": {
            "level": "phone39",
            "per": 1 - acc,
            "substitutions": 3,
            "deletions": 2,
            "insertions": 1,
            "ref_phones": 20,
        },
        "zero_frac": {"layers": [0.8, 0.9], "overall": 0.85},
        "params": 1000,
    }
    if ops:
        r["ops"] = {
            "convention": "honest",
            "energy_preset": "45nm-fp32",
            "normalised_vs_lstm": 0.1,
            "mac_per_frame": 1000.0,
            "ac_per_frame": 500.0,
            "total_per_frame": 1500.0,
            "energy_pj_per_frame": 5050.0,
            "mac_ac_rule": "AC = binary",
            "energy_note": "estimate",
        }
    return r


def write_run(recipe, result, curve=True):
    run_dir = recipe / "exp" / result["run"]
    (run_dir / f"eval_{result['set']}").mkdir(parents=True)
    (run_dir / f"eval_{result['set']}" / "results.json").write_text(json.dumps(result))
    if curve:
        lines = [
            {"epoch": e, "loss": 1.0 / (e + 1), "dev_acc": 0.5 + 0.05 * e, "zero_frac": [0.8, 0.9]} for e in range(4)
        ]
        lines.insert(1, {"epoch": 9})  # no dev_acc: skipped, not an error
        (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n{truncated")
    return run_dir


def table_lines(md):
    return [line for line in md.splitlines() if line.startswith("| ")]


def test_report_mean_sd_over_seeds_and_plots(tmp_path):
    for seed, acc in zip((1, 2, 3), (0.70, 0.72, 0.74)):
        write_run(tmp_path, fake_result(f"lstm_s{seed}", "lstm", acc, seed=seed))
    write_run(tmp_path, fake_result("proposed", "proposed", 0.69), curve=False)
    md_path = build_report(tmp_path)
    md = md_path.read_text()
    rows = table_lines(md)
    assert rows[0].startswith("| Architecture")
    lstm = next(r for r in rows if r.startswith("| lstm"))
    # mean 72.00, sample sd 2.00 over the three seeds; one row for the three runs.
    assert "72.00 ± 2.00" in lstm and "| 3 |" in lstm
    assert sum(r.startswith("| lstm") for r in rows) == 1
    proposed = next(r for r in rows if r.startswith("| proposed"))
    assert "69.00" in proposed and "±" not in proposed.split("|")[3]
    assert "Set `test`" in md and "`phone48`" in md and "`phone39`" in md and "honest convention" in md
    for name in ("accuracy_vs_ops.png", "zeros_per_layer.png", "training_curves.png"):
        data = (tmp_path / "exp" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
        assert f"]({name})" in md
    with open(tmp_path / "exp" / "report.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert sorted(r["run"] for r in csv_rows) == ["lstm_s1", "lstm_s2", "lstm_s3", "proposed"]
    assert {r["zero_frac_layers"] for r in csv_rows} == {"0.8;0.9"}


def test_different_configs_of_one_arch_stay_apart(tmp_path):
    write_run(tmp_path, fake_result("lstm_small", "lstm", 0.6, key="small"))
    write_run(tmp_path, fake_result("lstm_big", "lstm", 0.7, key="big"))
    rows = table_lines(build_report(tmp_path, out_dir=tmp_path / "out").read_text())
    lstm_rows = [r for r in rows if r.startswith("| lstm")]
    assert len(lstm_rows) == 2 and any("lstm_small" in r for r in lstm_rows)
    assert (tmp_path / "out" / "report.csv").is_file()


def test_mismatched_label_sets_get_separate_tables(tmp_path):
    write_run(tmp_path, fake_result("lstm", "lstm", 0.7))
    write_run(tmp_path, fake_result("lstm61", "lstm", 0.6, level="phone61"))
    write_run(tmp_path, fake_result("lstm_dev", "lstm", 0.8, set_name="dev"))
    md = build_report(tmp_path).read_text()
    assert md.count("| Architecture") == 3
    assert "one table each" in md
    assert "trained on `phone61`" in md and "Set `dev`" in md


def test_explicit_runs_and_errors(tmp_path):
    write_run(tmp_path, fake_result("a", "gru", 0.7))
    write_run(tmp_path, fake_result("b", "lif", 0.5, ops=False))
    md = build_report(tmp_path, runs=[tmp_path / "exp" / "a"]).read_text()
    assert "gru" in md and "lif" not in md
    # A run without op counts: its ops cells are dashes, and the caption says why.
    md = build_report(tmp_path, runs=["exp/b"]).read_text()
    assert "--report-ops" in md and "| — |" in md
    with pytest.raises(DataError, match="run snnasr eval"):
        build_report(tmp_path, runs=[tmp_path / "exp" / "nothing"])
    (tmp_path / "exp" / "a" / "eval_test" / "results.json").write_text("{not json")
    with pytest.raises(DataError, match="results.json"):
        build_report(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["report", "-d", str(empty)])
    assert result.exit_code == 1 and isinstance(result.exception, DataError)


def test_lstm_without_encoder_shares_the_table_of_snns_with_a_counted_encoder():
    from snnasr.report import table_caption, table_key

    lstm, snn = fake_result("l", "lstm", 0.8), fake_result("p", "proposed", 0.78)
    lstm["ops"]["encoder"], snn["ops"]["encoder"] = "none", "counted"
    assert table_key(lstm) == table_key(snn)
    assert "encoder counted" in table_caption(snn) and "silence frames included" in table_caption(snn)
    snn["ops"]["encoder"] = "free"
    assert table_key(lstm) != table_key(snn)
