"""Run by tests/test_distributed.py under ``torch.distributed.run``: ``snnasr train`` on a recipe.

``ddp_worker.py RECIPE EXP [--resume] [--stop-rank R --stop-before N] [OVERRIDE ...]``: with
``--stop-before N``, rank R sends itself SIGTERM during its minibatch N (1-based over the run),
as a scheduler's preemption would; all ranks then stop after that step and checkpoint once.
"""

from __future__ import annotations

import os
import signal
import sys

import snnasr.train as T


def main(argv: list[str]) -> int:
    recipe, exp, *rest = argv
    resume = "--resume" in rest
    rest = [a for a in rest if a != "--resume"]
    stop_rank = stop_at = None
    if "--stop-before" in rest:
        i = rest.index("--stop-rank")
        stop_rank, stop_at = int(rest[i + 1]), int(rest[rest.index("--stop-before") + 1])
        rest = [
            a
            for j, a in enumerate(rest)
            if j not in (i, i + 1, rest.index("--stop-before"), rest.index("--stop-before") + 1)
        ]
    if stop_at is not None and int(os.environ["RANK"]) == stop_rank:
        real, calls = T._train_step, {"n": 0}

        def step(*args, **kw):
            calls["n"] += 1
            if calls["n"] == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return real(*args, **kw)

        T._train_step = step
    try:
        T.run_training(recipe, arch="gru", exp_name=exp, resume=resume, device="cpu", overrides=rest)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
