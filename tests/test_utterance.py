"""task: utterance: pooled readouts by hand, confusion matrix, and prep -> train -> eval -> report on FSDD."""

import json

import pytest
import torch
from click.testing import CliRunner
from test_fsdd import REPO, make_corpus

from snnasr.cli import cli
from snnasr.config import load_config
from snnasr.data.datadir import read_table
from snnasr.io import ConfigError, DataError
from snnasr.lang import load_lang
from snnasr.utterance import UtterancePool, confusion_matrix, pool_logits


def _logits():
    # T = 3, B = 2, C = 2; utterance 1 has 2 frames (frame 2 is padding, filled with garbage).
    logits = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[3.0, 1.0], [4.0, 0.0]], [[-1.0, 5.0], [99.0, 99.0]]])
    mask = torch.tensor([[True, True], [True, True], [True, False]])
    return logits, mask


def test_pooled_readouts_by_hand():
    logits, mask = _logits()
    assert pool_logits(logits, mask, "last").tolist() == [[-1.0, 5.0], [4.0, 0.0]]
    assert pool_logits(logits, mask, "mean").tolist() == [[1.0, 2.0], [2.0, 1.0]]
    assert pool_logits(logits, mask, "max").tolist() == [[3.0, 5.0], [4.0, 2.0]]
    soft = pool_logits(logits, mask, "softmax-sum")
    assert torch.allclose(
        soft, logits.softmax(-1)[0] + logits.softmax(-1)[1] + logits.softmax(-1)[2] * mask[2, :, None]
    )
    # Burn-in 1 drops frame 0; an utterance no longer than the burn-in keeps its last frame.
    assert pool_logits(logits, mask, "mean", burn_in=1).tolist() == [[1.0, 3.0], [4.0, 0.0]]
    assert pool_logits(logits, mask, "mean", burn_in=5).tolist() == [[-1.0, 5.0], [4.0, 0.0]]
    with pytest.raises(ConfigError):
        pool_logits(logits, mask, "median")


def test_utterance_loss_and_accuracy():
    logits, mask = _logits()
    y = torch.tensor([[1, 0], [1, 0], [1, -1]])
    loss, correct = UtterancePool("mean").loss_correct(logits, y, mask)
    scores = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    assert float(loss) == pytest.approx(
        float(torch.nn.functional.cross_entropy(scores, torch.tensor([1, 0]), reduction="sum"))
    )
    assert int(correct) == 2
    assert confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3).tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


def test_task_and_pool_are_checked():
    cfg = load_config(None, ["task=utterance", "utterance.pool=softmax-sum", "utterance.burn_in=10"])
    assert (cfg.task, cfg.utterance.pool, cfg.utterance.burn_in) == ("utterance", "softmax-sum", 10)
    with pytest.raises(ConfigError, match="task"):
        load_config(None, ["task=word"])
    with pytest.raises(ConfigError, match="utterance.pool"):
        load_config(None, ["utterance.pool=median"])


@pytest.mark.slow
def test_fsdd_utterance_pipeline(tmp_path):
    recipe = tmp_path / "r"
    runner = CliRunner()
    assert runner.invoke(cli, ["prep", "fsdd", str(make_corpus(tmp_path / "fsdd")), "-d", str(recipe)]).exit_code == 0
    lang = load_lang(recipe / "data" / "lang")
    assert lang.utterance_level == "digit" and lang.utterance_classes[2] == "two"
    assert read_table(recipe / "data" / "dev" / "utt2digit")["lucas_4_5"] == "four"  # digit from the file name
    config = REPO / "recipes" / "fsdd" / "conf" / "mfcc.yaml"
    assert runner.invoke(cli, ["features", "--config", str(config), "-d", str(recipe)]).exit_code == 0
    tiny = ["task=utterance", "model.hidden=8", "train.epochs=1", "train.curriculum=1000*1"]
    for arch in ("lstm", "alif", "scsr"):
        result = runner.invoke(cli, ["train", "--arch", arch, "-d", str(recipe), *tiny])
        assert result.exit_code == 0, result.output
        assert "classes (digit)" in result.output
        result = runner.invoke(cli, ["eval", f"exp/{arch}", "--report-ops", "-d", str(recipe)])
        assert result.exit_code == 0, result.output
        res = json.loads((recipe / "exp" / arch / "eval_test" / "results.json").read_text())
        assert res["task"] == "utterance" and res["utterances"] == 4
        matrix = res["confusion"]["matrix"]
        assert len(matrix) == 10 and sum(map(sum, matrix)) == 4
        assert res["utterance_accuracy"] == sum(matrix[i][i] for i in range(10)) / 4
        assert (recipe / "exp" / arch / "eval_test" / "confusion.png").stat().st_size > 0
        assert "confusion (rows: reference" in result.output
    assert runner.invoke(cli, ["report", "-d", str(recipe)]).exit_code == 0
    report = (recipe / "exp" / "report.md").read_text()
    assert "Utt. acc. %" in report and "| alif |" in report and "| scsr |" in report
    # A frame-label recipe has no utterance labels: one clear line.
    (recipe / "data" / "train" / "utt2digit").unlink()
    result = runner.invoke(cli, ["train", "--arch", "lstm", "--exp", "again", "-d", str(recipe), *tiny])
    assert isinstance(result.exception, DataError) and "utt2digit" in str(result.exception)
