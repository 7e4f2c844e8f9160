"""Sparse, asynchronous checkpoints: ``checkpoints/last`` every ``runtime.checkpoint_every`` epochs.

:class:`CheckpointSaver` decides when the epoch loop's checkpoints reach the disk, never what they hold:

* ``checkpoints/best`` is still chosen every epoch. When the monitored figure improves, :meth:`keep_best`
  copies the weights (a CPU snapshot; on CUDA, pinned host buffers) and the val predictions into memory;
  they are written at the next save point, before ``last``, so ``best`` is always the epoch with the lowest
  val MAE (val loss) exactly as with a save every epoch.
* ``checkpoints/last`` is written every k epochs and always at the last epoch (:meth:`due`), and on a
  pre-emption signal (:meth:`save_last` with ``wait=True``).
* With k > 1 the write is asynchronous: the state is snapshotted synchronously (every tensor cloned to the
  host), then written, hashed and swapped into place (:func:`~learner.training.checkpoint.save_checkpoint`)
  by a background thread while training goes on. The next save, the end of training and every exception or
  signal path join the previous write first; a write that failed raises its one-line
  :class:`~learner.errors.CheckpointError` (e.g. "no space left on device") in the training thread at
  that join.
* With k = 1 (the default) every save is synchronous, in the same order as always: ``best`` (when
  improved), the val predictions, ``last``; the kill tests' fault points arrive exactly where they did.

A kill between save points loses at most k − 1 epochs: ``--resume`` continues from the last written
``last`` (whose history and best row agree with ``best`` on disk, since ``best`` is written first) and the
continuation is bit-identical to a run never interrupted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import nn

from learner.timing import stage
from learner.training.checkpoint import CheckpointMeta, save_checkpoint

log = logging.getLogger(__name__)

Weights = dict[str, torch.Tensor] | nn.Module
"""What :func:`save_checkpoint` writes: a host snapshot of a state dict, or the model itself."""


def host_snapshot(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts / lists / tuples of tensors and plain values) whose tensors are cloned
    to the host: CPU tensors cloned, CUDA tensors copied into fresh pinned buffers (one synchronisation at
    the end). Shared objects stay shared (the history's best row is the best row)."""
    memo: dict[int, Any] = {}
    on_cuda = False

    def copy(value: Any) -> Any:
        nonlocal on_cuda
        if id(value) in memo:
            return memo[id(value)]
        if isinstance(value, torch.Tensor):
            if value.device.type == "cuda":
                on_cuda = True
                out: Any = torch.empty(value.shape, dtype=value.dtype, pin_memory=True)
                out.copy_(value.detach(), non_blocking=True)
            else:
                out = value.detach().clone()
        elif isinstance(value, dict):
            out = {key: copy(item) for key, item in value.items()}
        elif isinstance(value, list):
            out = [copy(item) for item in value]
        elif isinstance(value, tuple):
            out = tuple(copy(item) for item in value)
        else:
            return value  # numbers, strings, None: immutable
        memo[id(value)] = out
        return out

    snapshot = copy(obj)
    if on_cuda:
        torch.cuda.synchronize()  # the pinned copies are complete before another thread reads them
    return snapshot


class CheckpointWriter:
    """At most one checkpoint write in flight: :meth:`submit` runs a job (in a background thread when
    ``asynchronous``) after joining the previous one; :meth:`join` waits for it and raises its error."""

    def __init__(self, *, asynchronous: bool) -> None:
        self.asynchronous = asynchronous
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], None], *, wait: bool = False) -> None:
        """Join the previous write, then run ``job``: now when synchronous or ``wait``, else in a thread."""
        self.join()
        if not self.asynchronous or wait:
            job()
            return

        def run() -> None:
            try:
                job()
            except BaseException as exc:  # handed to the training thread at the next join
                self._error = exc

        self._thread = threading.Thread(target=run, name="checkpoint-writer")
        self._thread.start()

    def join(self) -> None:
        """Wait for the write in flight; raise what it raised (a one-line CheckpointError)."""
        if self._thread is not None:
            with stage("checkpoints"):  # waiting for a write is checkpoint time in the stage table
                self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error


class CheckpointSaver:
    """When the epoch loop's checkpoints are written (the module docstring): ``every`` = k epochs.

    Use as a context manager around the loop: leaving it joins the write in flight (on an exception, a
    failed write is logged and the original exception goes on).
    """

    def __init__(self, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"checkpoint_every must be at least 1, not {every}")
        self.every = every
        self.writer = CheckpointWriter(asynchronous=every > 1)
        self._best: tuple[Path, Weights, CheckpointMeta] | None = None
        self._after_best: Callable[[], None] | None = None

    def due(self, epoch: int, epochs: int) -> bool:
        """Whether ``last`` is written after ``epoch`` (1-based) of ``epochs``: every k-th, and the last."""
        return epoch % self.every == 0 or epoch >= epochs

    def keep_best(
        self,
        best_dir: Path,
        model: nn.Module,
        meta: CheckpointMeta,
        after: Callable[[], None] | None = None,
    ) -> None:
        """The model is the new best: keep its weights (a host snapshot, unless every epoch is saved
        synchronously and the next save comes before any update) for the next save point; ``after``
        (writing the val predictions) runs once ``best_dir`` is written."""
        deferred = self.every > 1 or self.writer.asynchronous
        weights: Weights = host_snapshot(model.state_dict()) if deferred else model
        self._best = (best_dir, weights, meta)
        self._after_best = after

    def save_last(
        self,
        last_dir: Path,
        model: nn.Module,
        meta: CheckpointMeta,
        train_state: dict[str, Any],
        *,
        wait: bool = False,
    ) -> None:
        """Write the kept best (if any) then ``last_dir`` (weights and ``train_state``); in the background
        unless synchronous or ``wait`` (pre-emption: the checkpoint must be complete before the signal)."""
        background = self.writer.asynchronous and not wait
        weights: Weights = host_snapshot(model.state_dict()) if background else model
        state = host_snapshot(train_state) if background else train_state
        best, after, self._best, self._after_best = self._best, self._after_best, None, None

        def job() -> None:
            if best is not None:  # best before last: a crash between redoes both
                save_checkpoint(*best)
                if after is not None:
                    after()
            save_checkpoint(last_dir, weights, meta, train_state=state)

        self.writer.submit(job, wait=wait)

    def join(self) -> None:
        """Wait for the write in flight; raise its error."""
        self.writer.join()

    def __enter__(self) -> CheckpointSaver:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            self.join()
            return
        try:
            self.join()  # the write in flight completes before the run is left (or deleted)
        except Exception as failed:  # the original exception matters more
            log.error("%s", failed)
