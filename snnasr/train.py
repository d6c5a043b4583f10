"""``snnasr train``: frame-level classification training with exact resume.

Inputs (under the recipe dir): ``data/<train_set>/`` and ``data/<dev_set>/`` with ``feats.scp``,
``cmvn.scp`` and ``labels_<level>.scp``; ``data/lang/``.  Outputs in ``exp/<run>/``:

``config.yaml``       the fully resolved config;
``model.pt``          best epoch on dev frame accuracy (see :mod:`snnasr.checkpoint`, which
                      reads and writes it and the checkpoints with their data fingerprint);
``checkpoints/epoch<N>.pt``   state after epoch N (1-based): model, optimiser, lr, RNG states,
                      new-bob and best-so-far bookkeeping, metrics so far;
``checkpoints/epoch<N>.interrupted.pt``  written on Ctrl-C or SIGTERM during epoch N;
``metrics.jsonl``     one JSON line per epoch (fields in :func:`fit`);
``train.log``         the command line and every line printed.

Recipe (seed paper, Ponghiran & Roy 2021, R1 ``core.py``; differences are deliberate): Adam
without weight decay, optional gradient clipping, new-bob halving of the learning rate when the
relative dev frame-error improvement ``(e_prev - e) / e`` stays below
``train.newbob_threshold`` for more than ``train.newbob_patience`` epochs (floor ``train.lr_floor``;
see :func:`newbob`), minibatches of ``train.batch_size`` sequences and/or ``train.batch_frames``
padded frames, a length curriculum (see
:mod:`snnasr.batching`), and the loss averaged over valid frames only -- padding never counts in
loss, accuracy or sparsity (the seed counted it).

Exactness: everything random in an epoch comes from ``cfg.seed`` -- minibatches from a generator
seeded with ``(seed, epoch)``, dropout from the global torch RNG whose state is checkpointed -- so
``train 2 epochs`` and ``train 1 epoch + --resume`` give identical metrics on CPU.  A Ctrl-C
or SIGTERM (:mod:`snnasr.runtime`) finishes the current optimiser step, saves ``epoch<N>.interrupted.pt`` with the position inside
the epoch and the partial sums, and exits with code 130; ``--resume`` continues the epoch from
the next minibatch (same batches, same RNG state), so interrupting does not change the result
either.  A second Ctrl-C aborts at once (a checkpoint is still written, but the step it cut
may be half-done).  ``kill -9`` loses at most the epoch in progress: checkpoints are written
atomically, so ``--resume`` starts from the last complete one (``train.checkpoint_every`` N
also writes the mid-epoch state every N minibatches, so at most N are lost).

Non-finite numbers: a minibatch whose loss or gradient is NaN/inf is skipped (weights, optimiser
and buffers unchanged) and counted in ``skipped_steps``; ``train.max_nonfinite_steps`` in a row
stop the run with one line, keeping the last good checkpoint, and an epoch whose dev loss is not
finite never becomes ``model.pt``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import click
import torch
import torch.nn.functional as F
from tqdm import tqdm

from snnasr import checkpoint as ckpt_io
from snnasr import distributed
from snnasr.batching import BucketBatchSampler, Minibatch, batch_loader, curriculum_max_len, epoch_plan
from snnasr.checkpoint import check_exp_dir, checkpoints, data_fingerprint
from snnasr.config import Config, load_config, save_config
from snnasr.io import ConfigError, DataError, SnnasrError, remove_stale_temporaries, write_text
from snnasr.malloc import keep_freed_memory
from snnasr.runtime import deferred_stop, resolve_device, rng_state, seed_everything, set_rng_state
from snnasr.tensorboard_log import open_board
from snnasr.utterance import UtterancePool


def batch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s minibatch plan (0-based): a pure function, so resume needs no state."""
    return seed * 1_000_003 + epoch


def newbob(
    lr: float, prev_err: float | None, err: float, bad: int, threshold: float, floor: float, patience: int = 1
) -> tuple[float, int]:
    """``(lr, bad epochs)`` for the next epoch under the seed's new-bob rule (R1 ``run_exp.py``).

    An epoch is *bad* when the relative dev frame-error improvement ``(prev_err - err) / err``
    (the seed divides by the new error) is below ``threshold``; ``bad`` counts consecutive bad
    epochs.  Once it exceeds ``patience`` the rate halves (not below ``floor``) and the count
    restarts, so with the seed's patience 1 a single stall never halves, two in a row do.
    ``prev_err`` is None after the first epoch (nothing to compare).  An error of 0 is an
    improvement when the previous one was not, a stall when it was 0 too.
    """
    if prev_err is None:
        return lr, bad
    if err > 0:
        gain = (prev_err - err) / err
    else:
        gain = float("inf") if prev_err > 0 else 0.0
    bad = bad + 1 if gain < threshold else 0
    if bad > patience:
        return max(0.5 * lr, floor), 0
    return lr, bad


def masked_loss_correct(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and number of correct frames over frames with ``y >= 0``.

    logits: [T, B, C]; y: [T, B] with -1 on padding.  Sums (not means) so that minibatches of
    different sizes add up to exact epoch totals; no host sync happens here.
    """
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1, reduction="sum")
    correct = (logits.argmax(-1) == y).sum()  # padding label -1 never equals a class id
    return loss, correct


def zero_counts(layer_outputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Exact zeros of each hidden layer's output [T, B, H] over valid frames -> LongTensor[L]."""
    valid = mask.unsqueeze(-1)
    return torch.stack([((out == 0) & valid).sum() for out in layer_outputs])


@dataclass
class Totals:
    """Running sums of one pass over minibatches, kept on the device to avoid syncs."""

    loss: torch.Tensor
    correct: torch.Tensor
    zeros: torch.Tensor | None = None
    widths: list[int] = field(default_factory=list)
    frames: int = 0
    units: int = 0  # what loss and accuracy are per: frames, or utterances for task: utterance
    skipped: int = 0  # minibatches whose step was skipped (non-finite loss or gradient)

    @classmethod
    def new(cls, device: torch.device) -> Totals:
        return cls(
            torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), dtype=torch.long, device=device)
        )

    def add(
        self,
        loss: torch.Tensor,
        correct: torch.Tensor,
        zeros: torch.Tensor,
        widths: list[int],
        units: int,
        frames: int,
    ) -> None:
        self.loss += loss.detach().double()
        self.correct += correct
        self.zeros = zeros if self.zeros is None else self.zeros + zeros
        self.widths = widths
        self.units += units
        self.frames += frames

    def summary(self) -> dict:
        """Loss per unit, accuracy (fraction) and % exact zeros per hidden layer (syncs)."""
        n = max(self.frames, 1)
        units = max(self.units, 1)
        zeros = self.zeros.tolist() if self.zeros is not None else []
        return {
            "loss": self.loss.item() / units,
            "acc": self.correct.item() / units,
            "zero_pct": [100.0 * z / (n * w) for z, w in zip(zeros, self.widths)],
        }

    def state(self) -> dict:
        return {
            "loss": self.loss.item(),
            "correct": self.correct.item(),
            "frames": self.frames,
            "units": self.units,
            "zeros": None if self.zeros is None else self.zeros.tolist(),
            "widths": self.widths,
            "skipped": self.skipped,
        }

    def merged(self, group: distributed.Group) -> Totals:
        """The sums over every rank of ``group`` (this one alone in one process).

        Gathered as objects, not all-reduced: a rank with no dev batch has no zero counts yet.
        Skipped steps are not added: every rank skips the same steps.
        """
        if not group.active:
            return self
        states = distributed.gather(self.state(), group)
        zeros = [s["zeros"] for s in states if s["zeros"] is not None]
        total = {
            "loss": sum(s["loss"] for s in states),
            "correct": sum(s["correct"] for s in states),
            "frames": sum(s["frames"] for s in states),
            "units": sum(s["units"] for s in states),
            "zeros": [sum(z) for z in zip(*zeros)] if zeros else None,
            "widths": next((s["widths"] for s in states if s["widths"]), []),
            "skipped": self.skipped,
        }
        return Totals.from_state(total, self.loss.device)

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> Totals:
        t = cls.new(device)
        t.loss.fill_(state["loss"])
        t.correct.fill_(state["correct"])
        t.frames = state["frames"]
        t.units = int(state.get("units", state["frames"]))
        t.widths = list(state["widths"])
        t.skipped = int(state.get("skipped", 0))
        if state["zeros"] is not None:
            t.zeros = torch.tensor(state["zeros"], dtype=torch.long, device=device)
        return t


def activity_penalty(layer_outputs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Summed over valid frames: the mean ``|s|`` of each hidden layer's output, added over layers.

    The optional spike-activity regulariser (``train.activity_reg``): an L1 pull of the outputs
    towards 0 trades accuracy for zeros (and so for ops), the lever the seed's sparsity
    discussion names.  For LSTM/GRU it acts on ``h``; the recipes use it for the SNNs only.
    """
    valid = mask.unsqueeze(-1)
    return cast(torch.Tensor, sum((out.abs() * valid).sum() / out.shape[-1] for out in layer_outputs))


def _forward_stats(
    model: torch.nn.Module,
    batch: Minibatch,
    task: UtterancePool | None = None,
    activity_reg: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int], int, torch.Tensor | None]:
    """Sums of one minibatch and the activity penalty; ``task`` None = frame labels, else
    utterance pooling (loss and accuracy per utterance: ``units`` counts what they are per)."""
    x, y, mask = batch.x, batch.y, batch.mask
    out = model(x, mask)
    if task is None:
        loss, correct = masked_loss_correct(out.logits, y)
        units = batch.n_frames
    else:
        loss, correct = task.loss_correct(out.logits, y, mask)
        units = y.shape[1]
    steps = mask if out.step_mask is None else out.step_mask
    # Entries per frame of each layer: its width times the simulation steps per frame.
    widths = [o.shape[-1] * (o.shape[0] // mask.shape[0]) for o in out.layer_outputs]
    penalty = activity_reg * activity_penalty(out.layer_outputs, steps) if activity_reg > 0 else None
    return loss, correct, zero_counts(out.layer_outputs, steps), widths, units, penalty


def _train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    batch: Minibatch,
    grad_clip: float,
    activity_reg: float = 0.0,
    task: UtterancePool | None = None,
    group: distributed.Group = distributed.SINGLE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int], int] | None:
    """One optimiser step on the mean loss per frame (per utterance with ``task``; + activity
    penalty); returns the sums for :class:`Totals`.

    In a process group (``model`` a DistributedDataParallel) the mean is over the global batch:
    each rank divides its sum by the global count over ``world``, and DDP averages the ranks'
    gradients, which gives the single-process gradient of all ranks' batches together.

    Returns None, having changed nothing (weights, optimiser state, buffers such as BN running
    stats and quantiser ranges), when the loss or a gradient is not finite: one bad minibatch
    must not poison the model.  Checking costs one device sync per step.
    """
    buffers = [b.detach().clone() for b in model.buffers()]
    loss, correct, zeros, widths, units, penalty = _forward_stats(model, batch, task, activity_reg)
    opt.zero_grad(set_to_none=True)
    objective = loss if penalty is None else loss + penalty
    per = units if not group.active else distributed.all_sum(units, group, loss.device) / group.world
    (objective / per).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=loss.device)
    if not distributed.all_true(torch.isfinite(loss.detach() + norm), group):
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        return None
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss, correct, zeros, widths, units


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Minibatch],
    check: Callable[[], None] | None = None,
    task: UtterancePool | None = None,
    group: distributed.Group = distributed.SINGLE,
) -> dict:
    """Loss, accuracy (per frame, or per utterance with ``task``) and % zeros per layer of
    ``model`` in eval mode over ``batches`` (e.g. a :func:`snnasr.batching.batch_loader`);
    in a process group over every rank's ``batches`` (each rank passes its shard)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    totals = Totals.new(dev)
    try:
        for batch in batches:
            if check is not None:
                check()
            batch = batch.to(dev)
            totals.add(*_forward_stats(model, batch, task)[:5], frames=batch.n_frames)
    finally:
        model.train(was_training)
    return totals.merged(group).summary()


def parameter_counts(model: torch.nn.Module) -> list[tuple[str, str, int]]:
    """``(module name, class, own parameter count)`` for every module that owns parameters."""
    rows = []
    for name, module in model.named_modules():
        n = sum(p.numel() for p in module.parameters(recurse=False))
        if n:
            rows.append((name or "(model)", type(module).__name__, n))
    return rows


class _Log:
    """Prints a line and appends it to train.log (an append-only record, not read back)."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, line: str) -> None:
        click.echo(line)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def fit(
    cfg: Config,
    train_data,
    dev_data,
    exp_dir: str | os.PathLike,
    resume: bool = False,
    device: str | torch.device | None = None,
) -> list[dict]:
    """Train ``cfg.model`` on ``train_data``, select on ``dev_data``; return all epochs' metrics.

    ``train_data``/``dev_data`` are :class:`snnasr.dataset.UtteranceDataset`-like (``len``,
    ``[i] -> (uttid, feats [T, D], labels [T])``, ``.lengths``, ``.dim``, ``.num_classes``,
    ``.level``; ``.piece(i, start, end)`` where it reads less than the whole utterance).
    They are read batch by batch (:func:`snnasr.batching.batch_loader`, ``train.workers``).
    Each metrics dict has: ``epoch`` (1-based), ``max_len`` (curriculum), ``lr`` (used in the
    epoch), ``loss``/``acc`` (train, per valid frame, accuracy as a fraction), ``dev_loss``,
    ``dev_acc``, ``zero_pct``/``dev_zero_pct`` (% exact zeros of each hidden layer's output over
    valid frames), ``best`` (new best dev accuracy), ``seconds`` (whole epoch), ``frames_per_s``
    (training frames per second of training time).

    Raises DataError when the exp dir has checkpoints and ``resume`` is False (or none and it is
    True), when train/dev disagree in dimension or classes, or when the model being resumed was
    built for other dimensions; ConfigError when the resumed config differs (except
    ``train.epochs``, which may grow).  A KeyboardInterrupt writes an interrupted checkpoint and
    is re-raised.
    """
    exp_dir = Path(exp_dir)
    tc = cfg.train
    task = utterance_task(cfg)
    last = check_exp_dir(exp_dir, resume)
    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_freed_memory()  # large temporaries reused, not re-faulted every step (snnasr.malloc)
    ranks = distributed.current()  # one process unless started by torchrun (snnasr.distributed)
    n_in, n_out = train_data.dim, train_data.num_classes
    if (dev_data.dim, dev_data.num_classes) != (n_in, n_out):
        raise DataError(
            f"dev set has {dev_data.dim}-dim features and {dev_data.num_classes} classes but the "
            f"training set {n_in} and {n_out}; make both with the same snnasr features settings"
        )
    fingerprint = {"train": data_fingerprint(train_data), "dev": data_fingerprint(dev_data)}
    ckpt = ckpt_io.load_checkpoint(last) if last is not None else None
    if last is not None and ckpt is not None:
        ckpt_io.check_resumable(exp_dir, last, ckpt, asdict(cfg), n_in, n_out, fingerprint)
    saved_world = len(ckpt.get("ranks") or [None]) if ckpt is not None else ranks.world
    if ckpt is not None and ckpt["partial"] is not None and saved_world != ranks.world:
        raise ConfigError(
            f"{last}: written mid-epoch by {saved_world} processes, resumed by {ranks.world}; resume it "
            f"with the same number of processes (torchrun --nproc_per_node/--nnodes)"
        )

    dev_plan = epoch_plan(dev_data.lengths, tc.eval_max_len, tc.batch_frames, None, tc.batch_size)

    def dev_batches() -> Iterable[Minibatch]:
        sampler = BucketBatchSampler(dev_plan, ranks.rank, ranks.world, drop_last=False)
        return batch_loader(dev_data, sampler, tc.workers, dev)

    if ranks.is_main:  # rank 0 alone writes; the others wait for the directory
        exp_dir.mkdir(parents=True, exist_ok=True)
        (exp_dir / "checkpoints").mkdir(exist_ok=True)
        remove_stale_temporaries(exp_dir, exp_dir / "checkpoints")
        save_config(cfg, exp_dir / "config.yaml")
    distributed.barrier(ranks)
    log: Callable[[str], None] = _Log(exp_dir / "train.log") if ranks.is_main else (lambda line: None)
    log(f"# {shlex.join(sys.argv)}")
    board = open_board(exp_dir, cfg.log.tensorboard) if ranks.is_main else None

    seed_everything(cfg.seed)
    model = ckpt_io.build_model(cfg.model.arch, cfg.model, n_in, n_out).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    net = distributed.wrap(model, ranks, dev)  # what trains; `model` is what is saved and evaluated
    if ranks.rank:  # dropout masks of their own on the other ranks (weights are rank 0's)
        torch.manual_seed(cfg.seed * 1_000_003 + ranks.rank)
    where = f"{ranks.world} processes ({distributed.backend()}, DistributedDataParallel)" if ranks.active else ""
    log(
        f"{cfg.model.arch}: {n_in} inputs, {n_out} classes ({train_data.level}), device {dev}{where and '; ' + where}; "
        f"train {len(train_data.lengths)} utts / {sum(train_data.lengths)} frames, dev {len(dev_data.lengths)} utts"
    )
    rows = parameter_counts(model)
    for name, kind, n in rows:
        log(f"  {name:<40} {kind:<20} {n:>12,}")
    log(f"  {'total':<40} {'':<20} {sum(n for *_, n in rows):>12,}")

    lr, best_acc, best_epoch, prev_err, bad_epochs, metrics = tc.lr, -1.0, 0, None, 0, []
    epoch, step, elapsed, partial = 0, 0, 0.0, None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        lr, best_acc, best_epoch = ckpt["lr"], ckpt["best_acc"], ckpt["best_epoch"]
        prev_err, metrics = ckpt["prev_err"], ckpt["metrics"]
        bad_epochs = ckpt.get("bad_epochs", 0)
        epoch, step, elapsed, partial = ckpt["epoch"], ckpt["step"], ckpt["elapsed"], ckpt["partial"]
        set_rng_state(ckpt["rng"])
        if ranks.active and saved_world == ranks.world:  # this rank's own RNG and sums
            set_rng_state(ckpt["ranks"][ranks.rank]["rng"])
            partial = ckpt["ranks"][ranks.rank]["partial"]
        elif ranks.rank:  # another process count: rank 0 continues the saved RNG, others their own
            torch.manual_seed(cfg.seed * 1_000_003 + ranks.rank)
        where = f"epoch {epoch + 1}, minibatch {step}" if partial is not None else f"after epoch {epoch}"
        log(f"resumed from {last} ({where})")
    for group in opt.param_groups:
        group["lr"] = lr
    if ranks.is_main:
        _write_metrics(exp_dir, metrics)
    if epoch >= tc.epochs:
        log(f"already trained {epoch} epochs (train.epochs={tc.epochs}); nothing to do")
        if ranks.is_main:
            ckpt_io.mark_finished(exp_dir, tc.epochs)
        return metrics

    def checkpoint(path: Path, **position: Any) -> None:
        # Every rank's RNG state and partial sums (a collective: all ranks call this together).
        own = distributed.gather({"rng": rng_state(), "partial": position.get("partial")}, ranks)
        if not ranks.is_main:
            return
        ckpt_io.save(
            path,
            {
                "ranks": own if ranks.active else None,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "lr": lr,
                "best_acc": best_acc,
                "best_epoch": best_epoch,
                "prev_err": prev_err,
                "bad_epochs": bad_epochs,
                "metrics": metrics,
                "rng": rng_state(),
                "config": asdict(cfg),
                "data": fingerprint,
                "n_in": n_in,
                "n_out": n_out,
                "arch": cfg.model.arch,
                **position,
            },
        )

    interactive = sys.stderr.isatty()
    bad_in_a_row = 0
    with deferred_stop() as stop:
        while epoch < tc.epochs:
            max_len = curriculum_max_len(tc.curriculum, epoch)
            plan = epoch_plan(train_data.lengths, max_len, tc.batch_frames, batch_seed(cfg.seed, epoch), tc.batch_size)
            sampler = BucketBatchSampler(plan, ranks.rank, ranks.world, start=step)
            n_batches = step + len(sampler)
            batches = iter(batch_loader(train_data, sampler, tc.workers, dev))
            totals = Totals.new(dev) if partial is None else Totals.from_state(partial, dev)
            start = time.perf_counter()
            net.train()
            bar = tqdm(
                total=n_batches,
                initial=step,
                desc=f"epoch {epoch + 1}/{tc.epochs}",
                unit="batch",
                leave=False,
                disable=not interactive,
                file=sys.stderr,
            )
            try:
                while step < n_batches:
                    batch = next(batches).to(dev)
                    if distributed.any_rank(bool(stop.requested), ranks, dev):
                        raise KeyboardInterrupt  # on every rank at the same step
                    sums = _train_step(net, opt, batch, tc.grad_clip, tc.activity_reg, task=task, group=ranks)
                    if sums is None:  # non-finite loss or gradient: the step was not taken
                        totals.skipped += 1
                        bad_in_a_row += 1
                        if bad_in_a_row >= tc.max_nonfinite_steps:
                            raise _diverged(exp_dir, epoch, step, bad_in_a_row)
                    else:
                        bad_in_a_row = 0
                        totals.add(*sums, frames=batch.n_frames)
                    step += 1
                    bar.update(1)
                    if tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < n_batches:
                        # Mid-epoch state, as an interrupt writes it: kill -9 loses at most these steps.
                        checkpoint(
                            exp_dir / "checkpoints" / f"epoch{epoch + 1}.interrupted.pt",
                            epoch=epoch,
                            step=step,
                            partial=totals.state(),
                            elapsed=elapsed + time.perf_counter() - start,
                        )
                    if interactive and (step % tc.log_every == 0 or step == n_batches):
                        s = totals.summary()
                        fps = totals.frames / (elapsed + time.perf_counter() - start)
                        bar.set_postfix(loss=f"{s['loss']:.3f}", acc=f"{s['acc']:.3f}", fps=f"{fps:.0f}")
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)  # time the work, not its queueing
                train_seconds = elapsed + time.perf_counter() - start
                # One process checks for a stop per dev batch; ranks (uneven shards) at the next step.
                check = None if ranks.active else stop.check
                distributed.sync_buffers(model, ranks)
                result = evaluate(model, dev_batches(), check=check, task=task, group=ranks)
            except KeyboardInterrupt:
                bar.close()
                path = exp_dir / "checkpoints" / f"epoch{epoch + 1}.interrupted.pt"
                checkpoint(
                    path, epoch=epoch, step=step, partial=totals.state(), elapsed=elapsed + time.perf_counter() - start
                )
                log(
                    f"interrupted in epoch {epoch + 1} after minibatch {step}/{n_batches}; wrote {path}; "
                    f"continue with --resume"
                )
                raise
            bar.close()
            totals = totals.merged(ranks)
            train_stats = totals.summary()
            dev_acc = result["acc"]
            is_best = dev_acc > best_acc and math.isfinite(result["loss"])
            row = {
                "epoch": epoch + 1,
                "max_len": max_len,
                "lr": lr,
                **train_stats,
                "dev_loss": result["loss"],
                "dev_acc": dev_acc,
                "dev_zero_pct": result["zero_pct"],
                "best": is_best,
                "seconds": elapsed + time.perf_counter() - start,
                "frames_per_s": totals.frames / max(train_seconds, 1e-9),
                "skipped_steps": totals.skipped,
            }
            metrics.append(row)
            if is_best:
                best_acc, best_epoch = dev_acc, epoch + 1
            if is_best and ranks.is_main:
                ckpt_io.save(
                    exp_dir / ckpt_io.MODEL,
                    {
                        "config": asdict(cfg),
                        "state_dict": model.state_dict(),
                        "n_in": n_in,
                        "n_out": n_out,
                        "level": train_data.level,
                        "epoch": epoch + 1,
                        "epochs": tc.epochs,
                        "finished": False,
                        "dev_acc": dev_acc,
                        "arch": cfg.model.arch,
                        "data": fingerprint,
                    },
                )
            lr_next, bad_epochs = newbob(
                lr, prev_err, 1.0 - dev_acc, bad_epochs, tc.newbob_threshold, tc.lr_floor, tc.newbob_patience
            )
            prev_err = 1.0 - dev_acc
            epoch, step, elapsed, partial = epoch + 1, 0, 0.0, None
            lr_used, lr = lr, lr_next
            for group in opt.param_groups:
                group["lr"] = lr
            checkpoint(exp_dir / "checkpoints" / f"epoch{epoch}.pt", epoch=epoch, step=0, partial=None, elapsed=0.0)
            if ranks.is_main:
                (exp_dir / "checkpoints" / f"epoch{epoch}.interrupted.pt").unlink(missing_ok=True)
                _write_metrics(exp_dir, metrics)
            log(_summary_line(row, tc.epochs, lr_used, lr))
            if (warning := _silent_warning(row)) is not None:
                log(warning)
            if board is not None:
                first = next(iter(dev_batches())).to(dev)
                board.epoch(row, model, (first.x, first.mask))
    if board is not None:
        board.close()
    if ranks.is_main:
        ckpt_io.mark_finished(exp_dir, tc.epochs)
    log(
        f"best dev {'utterance' if task else 'frame'} accuracy {best_acc:.2%} at epoch {best_epoch}: {exp_dir / 'model.pt'}"
    )
    return metrics


def _diverged(exp_dir: Path, epoch: int, step: int, n: int) -> SnnasrError:
    good = checkpoints(exp_dir)
    keep = f"the last good checkpoint {good[-1]} is kept" if good else "no checkpoint was written yet"
    return SnnasrError(
        f"{n} minibatches in a row had a non-finite loss or gradient (epoch {epoch + 1}, up to minibatch "
        f"{step + 1}); training stopped, {keep}; lower train.lr, set train.grad_clip, or check the model.* values"
    )


def _silent_warning(row: dict) -> str | None:
    """A warning when a hidden layer emitted nothing on the whole dev set this epoch, else None.

    A silent spiking layer passes no signal on and, through a box surrogate, little gradient
    back: a too-wide dead zone or too fast a start can leave it there for good (the demo's
    2 x 256 gated SNN, seed 2, lr 0.006, dead zone 4, one thread: 100 % zeros from epoch 1,
    non-finite steps in epoch 4).  The run goes on (a layer may wake up); the line, in the
    house's ``snnasr <stage>: warning:`` form and kept in train.log, says which knobs to turn.
    """
    silent = [str(i + 1) for i, z in enumerate(row["dev_zero_pct"]) if z >= 100.0]
    if not silent:
        return None
    return (
        f"snnasr train: warning: epoch {row['epoch']}: hidden layer{'s' if len(silent) > 1 else ''} {', '.join(silent)} "
        f"emitted no spike on dev (100 % zeros); "
        f"if it stays silent, lower train.lr or model.threshold, or set train.grad_clip"
    )


def _summary_line(row: dict, epochs: int, lr_used: float, lr_next: float) -> str:
    zeros = "/".join(f"{z:.1f}" for z in row["dev_zero_pct"])
    line = (
        f"epoch {row['epoch']}/{epochs} len {row['max_len']} lr {lr_used:.3g}: "
        f"train loss {row['loss']:.4f} acc {row['acc']:.2%} | dev loss {row['dev_loss']:.4f} "
        f"acc {row['dev_acc']:.2%} | zeros% {zeros or '-'} | {row['seconds']:.1f}s "
        f"{row['frames_per_s']:.0f} frames/s"
    )
    if row["best"]:
        line += " *best"
    if lr_next != lr_used:
        line += f" | lr -> {lr_next:.3g}"
    return line


def _write_metrics(exp_dir: Path, metrics: list[dict]) -> None:
    # Rewritten whole from the checkpointed list, so a resumed run never duplicates epochs.
    write_text(exp_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))


def utterance_task(cfg: Config) -> UtterancePool | None:
    """None for ``task: frame``; the pooling of ``task: utterance``."""
    return UtterancePool(cfg.utterance.pool, cfg.utterance.burn_in) if cfg.task == "utterance" else None


def _check_set(recipe_dir: Path, name: str, role: str, level: str, task: str = "frame") -> Path:
    """Fail early, naming the command that makes what is missing."""
    d = recipe_dir / "data" / name
    if not d.is_dir():
        raise DataError(f"{d}: {role} set not found; run snnasr prep for this recipe (or set data.{role}_set)")
    if (d / "wav.scp").is_file():  # a prepared set (not features imported alone): check it as Kaldi would
        from snnasr.data.datadir import validate_data_dir

        validate_data_dir(d)
    if not (d / "feats.scp").is_file():
        raise DataError(f"{d / 'feats.scp'}: no features; run snnasr features --sets {name} -d {recipe_dir}")
    if task == "utterance":
        if not (d / f"utt2{level}").is_file():
            raise DataError(f"{d / f'utt2{level}'}: no {level} utterance labels; re-run snnasr prep for this recipe")
    elif not (d / f"labels_{level}.scp").is_file():
        raise DataError(
            f"{d / f'labels_{level}.scp'}: no {level} frame labels; run snnasr features --sets {name} "
            f"-d {recipe_dir} (with phone_segments) or snnasr prep kaldi"
        )
    return d


def run_training(
    recipe_dir: str | os.PathLike,
    arch: str | None = None,
    config_path: str | os.PathLike | None = None,
    exp_name: str | None = None,
    resume: bool = False,
    device: str | None = None,
    overrides: tuple[str, ...] | list[str] = (),
) -> list[dict]:
    """CLI entry: resolve the config, load data/<train_set> and data/<dev_set>, run :func:`fit`.

    ``arch`` wins over the config file's ``model.arch``; ``overrides`` win over both.  Exits with
    code 130 after a Ctrl-C (the checkpoint is written by :func:`fit`).
    """
    from snnasr.lang import load_lang

    recipe_dir = Path(recipe_dir)
    cfg = load_config(config_path, ([f"model.arch={arch}"] if arch else []) + list(overrides))
    exp_dir = recipe_dir / "exp" / (exp_name or cfg.model.arch)
    check_exp_dir(exp_dir, resume)
    lang = load_lang(recipe_dir / "data" / "lang")
    if cfg.task == "utterance":
        if not lang.utterance_level:
            raise DataError(
                f"{lang.dir}/labels.yaml: this recipe has no utterance labels (utterance_level); "
                f"use task: frame, or a corpus whose prep writes them (snnasr prep fsdd)"
            )
        level = cfg.data.label_level or lang.utterance_level
    else:
        level = cfg.data.label_level or lang.default
        lang.symbols(level)  # unknown level -> DataError listing the levels
    dirs = [
        _check_set(recipe_dir, name, role, level, cfg.task)
        for name, role in ((cfg.data.train_set, "train"), (cfg.data.dev_set, "dev"))
    ]
    from snnasr.dataset import UtteranceDataset

    sets = [
        UtteranceDataset(d, level=level, norm_vars=cfg.data.norm_vars, context=cfg.data.context, task=cfg.task)
        for d in dirs
    ]
    try:
        with distributed.session(device) as dev:  # joins torchrun's process group, if launched so
            return fit(cfg, sets[0], sets[1], exp_dir, resume=resume, device=dev)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 says it once
            raise SystemExit(130) from None
        if checkpoints(exp_dir):
            words = ["snnasr", "train"] + (["--arch", arch] if arch else [])
            words += ["--config", str(config_path)] if config_path is not None else []
            words += ["--exp", exp_dir.name, "--resume"] + (["--device", device] if device else [])
            words += ["-d", str(recipe_dir), *overrides]
            launcher = " (under the same torchrun launcher)" if distributed.launched() else ""
            click.echo(f"snnasr train: interrupted; continue with: {shlex.join(words)}{launcher}", err=True)
        else:
            click.echo("snnasr train: interrupted before the first checkpoint; nothing to resume", err=True)
        raise SystemExit(130) from None
