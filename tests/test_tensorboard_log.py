"""train --tensorboard: event files beside metrics.jsonl, with the same numbers, on real yes/no audio."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from yesno_fixture import TINY_TRAIN, yesno_recipe

from snnasr.cli import cli
from snnasr.io import ConfigError

pytest.importorskip("tensorboard", reason="the [tensorboard] extra is not installed: pip install 'snnasr[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return yesno_recipe(tmp_path_factory.mktemp("tb"))


@pytest.mark.parametrize("arch", ["lif", "lstm"])
def test_scalars_equal_metrics_jsonl_and_layers_have_histograms(recipe: Path, arch: str) -> None:
    args = ["train", "--arch", arch, "-d", str(recipe), "--tensorboard", *TINY_TRAIN, "train.epochs=2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    run = recipe / "exp" / arch
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"histograms": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    for tag, key in (
        ("loss/train", "loss"),
        ("accuracy/dev", "dev_acc"),
        ("lr", "lr"),
        ("frames_per_s", "frames_per_s"),
    ):
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert got == [(r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in rows]
    zeros = [e.value for e in events.Scalars("zeros_pct/dev/layer1")]
    assert zeros == [pytest.approx(r["dev_zero_pct"][1], rel=1e-6) for r in rows]
    assert {"spike_rate/layer0", "spike_rate/layer1"} <= set(tags["histograms"])
    rate = events.Histograms("spike_rate/layer0")[-1].histogram_value
    assert rate.num == 16 and 0 <= rate.min <= rate.max <= 1  # one rate per neuron (model.hidden=16)
    if arch == "lif":
        assert "spike_level/layer0" in tags["histograms"]


def test_missing_package_is_a_config_error_before_training(recipe: Path, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    args = ["train", "--arch", "lstm", "--exp", "no_tb", "-d", str(recipe), "--tensorboard", *TINY_TRAIN]
    result = CliRunner().invoke(cli, [*args, "train.epochs=1"])
    assert isinstance(result.exception, ConfigError) and "pip install 'snnasr[tensorboard]'" in str(result.exception)
    assert not list((recipe / "exp" / "no_tb").glob("checkpoints/*.pt"))


def test_resume_may_switch_tensorboard_on(recipe: Path) -> None:
    base = ["train", "--arch", "lstm", "--exp", "later", "-d", str(recipe), *TINY_TRAIN]
    assert CliRunner().invoke(cli, [*base, "train.epochs=1"]).exit_code == 0
    result = CliRunner().invoke(cli, [*base, "train.epochs=2", "--resume", "--tensorboard"])
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(recipe / "exp" / "later" / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("loss/train")] == [2]
