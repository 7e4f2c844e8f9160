"""The epoch of the device-data path (``data.device_data``): batches made on the device and a training
step that never waits for it.

Per step the batch comes from :class:`~learner.data.clip_store.DeviceBatches` (no loader, no host copy)
and the update is the run's :class:`~learner.training.sync_free.DeviceStep` (the sync-free step of
:mod:`learner.training.sync_free`, optionally replayed from a CUDA graph: ``runtime.cuda_graph``).

At the epoch's end one read brings the run's device counters to the host: the metrics row, and a
:class:`~learner.errors.NonFiniteLossError` naming the first non-finite step, raised before validation and
checkpoints (so ``checkpoints/last`` stays the previous epoch's, as with the loader path). A pre-emption
stop mid-epoch reads them too and raises that error instead of writing its checkpoint. Later steps of
that epoch ran on and updated (only a non-finite step's update is skipped); none of it is saved.
Validation then predicts the val clips made once on the device (:class:`DeviceRun`'s ``val``,
:func:`~learner.training.validation.predict_clips`) with one more transfer, not one per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import torch
from rich.progress import Progress

from learner.config import Config
from learner.data.augment import ClipAugment
from learner.data.cache import ScanCache
from learner.data.clip_store import ClipStore, DeviceBatches, EvalClips
from learner.data.manifest import ScanRecord
from learner.errors import ConfigError, NonFiniteLossError
from learner.training.epoch import Trainee, progress_bar
from learner.training.faults import fault_point
from learner.training.finite import non_finite_message
from learner.training.loaders import Scans
from learner.training.preemption import EpochPosition, Preemption, StopCheck
from learner.training.step_graph import CudaGraphRecorder
from learner.training.sync_free import (
    LOSS,
    DeviceCounters,
    DeviceStep,
    EpochReading,
    lr_table,
    sync_free_optimizer,
)

T = TypeVar("T")
P = ParamSpec("P")


def device_batches(
    records: list[ScanRecord],
    cache: ScanCache,
    device: torch.device,
    *,
    frames: int,
    channels: int,
    batch_size: int,
    augment: ClipAugment | None,
    seed: int,
    two_views: bool,
) -> DeviceBatches:
    """The train scans loaded once onto ``device`` (:meth:`ClipStore.from_cache`) and their batches."""
    store = ClipStore.from_cache(records, cache, device=device)
    return DeviceBatches(
        store,
        frames=frames,
        channels=channels,
        batch_size=batch_size,
        augment=augment,
        seed=seed,
        two_views=two_views,
    )


def drain(steps: Generator[None, None, T]) -> T:
    """Run ``steps`` (a generator that yields after each optimiser step) to its end; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]  # StopIteration.value is untyped


def drained(steps: Callable[P, Generator[None, None, T]]) -> Callable[P, T]:
    """``steps`` (a generator function) as a function that runs it to its end (:func:`drain`)."""

    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return drain(steps(*args, **kwargs))

    return run


def device_epoch_steps(
    device_step: DeviceStep,
    batches: DeviceBatches,
    epoch: int,
    step: int,
    *,
    steps: int,
    last_dir: Path,
    progress: Progress | None = None,
    epochs: int | None = None,
    start: EpochPosition | None = None,
    on_step: StopCheck | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> Generator[None, None, dict[str, float]]:
    """Epoch ``epoch`` of Alg. 1 on the device: :func:`~learner.training.epoch.train_one_epoch`'s updates
    and metrics row, from :class:`DeviceBatches` and the run's :class:`DeviceStep`, with host syncs only at
    the end (the counters in one transfer, then the last LR).

    A generator that yields after every optimiser step, so that runs side by side in one process can take
    turns step by step (:mod:`learner.training.side_by_side`); a lone run drains it
    (:func:`train_device_epoch`). Its return value (``StopIteration.value``) is the metrics row.

    Args:
        device_step: the run's step (its counters restart here, in place, at run step ``step``).
        steps: batches per epoch.
        start: where a pre-empted run stopped: for this epoch, go on from there (batches are pure functions
            of (seed, epoch, index), so the same ones follow).
        on_step, stop_requested: after a step, when ``stop_requested()`` (a pre-emption signal, read on the
            host), ``on_step`` gets the epoch's position (a sync, only then), unless a step so far was
            non-finite: that raises first, so no pre-emption checkpoint keeps its skipped update.

    Returns:
        The metrics row: ``epoch``, ``step``, ``lr`` (of its last update), ``train_loss`` and
        ``train_<term>`` (means over its steps), ``grad_share_contrastive`` when measured.

    Raises:
        NonFiniteLossError: a loss or gradient of the epoch was NaN/inf (names the first such step), at
            the epoch's end or, before ``on_step``, at a pre-emption stop.
    """
    device_step.trainee.network.train()
    progress = progress_bar(enabled=False) if progress is None else progress
    task = progress.add_task(f"epoch {epoch}/{epochs}", total=steps, loss=math.nan)
    first = 0
    if start is not None and start.epoch == epoch:
        first, step = start.index, start.step
        progress.update(task, advance=first)
    else:
        start = None
    counters, lrs = device_step.counters, device_step.lrs
    counters.restart(step, start)
    for index in range(first, steps):
        clips, scores = batches.batch(epoch, index)
        device_step(clips, scores, measure_share=index == 0 and counters.share is None)
        fault_point("step")
        progress.update(task, advance=1)
        if on_step is not None and stop_requested is not None and stop_requested():
            reading = counters.read()
            # The run stops here: a skipped update must fail it now, as the loader path's step would have,
            # and not be checkpointed (a resumed epoch restarts the counters and would never report it).
            raise_non_finite(reading, epoch, last_dir, found="at the pre-emption stop")
            last_lr = float(lrs[min(reading.step, len(lrs)) - 1])
            on_step(EpochPosition(epoch, index + 1, reading.step, reading.sums, reading.share, last_lr))
        yield
    reading = counters.read()
    raise_non_finite(reading, epoch, last_dir, found="at the epoch's end")
    last_lr = float(lrs[min(reading.step, len(lrs)) - 1]) if reading.step > 0 else math.nan
    row = {"epoch": epoch, "step": reading.step, "lr": last_lr}
    row |= {k: v / steps for k, v in reading.sums.items()}
    return row if reading.share is None else row | {"grad_share_contrastive": reading.share}


def raise_non_finite(reading: EpochReading, epoch: int, last_dir: Path, *, found: str) -> None:
    """Return when ``reading`` (epoch ``epoch``'s device counters on the host) recorded no non-finite step.

    Raises:
        NonFiniteLossError: naming the epoch's first non-finite step, whose update was skipped, and where
            it was ``found`` (the epoch's end, a pre-emption stop).
    """
    if reading.first_bad:
        what = "loss" if reading.bad_what == LOSS else "gradient"
        message = non_finite_message(what, epoch, reading.first_bad, last_dir)
        raise NonFiniteLossError(f"{message} (the update was skipped on the device; found {found})")


train_device_epoch = drained(device_epoch_steps)
"""A whole device-data epoch (:func:`device_epoch_steps` drained): its metrics row."""


@dataclass(frozen=True)
class DeviceRun:
    """The device-data path of a whole pretraining: the train batches, the run's step, the pre-emption
    signals to watch and the val clips (None for a two-view objective, whose validation stays on its
    loader) (:func:`start_device_run`)."""

    batches: DeviceBatches
    device_step: DeviceStep
    steps: int
    preemption: Preemption | None = None
    val: EvalClips | None = None

    def epoch_steps(
        self, *, epoch: int, step: int, **options: Any
    ) -> Generator[None, None, dict[str, float]]:
        """:func:`device_epoch_steps` with this run's parts; ``options``: its other keyword arguments."""
        preemption = self.preemption
        return device_epoch_steps(
            self.device_step, self.batches, epoch, step, steps=self.steps,
            stop_requested=None if preemption is None else lambda: preemption.requested() is not None,
            **options,
        )  # fmt: skip


def start_device_run(
    config: Config,
    scans: Scans,
    trainee: Trainee,
    lr_at: Callable[[int], float],
    steps_per_epoch: int,
    *,
    preemption: Preemption | None = None,
) -> DeviceRun:
    """The train scans loaded onto the trainee's device, the val scans' eval clips made there once
    (:meth:`EvalClips.from_store`; a label objective only), the optimiser made sync-free and, with
    ``runtime.cuda_graph``, the step set to be recorded; call it after the optimiser state was restored (a
    resumed run's groups come back as they were saved).

    Raises:
        ConfigError: ``runtime.cuda_graph`` with fp16 loss scaling (its ``GradScaler`` reads each step's
            ``found_inf`` on the host).
    """
    data, device = config.data, trainee.device
    batches = device_batches(
        scans.train, scans.cache, device, frames=data.frames, channels=data.channels,
        batch_size=config.optim.batch_size, augment=ClipAugment.from_config(data), seed=config.seed,
        two_views=scans.two_views,
    )  # fmt: skip
    val = None
    if not scans.two_views:  # the val loader's clips: centre frames, no augmentation
        store = ClipStore.from_cache(scans.val, scans.cache, device=device)
        val = EvalClips.from_store(store, frames=data.frames, channels=data.channels)
    lrs = lr_table(lr_at, config.optim.epochs * steps_per_epoch, device)
    device_step = DeviceStep(
        trainee, lrs, sync_free_optimizer(trainee.optimizer, device), DeviceCounters.starting(0, device),
        two_views=scans.two_views, grad_clip=config.optim.grad_clip,
    )  # fmt: skip
    if config.runtime.cuda_graph:  # the plan checked the rest (plan.check_cuda_graph)
        if trainee.scaler.is_enabled():
            raise ConfigError(
                "runtime.cuda_graph: fp16 loss scaling (this GPU has no bf16) reads every step on the "
                "host; set runtime.amp=false or runtime.cuda_graph=false"
            )
        device_step.graph(CudaGraphRecorder(device))
    return DeviceRun(batches, device_step, steps_per_epoch, preemption, val)
