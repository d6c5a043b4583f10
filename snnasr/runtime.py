"""What a training run needs from its process: the device, reproducible RNG state, and signals.

Kept apart from the training loop so that the loop reads as the recipe.  Exact resume rests on
:func:`rng_state`/:func:`set_rng_state` (checkpointed with the model); a clean stop rests on
:func:`deferred_stop`: SIGINT (Ctrl-C) and SIGTERM (``kill``, a batch scheduler's time limit)
only *request* a stop, which the loop honours at the next step boundary, so the step in flight
completes and the checkpoint written after it is consistent.  ``kill -9`` cannot be caught;
atomic checkpoint writes make the last complete checkpoint the resume point then.
"""

from __future__ import annotations

import contextlib
import random
import signal
import sys
import threading
from collections.abc import Iterator

import numpy as np
import torch

from snnasr.io import ConfigError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; asking for absent CUDA is a ConfigError."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available; use --device cpu")
    return device


def rng_state() -> dict:
    """Every RNG a training step draws from (torch, CUDA when in use, NumPy, Python)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    torch.backends.cudnn.benchmark = False  # autotuning picks kernels nondeterministically


class StopRequest:
    """Set by the first SIGINT/SIGTERM; the training loop stops at the next step boundary."""

    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name once requested

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_stop() -> Iterator[StopRequest]:
    """Turn SIGINT/SIGTERM into a stop request; a second one aborts at once (KeyboardInterrupt).

    Signals that are ignored on entry (SIGINT under ``nohup`` or in a background job) stay
    ignored, so a background run is not stopped by a terminal's Ctrl-C.  Outside the main
    thread signals cannot be handled; the request then never comes.
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = signal.Signals(signum).name
        print(
            f"\n{stop.requested}: finishing this step, then writing a checkpoint (Ctrl-C again aborts now)",
            file=sys.stderr,
        )

    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
