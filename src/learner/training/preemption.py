"""Pre-emption in a SLURM job: SIGTERM or SIGUSR2 → a checkpoint after the step under way, then the signal.

SLURM sends SIGTERM to every task of a job on ``scancel``, on pre-emption and at its time limit, and SIGKILL
``KillWait`` seconds later (30 s by default); submitit asks SLURM for SIGUSR2 ``signal_delay_s`` before the
limit (``--signal=USR2@90``) and requeues a job from its SIGUSR2 handler. Inside a SLURM job
(``SLURM_JOB_ID`` set) :func:`checkpoint_on_signal` holds both signals while pretraining runs: the signal
is only recorded, the epoch loop finishes the optimiser step under way, writes ``checkpoints/last`` with its
place in the epoch (:class:`EpochPosition`; ``--resume`` continues from there bit-identically) and then hands
the signal to whoever handled it before (:meth:`Preemption.hand_over`): the CLI's handler (a SIGTERM ends
the command as Ctrl-C does, keeping the checkpointed run), submitit's (SIGUSR2: requeue and exit), or the
default action. A handler that returns (submitit ignores SIGTERM) lets training go on.

Outside a SLURM job nothing changes: SIGTERM stays Ctrl-C at once (``learner.cli``), a run without a
checkpoint yet is removed. With several processes every rank stops at the same step (the request is
all-reduced after each step) and rank 0 writes the checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

PREEMPTION_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR2)
"""What SLURM (``scancel``, pre-emption, time limit) and submitit (before the time limit) send."""


def in_slurm_job() -> bool:
    """This process runs inside a SLURM job (a batch script or an ``srun`` task)."""
    return "SLURM_JOB_ID" in os.environ


@dataclass(frozen=True)
class EpochPosition:
    """Where a pre-empted epoch stopped: ``index`` of its ``steps`` batches done, optimiser updates so far
    (``step``), the running sums of its metrics row, the contrastive gradient share of its first batch and
    the LR of its last update: what :func:`~learner.training.epoch.train_one_epoch` needs to go on."""

    epoch: int
    index: int
    step: int
    sums: dict[str, float] = field(default_factory=dict)
    share: float | None = None
    lr: float = float("nan")

    def to_state(self) -> dict[str, Any]:
        """Plain values for ``train_state.pt``."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> EpochPosition | None:
        return None if state is None else cls(**state)


@dataclass
class Preemption:
    """The signal received while :func:`checkpoint_on_signal` held it (None: none), and the handlers it held
    them from."""

    enabled: bool = False
    received: int | None = None
    previous: dict[int, Any] = field(default_factory=dict)

    def requested(self) -> int | None:
        """The signal to stop for, agreed by every rank (the largest one any rank received), else None."""
        if not self.enabled:
            return None
        received = self.received or 0
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = torch.tensor([received], dtype=torch.long)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            received = int(flag.item())
        return received or None

    def hand_over(self, signum: int) -> None:
        """After the checkpoint: run the handler ``signum`` had before (it may raise or exit); with the
        default action, end the process as that signal would have; an ignored signal, or a handler that
        returns, lets training go on."""
        self.received = None
        handler = self.previous.get(signum, signal.SIG_DFL)
        if callable(handler):
            handler(signum, None)
        elif handler == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)


@contextmanager
def checkpoint_on_signal(enabled: bool | None = None) -> Iterator[Preemption]:
    """Record :data:`PREEMPTION_SIGNALS` instead of acting on them for the block (``enabled``: default, in a
    SLURM job only; never outside the main thread); the old handlers are back afterwards."""
    enabled = in_slurm_job() if enabled is None else enabled
    state = Preemption(enabled=enabled and threading.current_thread() is threading.main_thread())
    if not state.enabled:
        yield state
        return

    def record(signum: int, frame: FrameType | None) -> None:
        state.received = signum

    state.previous = {int(s): signal.getsignal(s) for s in PREEMPTION_SIGNALS}
    for number in PREEMPTION_SIGNALS:
        signal.signal(number, record)
    try:
        yield state
    finally:
        for held, handler in state.previous.items():
            signal.signal(held, handler)


StopCheck = Callable[[EpochPosition], None]
"""Called after every optimiser step with the epoch's position: checkpoints and hands a signal over."""
