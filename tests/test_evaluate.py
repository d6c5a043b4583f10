"""snnasr eval on a hand-made recipe dir (tiny lang, three utterances, untrained tiny models)."""

import importlib.util
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from snnasr.batching import plan_batches
from snnasr.cli import cli
from snnasr.evaluate import level_folds, pad_batch, resolve_exp, run_evaluation
from snnasr.io import DataError, write_text
from snnasr.lang import load_lang, write_lang

DIM = 4
LENGTHS = {"spk1_u1": 7, "spk1_u2": 12, "spk2_u1": 20}
P48 = ["sil", "aa", "ao", "vcl", "b"]
P39 = ["sil", "aa", "b"]
M48_39 = {"sil": "sil", "aa": "aa", "ao": "aa", "vcl": "sil", "b": "b"}


def _have(*modules):
    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_pipeline = pytest.mark.skipif(
    not _have("snnasr.dataset", "snnasr.models", "snnasr.train"),
    reason="snnasr.dataset / models / train not available yet",
)


@pytest.fixture
def recipe(tmp_path):
    from snnasr.kaldi.ark import write_mat_ark_scp, write_vec_int_ark_scp

    write_lang(
        tmp_path / "data" / "lang",
        {"phone48": P48, "phone39": P39},
        default="phone48",
        score="phone39",
        silence=["sil"],
        maps={("phone48", "phone39"): M48_39},
    )
    rng = np.random.default_rng(0)
    d = tmp_path / "data" / "test"
    d.mkdir(parents=True)
    feats, labels48, labels39 = {}, {}, {}
    for utt, n in LENGTHS.items():
        feats[utt] = rng.normal(size=(n, DIM)).astype(np.float32)
        labels48[utt] = rng.integers(0, len(P48), n).astype(np.int32)
        labels39[utt] = np.array([P39.index(M48_39[P48[i]]) for i in labels48[utt]], dtype=np.int32)
    utts = sorted(LENGTHS)
    write_text(d / "wav.scp", "".join(f"{u} /dev/null\n" for u in utts))
    write_text(d / "text", "".join(f"{u} aa b\n" for u in utts))
    write_text(d / "utt2spk", "".join(f"{u} {u.split('_')[0]}\n" for u in utts))
    write_text(d / "spk2utt", "spk1 spk1_u1 spk1_u2\nspk2 spk2_u1\n")
    write_text(d / "utt2num_frames", "".join(f"{u} {LENGTHS[u]}\n" for u in utts))
    # What `snnasr features` records; the dataset reads the CMVN mode from it.
    write_text(d / "conf" / "features.yaml", "hash: handmade\ncmvn: speaker\n")
    write_mat_ark_scp([(u, feats[u]) for u in utts], d / "feats.ark", d / "feats.scp")
    cmvn = []
    for spk in ("spk1", "spk2"):
        x = np.concatenate([feats[u] for u in utts if u.startswith(spk)])
        stats = np.zeros((2, DIM + 1), dtype=np.float64)
        stats[0, :DIM], stats[1, :DIM], stats[0, DIM] = x.sum(0), (x**2).sum(0), len(x)
        cmvn.append((spk, stats))
    write_mat_ark_scp(cmvn, d / "cmvn.ark", d / "cmvn.scp")
    write_vec_int_ark_scp([(u, labels48[u]) for u in utts], d / "labels_phone48.ark", d / "labels_phone48.scp")
    write_vec_int_ark_scp([(u, labels39[u]) for u in utts], d / "labels_phone39.ark", d / "labels_phone39.scp")
    return tmp_path


N48 = len(P48)


def make_run(recipe, arch, n_out=N48, level="phone48", name=None, **model):
    from snnasr.config import load_config
    from snnasr.models import build

    torch.manual_seed(0)
    # The hand-made recipe has one set: the decoder estimates on it and tunes on it.
    overrides = [f"model.{k}={v}" for k, v in {"hidden": 6, "layers": 2, **model}.items()]
    cfg = load_config(None, [*overrides, "data.train_set=test", "data.dev_set=test"], model={"arch": arch})
    net = build(arch, cfg.model, DIM, n_out)
    run = recipe / "exp" / (name or arch)
    run.mkdir(parents=True)
    torch.save(
        {
            "config": asdict(cfg),
            "state_dict": net.state_dict(),
            "n_in": DIM,
            "n_out": n_out,
            "level": level,
            "epoch": 1,
            "dev_acc": 0.0,
            "arch": arch,
        },
        run / "model.pt",
    )
    return run


def test_padding_helpers():
    x, mask = pad_batch([torch.ones(3, 2), torch.ones(1, 2)], pad_value=7.0)
    assert x.shape == (3, 2, 2) and mask.tolist() == [[True, True], [True, False], [True, False]]
    assert x[1:, 1].eq(7.0).all()

    # Eval batches whole utterances (max_len = the longest, so nothing is cut), sorted by length;
    # a batch never exceeds the padded-frame budget unless one utterance does.
    def whole(lengths, budget):
        return [[u for u, _, _ in b] for b in plan_batches(lengths, max(lengths), budget)]

    assert whole([5, 2, 9, 3], 10) == [[1, 3], [0], [2]]
    for batch in whole([5, 2, 9, 3, 4, 4], 10):
        assert len(batch) == 1 or max([5, 2, 9, 3, 4, 4][i] for i in batch) * len(batch) <= 10


def test_level_folds_compose_chains_of_maps(tmp_path):
    # Kaldi-like: pdf -> phone (majority map) -> stripped phone (score level); no direct pdf map.
    write_lang(
        tmp_path,
        {"pdf": ["0", "1", "2", "3"], "phone": ["SIL", "AH0", "AH1", "B"], "base": ["SIL", "AH", "B"]},
        default="pdf",
        score="base",
        silence=["SIL"],
        maps={
            ("pdf", "phone"): {"0": "SIL", "1": "AH0", "2": "AH1", "3": "-"},
            ("phone", "base"): {"SIL": "SIL", "AH0": "AH", "AH1": "AH", "B": "B"},
        },
    )
    folds = level_folds(load_lang(tmp_path), "pdf")
    assert list(folds) == ["pdf", "phone", "base"]
    assert folds["pdf"].tolist() == [0, 1, 2, 3]
    assert folds["phone"].tolist() == [0, 1, 2, -1]
    assert folds["base"].tolist() == [0, 1, 1, -1]


def test_exp_without_model_is_one_clear_line(recipe):
    (recipe / "exp" / "empty").mkdir(parents=True)
    with pytest.raises(DataError, match="run snnasr train first"):
        run_evaluation(recipe / "exp" / "empty", recipe)
    result = CliRunner().invoke(cli, ["eval", "exp/empty", "-d", str(recipe)])
    assert result.exit_code == 1 and "run snnasr train first" in str(result.exception)


@needs_pipeline
def test_exp_is_found_relative_to_recipe(recipe):
    run = make_run(recipe, "lstm")
    assert resolve_exp("exp/lstm", recipe) == recipe / "exp" / "lstm"
    assert resolve_exp("lstm", recipe) == run
    assert resolve_exp(run, recipe) == run


@needs_pipeline
@pytest.mark.parametrize("arch", ["lstm", "gru", "lif", "proposed"])
def test_eval_writes_results_and_ops(recipe, arch, capsys):
    run = make_run(recipe, arch)
    res = run_evaluation(run, recipe, set_name="test", report_ops=True, device="cpu")
    saved = json.loads((run / "eval_test" / "results.json").read_text())
    assert saved["frames"] == sum(LENGTHS.values()) == res["frames"]
    assert saved["label_level"] == "phone48" and saved["score_level"] == "phone39"
    assert set(saved["accuracy"]) == {"phone48", "phone39"}
    assert saved["accuracy"]["phone39"] >= saved["accuracy"]["phone48"] - 1e-9  # folding can only merge errors
    for per in (saved["per"], saved["collapse_per"]):
        assert per["per"] == pytest.approx(
            (per["substitutions"] + per["deletions"] + per["insertions"]) / per["ref_phones"]
        )
    assert saved["per"]["tuned_on"] == "test" and saved["per"]["min_dur"] == 3
    assert len(saved["zero_frac"]["layers"]) == 2 and 0 <= saved["zero_frac"]["overall"] <= 1
    assert saved["params"] > 0
    details = json.loads((run / "eval_test" / "ops.json").read_text())
    assert [layer["kind"] for layer in details["layers"]] == [arch] * 2
    ops = saved["ops"]
    assert ops["total_per_frame"] == pytest.approx(ops["mac_per_frame"] + ops["ac_per_frame"])
    if arch == "lstm":
        # Dense h everywhere: the model is its own analytic reference.
        assert ops["normalised_vs_lstm"] == pytest.approx(1.0, rel=1e-6)
        assert ops["ac_per_frame"] == 0
    out = capsys.readouterr().out
    assert "| Architecture" in out and "LSTM (analytic" in out and "memory access excluded" in out


@needs_pipeline
def test_batching_does_not_change_any_number(recipe):
    run = make_run(recipe, "proposed")
    one = run_evaluation(run, recipe, report_ops=True, device="cpu", batch_frames=1)  # B = 1, no padding
    many = run_evaluation(run, recipe, report_ops=True, device="cpu", batch_frames=10_000)  # one padded batch
    assert one["frames"] == many["frames"] and one["collapse_per"] == many["collapse_per"]
    assert one["per"]["per"] == pytest.approx(many["per"]["per"])
    assert one["accuracy"] == pytest.approx(many["accuracy"])
    assert one["zero_frac"]["layers"] == pytest.approx(many["zero_frac"]["layers"])
    for key in ("mac_per_frame", "ac_per_frame", "total_per_frame"):
        assert one["ops"][key] == pytest.approx(many["ops"][key])


@needs_pipeline
def test_official_convention_counts_proposed_quirk(recipe):
    run = make_run(recipe, "proposed", name="v1", recurrent=False)
    honest = run_evaluation(run, recipe, report_ops=True, device="cpu")
    official = run_evaluation(run, recipe, report_ops=True, device="cpu", ops_convention="official")
    assert honest["arch_label"] == "proposed (v1)"
    # v1 has no recurrent weights: official adds a second 2*nnz_in*H term that honest omits.
    assert official["ops"]["total_per_frame"] > honest["ops"]["total_per_frame"]


@needs_pipeline
def test_bad_sets_are_one_clear_line(recipe):
    run = make_run(recipe, "lstm")
    (recipe / "data" / "dev").mkdir()
    with pytest.raises(DataError, match="feats.scp.*snnasr features"):
        run_evaluation(run, recipe, set_name="dev", device="cpu")
    with pytest.raises(DataError, match="no such set"):
        run_evaluation(run, recipe, set_name="nope", device="cpu")
    (recipe / "data" / "test" / "labels_phone48.scp").unlink()
    with pytest.raises(DataError, match="labels_phone48.scp"):
        run_evaluation(run, recipe, device="cpu")


@needs_pipeline
def test_mismatched_label_sets_are_rejected(recipe):
    run = make_run(recipe, "gru", n_out=3, name="fewer")
    with pytest.raises(DataError, match="mismatched label sets"):
        run_evaluation(run, recipe, device="cpu")
    run = make_run(recipe, "gru", n_out=61, level="phone61", name="other_level")
    result = CliRunner().invoke(cli, ["eval", str(run), "-d", str(recipe), "--device", "cpu"])
    assert result.exit_code == 1 and "phone61" in str(result.exception)


@needs_pipeline
def test_encoder_ops_convention_and_decoder_needs_training_labels(recipe):
    run = make_run(recipe, "lif")
    counted = run_evaluation(run, recipe, report_ops=True, device="cpu")
    free = run_evaluation(run, recipe, report_ops=True, device="cpu", encoder_ops="free")
    assert counted["ops"]["encoder"] == "counted" and free["ops"]["encoder"] == "free"
    per_frame = counted["ops"]["total_per_frame"] - free["ops"]["total_per_frame"]
    assert per_frame == pytest.approx(3 * DIM)  # accumulate, scale, subtract per feature
    lstm = run_evaluation(make_run(recipe, "lstm"), recipe, report_ops=True, device="cpu")
    assert lstm["ops"]["encoder"] == "none"
    # A run whose config names a training set without labels: the decoder cannot be estimated.
    other = make_run(recipe, "gru")
    blob = torch.load(other / "model.pt", weights_only=False)
    blob["config"]["data"]["train_set"] = "train"
    torch.save(blob, other / "model.pt")
    with pytest.raises(DataError, match="decoder estimates"):
        run_evaluation(other, recipe, device="cpu")
