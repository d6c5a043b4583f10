import json
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

import snnasr.checkpoint as C
import snnasr.train as T
from snnasr.config import load_config
from snnasr.io import ConfigError, DataError

# ---------------------------------------------------------------- stand-ins (dataset + model contracts)


class TinyData:
    """UtteranceDataset look-alike: frame label = argmax of the first 3 feature dims (learnable)."""

    def __init__(self, lengths, seed, dim=4, classes=3):
        g = torch.Generator().manual_seed(seed)
        self.dim, self.num_classes, self.level, self.lang = dim, classes, "phone", None
        self.items = []
        for i, n in enumerate(lengths):
            x = torch.randn(n, dim, generator=g)
            self.items.append((f"s{seed}u{i}", x, x[:, :classes].argmax(1)))
        self.uttids = [u for u, _, _ in self.items]
        self.lengths = list(lengths)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class Out(NamedTuple):
    logits: torch.Tensor
    layer_inputs: list
    layer_outputs: list
    step_mask: torch.Tensor | None = None


class TinyModel(nn.Module):
    """Obeys the models forward contract; ReLU gives exact zeros, dropout uses the torch RNG."""

    def __init__(self, n_in, n_out, hidden=8):
        super().__init__()
        self.inp = nn.Linear(n_in, hidden)
        self.rnn = nn.GRU(hidden, hidden)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(hidden, n_out)
        self.n_out, self.arch = n_out, "gru"

    def forward(self, x, mask):
        h = torch.relu(self.inp(x))
        r, _ = self.rnn(h)
        r = self.drop(r)
        return Out(self.out(r), [x, h], [h, r])


@pytest.fixture
def tiny_build(monkeypatch):
    monkeypatch.setattr(C, "build_model", lambda arch, mcfg, n_in, n_out: TinyModel(n_in, n_out))


TRAIN = [7, 30, 55, 12, 90, 3, 41, 26, 60, 17]
DEV = [20, 45, 9, 70]


def _cfg(*extra):
    return load_config(
        None,
        [
            "model.arch=gru",
            "train.epochs=2",
            "train.batch_frames=64",
            "train.lr=0.01",
            "train.curriculum=20*1|40*1",
            "train.eval_max_len=50",
            "train.log_every=2",
            *extra,
        ],
    )


def _data():
    return TinyData(TRAIN, seed=1), TinyData(DEV, seed=2)


def _stable(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "frames_per_s")} for r in rows]


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- pure pieces


def _newbob_schedule(errors, patience, floor=2e-4):
    lr, prev, bad, lrs = 1e-3, None, 0, []
    for err in errors:
        lrs.append(lr)  # the rate each epoch trained with
        lr, bad = T.newbob(lr, prev, err, bad, threshold=0.005, floor=floor, patience=patience)
        prev = err
    return lrs


# Dev frame errors after each epoch; gains (prev - e) / e: -, 25%, 0.25% (bad), 33%, 0% (bad),
# -3% (bad), 0.33% (bad), 3.4%, 0% (bad), 0% (bad).
ERRORS = [0.50, 0.40, 0.399, 0.30, 0.30, 0.31, 0.309, 0.299, 0.299, 0.299, 0.299]


def test_newbob_seed_patience_halves_after_two_bad_epochs_in_a_row():
    # One isolated stall (epoch 3) keeps the rate; epochs 5-6 stall twice in a row -> halve for
    # epoch 7 and restart the count; epoch 7 stalls once, epoch 8 improves (count reset); epochs
    # 9-10 stall twice -> halve for epoch 11.
    lrs = _newbob_schedule(ERRORS, patience=1)
    assert lrs == pytest.approx([1e-3] * 6 + [5e-4] * 4 + [2.5e-4])


def test_newbob_patience_zero_halves_on_every_stall_and_respects_floor():
    lrs = _newbob_schedule(ERRORS, patience=0)
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2e-4, 2e-4, 2e-4, 2e-4, 2e-4])


def test_newbob_zero_error():
    assert T.newbob(1e-3, 0.0, 0.0, 1, 0.005, 1e-4) == (5e-4, 0)  # a stall at 0 error
    assert T.newbob(1e-3, 0.1, 0.0, 1, 0.005, 1e-4) == (1e-3, 0)  # reaching 0 is an improvement


def test_masked_loss_and_accuracy_ignore_padding():
    torch.manual_seed(0)
    logits = torch.randn(5, 3, 4)
    y = torch.randint(0, 4, (5, 3))
    y[3:, 0] = -1
    y[1:, 2] = -1
    valid = y >= 0
    loss, correct = T.masked_loss_correct(logits, y)
    ref = nn.functional.cross_entropy(logits[valid], y[valid], reduction="sum")
    assert torch.allclose(loss, ref)
    assert int(correct) == int((logits[valid].argmax(-1) == y[valid]).sum())
    # Garbage in padded positions changes nothing.
    logits2 = logits.clone()
    logits2[~valid] = 1e4 * torch.randn(int((~valid).sum()), 4)
    assert torch.allclose(T.masked_loss_correct(logits2, y)[0], loss)
    out = torch.zeros(5, 3, 2)
    out[~valid] = 0
    out[valid] = 1.0
    out[0, 0, 1] = 0
    assert T.zero_counts([out], valid).tolist() == [1]


# ---------------------------------------------------------------- fit


def test_fit_writes_run_and_model_loads(tmp_path, tiny_build):
    train, dev = _data()
    metrics = T.fit(_cfg(), train, dev, tmp_path / "run", device="cpu")
    run = tmp_path / "run"
    assert len(metrics) == 2
    for name in (
        "config.yaml",
        "model.pt",
        "metrics.jsonl",
        "train.log",
        "checkpoints/epoch1.pt",
        "checkpoints/epoch2.pt",
    ):
        assert (run / name).is_file(), name
    rows = _jsonl(run / "metrics.jsonl")
    assert _stable(rows) == _stable(metrics)
    for key in (
        "epoch",
        "loss",
        "acc",
        "dev_loss",
        "dev_acc",
        "lr",
        "zero_pct",
        "dev_zero_pct",
        "max_len",
        "seconds",
        "frames_per_s",
        "best",
    ):
        assert key in rows[0], key
    assert [r["max_len"] for r in rows] == [20, 40]
    assert len(rows[0]["zero_pct"]) == 2 and 0 < rows[0]["zero_pct"][0] < 100
    assert rows[0]["dev_zero_pct"][1] == 0.0  # GRU outputs are never exactly zero
    assert all(0 <= r["acc"] <= 1 and np.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["dev_acc"] > 0.5  # learnable toy task
    log = (run / "train.log").read_text()
    assert log.startswith("# ") and "total" in log and "epoch 2/2" in log

    model, cfg, meta = C.load_model(run, device="cpu")
    best = max(rows, key=lambda r: r["dev_acc"])
    assert meta["epoch"] == best["epoch"] and meta["dev_acc"] == best["dev_acc"]
    assert (meta["n_in"], meta["n_out"], meta["level"]) == (4, 3, "phone") and cfg.train.epochs == 2
    assert not model.training
    # The loaded model reproduces the recorded dev accuracy.
    from snnasr.batching import BucketBatchSampler, batch_loader, epoch_plan

    batches = batch_loader(dev, BucketBatchSampler(epoch_plan(dev.lengths, 50, 64, None), drop_last=False))
    assert T.evaluate(model, batches)["acc"] == pytest.approx(meta["dev_acc"])


class SilentModel(TinyModel):
    """TinyModel whose second hidden layer never emits anything (a dead spiking layer)."""

    def forward(self, x, mask):
        out = super().forward(x, mask)
        return out._replace(layer_outputs=[out.layer_outputs[0], torch.zeros_like(out.layer_outputs[1])])


def test_silent_layer_is_warned_about_in_the_log(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "build_model", lambda arch, mcfg, n_in, n_out: SilentModel(n_in, n_out))
    train, dev = _data()
    rows = T.fit(_cfg(), train, dev, tmp_path / "run", device="cpu")
    assert [r["dev_zero_pct"][1] for r in rows] == [100.0, 100.0]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "warning: epoch 1: hidden layer 2 emitted no spike on dev" in log
    assert "warning: epoch 2: hidden layer 2" in log and "lower train.lr or model.threshold" in log
    assert "hidden layer 1" not in log  # the live layer is not named


def test_same_seed_same_metrics_other_seed_differs(tmp_path, tiny_build):
    a = T.fit(_cfg(), *_data(), tmp_path / "a", device="cpu")
    b = T.fit(_cfg(), *_data(), tmp_path / "b", device="cpu")
    c = T.fit(_cfg("seed=7"), *_data(), tmp_path / "c", device="cpu")
    assert _stable(a) == _stable(b)
    assert _stable(a) != _stable(c)


def test_resume_is_exact(tmp_path, tiny_build):
    straight = T.fit(_cfg(), *_data(), tmp_path / "a", device="cpu")
    T.fit(_cfg("train.epochs=1"), *_data(), tmp_path / "b", device="cpu")
    resumed = T.fit(_cfg(), *_data(), tmp_path / "b", resume=True, device="cpu")
    assert _stable(resumed) == _stable(straight)
    assert _stable(_jsonl(tmp_path / "b" / "metrics.jsonl")) == _stable(straight)
    assert "resumed from" in (tmp_path / "b" / "train.log").read_text()


def test_interrupt_writes_checkpoint_and_resume_continues_exactly(tmp_path, tiny_build, monkeypatch):
    straight = T.fit(_cfg(), *_data(), tmp_path / "a", device="cpu")
    real_step, calls = T._train_step, {"n": 0}

    def step(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 9:  # in epoch 2 (epoch 1 has fewer minibatches)
            raise KeyboardInterrupt
        return real_step(*args, **kw)

    monkeypatch.setattr(T, "_train_step", step)
    with pytest.raises(KeyboardInterrupt):
        T.fit(_cfg(), *_data(), tmp_path / "b", device="cpu")
    names = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir())
    assert names == ["epoch1.pt", "epoch2.interrupted.pt"]
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "epoch2.interrupted.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["step"] > 0 and ckpt["partial"] is not None
    assert "interrupted in epoch 2" in (tmp_path / "b" / "train.log").read_text()

    monkeypatch.setattr(T, "_train_step", real_step)
    resumed = T.fit(_cfg(), *_data(), tmp_path / "b", resume=True, device="cpu")
    assert _stable(resumed) == _stable(straight)
    names = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir())
    assert names == ["epoch1.pt", "epoch2.pt"]


def test_refuses_to_overwrite_or_resume_nothing(tmp_path, tiny_build):
    with pytest.raises(DataError, match="no checkpoint to resume"):
        T.fit(_cfg(), *_data(), tmp_path / "a", resume=True, device="cpu")
    T.fit(_cfg("train.epochs=1"), *_data(), tmp_path / "a", device="cpu")
    with pytest.raises(DataError, match="--resume.*another --exp"):
        T.fit(_cfg(), *_data(), tmp_path / "a", device="cpu")
    with pytest.raises(ConfigError, match="train.lr"):
        T.fit(_cfg("train.lr=0.5"), *_data(), tmp_path / "a", resume=True, device="cpu")
    other = TinyData(TRAIN, seed=1, classes=4), TinyData(DEV, seed=2, classes=4)
    with pytest.raises(DataError, match="outputs"):
        T.fit(_cfg(), *other, tmp_path / "a", resume=True, device="cpu")
    with pytest.raises(DataError, match="dev set"):
        T.fit(_cfg(), TinyData(TRAIN, 1), TinyData(DEV, 2, classes=4), tmp_path / "x", device="cpu")
    # Nothing more to do once train.epochs is reached.
    assert len(T.fit(_cfg("train.epochs=1"), *_data(), tmp_path / "a", resume=True, device="cpu")) == 1


def test_load_model_without_model_is_an_error(tmp_path):
    with pytest.raises(DataError, match="run snnasr train"):
        C.load_model(tmp_path)


@pytest.fixture
def ctrl_c_enabled():
    """Ctrl-C as in a terminal, also when the suite runs as a background job (SIGINT ignored there,
    and training then leaves it ignored)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_finishes_the_step_then_checkpoints(tmp_path, tiny_build, monkeypatch, ctrl_c_enabled):
    import os
    import signal

    straight = T.fit(_cfg(), *_data(), tmp_path / "a", device="cpu")
    real_step, calls = T._train_step, {"n": 0}

    def step(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 9:
            os.kill(os.getpid(), signal.SIGINT)  # delivered mid-step: the step must still complete
        return real_step(*args, **kw)

    monkeypatch.setattr(T, "_train_step", step)
    with pytest.raises(KeyboardInterrupt):
        T.fit(_cfg(), *_data(), tmp_path / "b", device="cpu")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "epoch2.interrupted.pt", weights_only=False)
    from snnasr.batching import epoch_plan

    n_epoch1 = len(epoch_plan(_data()[0].lengths, 20, 64, seed=T.batch_seed(1, 0)))
    assert ckpt["epoch"] == 1 and ckpt["step"] == 9 - n_epoch1 > 0  # call 9 completed, call 10 never ran
    monkeypatch.setattr(T, "_train_step", real_step)
    assert _stable(T.fit(_cfg(), *_data(), tmp_path / "b", resume=True, device="cpu")) == _stable(straight)


# ---------------------------------------------------------------- real models (snnasr.models.build)


@pytest.mark.parametrize("arch", ["lif", "proposed"])  # stateful custom layers
def test_real_models_resume_exactly(tmp_path, arch):
    pytest.importorskip("snnasr.models")
    cfg = _cfg(f"model.arch={arch}", "model.hidden=8")
    straight = T.fit(cfg, *_data(), tmp_path / "a", device="cpu")
    T.fit(_cfg(f"model.arch={arch}", "model.hidden=8", "train.epochs=1"), *_data(), tmp_path / "b", device="cpu")
    resumed = T.fit(cfg, *_data(), tmp_path / "b", resume=True, device="cpu")
    assert _stable(resumed) == _stable(straight)
    model, _, meta = C.load_model(tmp_path / "a", device="cpu")
    assert meta["arch"] == arch == model.arch


# ---------------------------------------------------------------- run_training input checks


def _recipe(tmp_path):
    from snnasr.lang import write_lang

    write_lang(
        tmp_path / "data" / "lang", {"phone": ["a", "b", "sil"]}, default="phone", score="phone", silence=["sil"]
    )
    return tmp_path


def test_run_training_names_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="labels.yaml"):
        T.run_training(tmp_path, arch="gru")
    recipe = _recipe(tmp_path)
    with pytest.raises(DataError, match="train set not found"):
        T.run_training(recipe, arch="gru")
    (recipe / "data" / "train").mkdir()
    with pytest.raises(DataError, match="snnasr features --sets train"):
        T.run_training(recipe, arch="gru")
    (recipe / "data" / "train" / "feats.scp").write_text("x\n")
    with pytest.raises(DataError, match="labels_phone.scp"):
        T.run_training(recipe, arch="gru")
    (recipe / "data" / "train" / "labels_phone.scp").write_text("x\n")
    with pytest.raises(DataError, match="dev set not found"):
        T.run_training(recipe, arch="gru")
    with pytest.raises(DataError, match="level 'phone61' unknown"):
        T.run_training(recipe, arch="gru", overrides=["data.label_level=phone61"])
    with pytest.raises(ConfigError, match="train.epochs"):
        T.run_training(recipe, arch="gru", overrides=["train.epochs=0"])
    with pytest.raises(DataError, match="no checkpoint"):
        T.run_training(recipe, arch="gru", resume=True)
    conf = recipe / "lif.yaml"
    conf.write_text("model:\n  arch: lif\n")
    with pytest.raises(DataError, match="exp/gru: no checkpoint"):  # --arch wins over the config file
        T.run_training(recipe, arch="gru", config_path=conf, resume=True)
    with pytest.raises(DataError, match="exp/lif: no checkpoint"):
        T.run_training(recipe, config_path=conf, resume=True)


# ---------------------------------------------------------------- CLI end to end (real dataset + models)


def _fabricate_recipe(root):
    """data/lang + data/{train,dev} with feats/labels arks, cmvn none (as `snnasr features` leaves them)."""
    from snnasr.kaldi.ark import write_mat_ark_scp, write_vec_int_ark_scp

    recipe = _recipe(root)
    for name, data in (("train", TinyData(TRAIN, seed=1)), ("dev", TinyData(DEV, seed=2))):
        d = recipe / "data" / name
        (d / "conf").mkdir(parents=True)
        (d / "conf" / "features.yaml").write_text("hash: fabricated-for-test\ncmvn: none\n")
        write_mat_ark_scp([(u, x.numpy()) for u, x, _ in data.items], d / "feats.ark", d / "feats.scp")
        write_vec_int_ark_scp(
            [(u, y.numpy()) for u, _, y in data.items], d / "labels_phone.ark", d / "labels_phone.scp"
        )
    return recipe


def _interrupt(*args, **kw):
    raise KeyboardInterrupt


def test_cli_train_resume_and_interrupt(tmp_path, monkeypatch):
    pytest.importorskip("snnasr.dataset")
    pytest.importorskip("snnasr.models")
    from click.testing import CliRunner

    from snnasr.cli import cli

    recipe = _fabricate_recipe(tmp_path)
    base = [
        "train",
        "--arch",
        "proposed",
        "-d",
        str(recipe),
        "--device",
        "cpu",
        "model.hidden=8",
        "train.batch_frames=64",
        "train.curriculum=20*1|40*1",
        "train.eval_max_len=50",
    ]
    runner = CliRunner()
    result = runner.invoke(cli, base + ["train.epochs=1"])
    assert result.exit_code == 0, result.output
    run = recipe / "exp" / "proposed"
    assert "epoch 1/1" in result.output and "total" in result.output
    assert len(_jsonl(run / "metrics.jsonl")) == 1

    result = runner.invoke(cli, base + ["train.epochs=1"])  # again without --resume: refused
    assert isinstance(result.exception, DataError) and "--resume" in str(result.exception)

    real_step = T._train_step
    monkeypatch.setattr(T, "_train_step", _interrupt)
    result = runner.invoke(cli, base + ["train.epochs=2", "--resume"])
    assert result.exit_code == 130 and "--resume" in result.output
    assert (run / "checkpoints" / "epoch2.interrupted.pt").is_file()

    monkeypatch.setattr(T, "_train_step", real_step)
    result = runner.invoke(cli, base + ["train.epochs=2", "--resume"])
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in _jsonl(run / "metrics.jsonl")] == [1, 2]
    model, cfg, meta = C.load_model(run, device="cpu")
    assert meta["arch"] == "proposed" == model.arch and meta["level"] == "phone" and cfg.model.hidden == 8
    assert "# " in (run / "train.log").read_text().splitlines()[0]


def test_activity_penalty_is_mean_abs_output_per_layer_over_valid_frames():
    out = torch.tensor([[[1.0, -3.0]], [[5.0, 5.0]]])  # [T=2, B=1, H=2]
    mask = torch.tensor([[True], [False]])
    assert T.activity_penalty([out, 2 * out], mask).item() == pytest.approx(2.0 + 4.0)
