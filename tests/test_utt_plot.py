"""snnasr plot: one PNG per utterance (features, layer outputs, posteriorgram, segments)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from yesno_fixture import TINY_TRAIN, yesno_recipe

from snnasr.cli import cli
from snnasr.io import DataError
from snnasr.utt_plot import plot_utterance, segments

UTT = "0_0_1_0_0_1_1_0"


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    root = yesno_recipe(tmp_path_factory.mktemp("plot"))
    binary = ["model.n_bits=1", "model.threshold=0", "model.reset=zero", "model.input_encoding=none"]
    for arch, extra in (("proposed", []), ("lstm", []), ("lif", binary), ("scsr", [])):
        result = CliRunner().invoke(
            cli, ["train", "--arch", arch, "-d", str(root), *TINY_TRAIN, "train.epochs=1", *extra]
        )
        assert result.exit_code == 0, result.output
    return root


def test_segments_are_runs_of_labels() -> None:
    assert segments(np.array([0, 0, 2, 2, 2, 1, -1, -1])) == [(0, 2, 0), (2, 5, 2), (5, 6, 1), (6, 8, -1)]
    assert segments(np.array([], dtype=int)) == []


@pytest.mark.parametrize("arch", ["proposed", "lstm", "lif", "scsr"])
def test_cli_writes_a_png_for_each_kind_of_layer(recipe: Path, arch: str) -> None:
    result = CliRunner().invoke(cli, ["plot", f"exp/{arch}", "--set", "train_yesno", "--utt", UTT, "-d", str(recipe)])
    assert result.exit_code == 0, result.output
    png = recipe / "exp" / arch / "plots" / f"train_yesno_{UTT}.png"
    assert result.output.strip() == f"wrote {png}"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real figure, not an empty canvas


def test_unknown_utterance_or_set_is_a_data_error(recipe: Path) -> None:
    with pytest.raises(DataError, match=r"no labelled utterance 'nope' \(e.g. 0_0_0_0_1_1_1_1"):
        plot_utterance("exp/lstm", recipe, "train_yesno", "nope")
    with pytest.raises(DataError, match="no such set"):
        plot_utterance("exp/lstm", recipe, "test", UTT)


def test_binary_spikes_are_drawn_as_a_raster() -> None:
    from snnasr.utt_plot import _layer_image

    spikes = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    assert _layer_image(spikes, None)[2] == "spike raster"
    assert _layer_image(spikes * 0.5 - 0.1, None)[2] == "hidden state"
