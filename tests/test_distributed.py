"""DistributedDataParallel under torchrun, on CPU with gloo and 2 processes (snnasr.distributed).

Pinned: two ranks train exactly as one process on the same global batches (loss, accuracy and
parameters after every step, up to float summation order); rank 0 alone writes; a run stopped
by a signal on one rank and resumed under torchrun ends as the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_features import make_recipe

import snnasr.train as T
from snnasr.features import FeatureOptions, make_features
from snnasr.io import ConfigError

WORKER = Path(__file__).parent / "ddp_worker.py"
OVERRIDES = [
    "model.hidden=8",
    "model.layers=1",
    "model.dropout=0.0",
    "model.batchnorm=false",  # batch statistics would differ per rank (no SyncBatchNorm)
    "train.epochs=2",
    "train.batch_size=2",
    "train.curriculum=10*2",
    "train.lr=0.01",
    "train.eval_max_len=20",
    "data.dev_set=train",
]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = make_recipe(tmp_path_factory.mktemp("ddp"), seconds=(0.31, 0.25, 0.42, 0.2, 0.36, 0.28))
    make_features(root / "data" / "train", FeatureOptions.load(None))
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(recipe: Path, exp: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent)}
    return subprocess.run(
        [*cmd, str(WORKER), str(recipe), exp, *args, *OVERRIDES],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "frames_per_s")} for r in rows]


def _close(a: list[dict], b: list[dict]) -> None:
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for x, y in zip(a, b):
        for key in ("loss", "acc", "dev_loss", "dev_acc"):
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), key
        assert x["zero_pct"] == pytest.approx(y["zero_pct"], abs=1e-6)


def test_two_ranks_train_as_one_process_on_the_global_batch_and_resume(recipe, monkeypatch):
    done = _torchrun(recipe, "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    run = recipe / "exp" / "ddp"
    log = (run / "train.log").read_text()
    assert "2 processes (gloo, DistributedDataParallel)" in log
    assert log.count("epoch 2/2") == 1  # rank 0 alone logs

    # One process, each step on the union of the two ranks' batches (plan batches 2k and 2k+1).
    real_plan = T.epoch_plan

    def global_batches(lengths, max_len, batch_frames, seed, batch_size=None):
        plan = real_plan(lengths, max_len, batch_frames, seed, batch_size)
        if seed is None:  # dev: every batch once, however it is sharded
            return plan
        return [plan[k] + plan[k + 1] for k in range(0, len(plan) - 1, 2)]

    monkeypatch.setattr(T, "epoch_plan", global_batches)
    T.run_training(recipe, arch="gru", exp_name="one", device="cpu", overrides=OVERRIDES)
    monkeypatch.setattr(T, "epoch_plan", real_plan)
    one = recipe / "exp" / "one"
    _close(_metrics(run), _metrics(one))
    for epoch in (1, 2):
        a = torch.load(run / "checkpoints" / f"epoch{epoch}.pt", weights_only=False)
        b = torch.load(one / "checkpoints" / f"epoch{epoch}.pt", weights_only=False)
        assert a["model"].keys() == b["model"].keys()
        for k in a["model"]:
            torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-6)
        assert len(a["ranks"]) == 2 and b["ranks"] is None

    # Rank 1 is sent SIGTERM in its 6th step (epoch 2): both stop after it, rank 0 checkpoints.
    stopped = _torchrun(recipe, "cut", "--stop-rank", "1", "--stop-before", "6")
    assert stopped.returncode != 0
    cut = recipe / "exp" / "cut"
    ckpt = torch.load(cut / "checkpoints" / "epoch2.interrupted.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["step"] > 0 and len(ckpt["ranks"]) == 2
    assert "continue with --resume" in (cut / "train.log").read_text()
    log = (cut / "train.log").read_text()
    with pytest.raises(ConfigError, match="written mid-epoch by 2 processes, resumed by 1"):
        T.run_training(recipe, arch="gru", exp_name="cut", resume=True, device="cpu", overrides=OVERRIDES)
    assert (cut / "train.log").read_text() == log  # refused before writing anything
    resumed = _torchrun(recipe, "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in (cut / "train.log").read_text()
    assert _metrics(cut) == _metrics(run)
