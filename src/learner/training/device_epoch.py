"""The epoch of the device-data path (``data.device_data``): batches made on the device and a training
step that never waits for it.

The loader path (:func:`~learner.training.epoch.train_one_epoch`) reads the loss and each term with
``.item()``, checks the loss and the gradients with ``bool()`` and sets a Python-float LR every step:
each a host sync, which keeps a GPU idle between steps and forbids CUDA-graph capture. Here, per step:

* the batch comes from :class:`~learner.data.clip_store.DeviceBatches` (no loader, no host copy);
* the LR is a tensor on the device, read from a table of every step's LR (:func:`lr_table`, the run's
  own schedule) at the device's step counter, for a fused Adam / AdamW that takes a tensor LR
  (:func:`sync_free_optimizer`);
* a non-finite loss or gradient does not raise: it sets ``found_inf``, with which the fused optimiser skips
  the update (parameters, moments and its step count untouched, as ``GradScaler`` skips an fp16 step), and
  the first such step is recorded on the device;
* the loss, its terms and the step count are summed on the device (:class:`DeviceCounters`).

At the epoch's end one read brings all of it to the host: the metrics row, and a
:class:`~learner.errors.NonFiniteLossError` naming the first non-finite step, raised before validation and
checkpoints (so ``checkpoints/last`` stays the previous epoch's, as with the loader path). Later steps of
that epoch ran on (their updates mostly skipped); BatchNorm statistics they touched are not saved.
Validation then predicts the val clips made once on the device (:class:`DeviceRun`'s ``val``,
:func:`~learner.training.validation.predict_clips`) with one more transfer, not one per batch.

Torch 2.13: ``capturable=True`` Adam is for CUDA / XPU / HPU / XLA parameters only (a CPU parameter
fails its check), while ``fused=True`` runs on CPU and CUDA and takes a tensor LR and ``found_inf``; so
the groups are fused on every device, and capturable too on CUDA. With fp16 loss scaling (GPUs without
bf16) the ``GradScaler`` keeps its own skip of non-finite gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import torch
from rich.progress import Progress
from torch import Tensor, nn

from learner.config import Config
from learner.data.augment import ClipAugment
from learner.data.cache import ScanCache
from learner.data.clip_store import ClipStore, DeviceBatches, EvalClips
from learner.data.manifest import ScanRecord
from learner.errors import NonFiniteLossError
from learner.training.epoch import Trainee, batch_loss, progress_bar
from learner.training.faults import fault_point
from learner.training.finite import finite_gradient_flag, non_finite_message
from learner.training.grad_share import contrastive_gradient_norms, gradient_share
from learner.training.loaders import Scans
from learner.training.preemption import EpochPosition, Preemption, StopCheck

T = TypeVar("T")
P = ParamSpec("P")

_LOSS, _GRADIENT = 1, 2  # what was non-finite at the first bad step (DeviceCounters.bad_what)


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


def sync_free_optimizer(optimizer: torch.optim.Optimizer, device: torch.device) -> Tensor:
    """Turn every group of an Adam / AdamW ``optimizer`` (as built, or as a checkpoint restored it) into
    the fused implementation with one shared LR tensor on ``device``; returns that tensor (float32, which
    the fused CUDA kernel reads), holding the groups' current LR. Step counts move to the parameters'
    device, where the fused kernel keeps them.

    Raises:
        TypeError: not an Adam / AdamW (the only optimisers of ``optim.optimizer``).
    """
    if not isinstance(optimizer, torch.optim.Adam):  # AdamW subclasses Adam in torch 2.13
        raise TypeError(f"the device-data step needs Adam or AdamW, got {type(optimizer).__name__}")
    lr = torch.tensor(float(optimizer.param_groups[0]["lr"]), dtype=torch.float32, device=device)
    for group in optimizer.param_groups:
        group.update(lr=lr, fused=True, foreach=False, capturable=device.type == "cuda")
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "step" in state:
                state["step"] = state["step"].to(device=param.device, dtype=torch.float32)
    optimizer._step_supports_amp_scaling = True  # as fused Adam sets it
    return lr


def lr_table(lr_at: Callable[[int], float], steps: int, device: torch.device) -> Tensor:
    """Every step's LR, ``(steps,)`` float32 on ``device``: ``lr_at(s)`` at index s (0-based updates)."""
    return torch.tensor([lr_at(step) for step in range(steps)], dtype=torch.float32, device=device)


@dataclass
class DeviceCounters:
    """What the steps of an epoch keep on the device, read once at its end (:meth:`read`).

    Attributes:
        step: () int64, optimiser steps taken so far in the run (skipped updates included).
        first_bad: () int64, the first step (counted from 1, as the loader path's errors count) whose loss
            or gradient was non-finite; 0 while none was.
        bad_what: () int64, what was non-finite at ``first_bad``: 1 the loss, 2 a gradient.
        names: the metrics row's keys the sums go to (``train_loss``, ``train_<term>``), from the first step.
        sums: (len(names),) float64, the epoch's sums of the loss and its terms; None before a step.
        start_sums: the sums an interrupted epoch had reached (its :class:`EpochPosition`).
        norms: the two gradient norms of the epoch's first batch (:func:`contrastive_gradient_norms`).
        share: the contrastive gradient share of an interrupted epoch's first batch, if it had one.
    """

    step: Tensor
    first_bad: Tensor
    bad_what: Tensor
    names: list[str] = field(default_factory=list)
    sums: Tensor | None = None
    start_sums: dict[str, float] = field(default_factory=dict)
    norms: Tensor | None = None
    share: float | None = None

    @classmethod
    def starting(cls, step: int, device: torch.device, start: EpochPosition | None = None) -> DeviceCounters:
        """Counters at run step ``step`` (or where an interrupted epoch stopped, ``start``)."""
        zero = torch.zeros((), dtype=torch.int64, device=device)
        counters = cls(torch.tensor(step, dtype=torch.int64, device=device), zero, zero.clone())
        if start is not None:
            counters.start_sums, counters.share = dict(start.sums), start.share
        return counters

    def add(self, values: dict[str, Tensor]) -> None:
        """Add one step's ``train_loss`` and ``train_<term>`` values (detached scalars) to the sums."""
        if self.sums is None:
            self.names = list(values)
            initial = [self.start_sums.get(name, 0.0) for name in self.names]
            self.sums = torch.tensor(initial, dtype=torch.float64, device=self.step.device)
        self.sums += torch.stack([values[name] for name in self.names]).to(torch.float64)

    def flag(self, what: Tensor) -> None:
        """Record ``what`` (() int64: 0 finite, 1 loss, 2 gradient) for the step just counted, if it is the
        epoch's first non-finite one."""
        first = (self.first_bad == 0) & (what > 0)
        self.first_bad = torch.where(first, self.step, self.first_bad)
        self.bad_what = torch.where(first, what, self.bad_what)

    def read(self) -> EpochReading:
        """Everything on the device, brought to the host in one transfer (the epoch's one sync)."""
        parts = [self.step, self.first_bad, self.bad_what]
        packed = torch.cat([torch.stack(parts).to(torch.float64), *self._optional()]).tolist()
        step, first_bad, bad_what = (int(v) for v in packed[:3])
        rest = packed[3:]
        sums = dict(self.start_sums)
        if self.sums is not None:
            sums = dict(zip(self.names, rest[: len(self.names)], strict=True))
            rest = rest[len(self.names) :]
        share = gradient_share(*rest) if self.norms is not None else self.share
        return EpochReading(step, first_bad, bad_what, sums, share)

    def _optional(self) -> list[Tensor]:
        tensors = [] if self.sums is None else [self.sums]
        return tensors + ([] if self.norms is None else [self.norms.to(torch.float64)])


@dataclass(frozen=True)
class EpochReading:
    """:class:`DeviceCounters` on the host: ``step``, the first non-finite step (0: none) and what it was,
    the loss sums by row key, the contrastive gradient share (None: not measured)."""

    step: int
    first_bad: int
    bad_what: int
    sums: dict[str, float]
    share: float | None


def sync_free_step(
    trainee: Trainee,
    clips: Tensor,
    scores: Tensor,
    counters: DeviceCounters,
    lrs: Tensor,
    lr: Tensor,
    *,
    two_views: bool,
    grad_clip: float | None = None,
    measure_share: bool = False,
) -> None:
    """One optimiser step with no host sync: LR ``lrs[counters.step]`` into ``lr`` (the optimiser's tensor
    LR), the objective on the batch (:func:`~learner.training.epoch.batch_loss`), backward, optional
    clipping, then the update, skipped when the loss or a gradient is non-finite (recorded in ``counters``).

    Args:
        clips, scores: the batch on the device, as :meth:`DeviceBatches.batch` makes it.
        counters: the epoch's device counters (updated in place).
        lrs: every step's LR (:func:`lr_table`); lr: the optimiser's LR tensor (:func:`sync_free_optimizer`).
        two_views: clips are (b, 2, T, C, H, W) for a two-view objective.
        grad_clip: clip the gradient norm to this (``optim.grad_clip``).
        measure_share: keep the two gradient norms of :func:`contrastive_gradient_norms` (the epoch's first
            batch) in ``counters.norms``.
    """
    model, optimizer, scaler = trainee.model, trainee.optimizer, trainee.scaler
    index = counters.step.clamp(max=lrs.shape[0] - 1).view(1)  # (1,): this update's 0-based step
    lr.copy_(torch.index_select(lrs, 0, index).view(()))
    out = batch_loss(trainee, clips, scores, two_views=two_views)
    if measure_share:
        counters.norms = contrastive_gradient_norms(model, out)
    counters.step += 1
    bad_loss = ~torch.isfinite(out.total.detach())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(out.total).backward()  # type: ignore[no-untyped-call]  # untyped in torch
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    bad_gradient = torch.zeros_like(bad_loss)
    if scaler.is_enabled():  # fp16: the scaler skips non-finite gradients itself
        scaler.step(optimizer)
        scaler.update()
    else:
        finite = finite_gradient_flag(model)
        if finite is not None:
            bad_gradient = ~finite
        optimizer.found_inf = (bad_loss | bad_gradient).to(torch.float32)  # type: ignore[attr-defined]
        try:
            optimizer.step()  # fused Adam: no update where found_inf is 1
        finally:
            del optimizer.found_inf  # type: ignore[attr-defined]
    zero = torch.zeros((), dtype=torch.int64, device=bad_loss.device)
    counters.flag(torch.where(bad_loss, zero + _LOSS, torch.where(bad_gradient, zero + _GRADIENT, zero)))
    counters.add({"train_loss": out.total.detach()} | {f"train_{k}": v for k, v in out.terms.items()})


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
    trainee: Trainee,
    batches: DeviceBatches,
    epoch: int,
    step: int,
    lrs: Tensor,
    lr: Tensor,
    *,
    steps: int,
    last_dir: Path,
    grad_clip: float | None = None,
    progress: Progress | None = None,
    epochs: int | None = None,
    start: EpochPosition | None = None,
    on_step: StopCheck | None = None,
    stop_requested: Callable[[], bool] | None = None,
) -> Generator[None, None, dict[str, float]]:
    """Epoch ``epoch`` of Alg. 1 on the device: :func:`~learner.training.epoch.train_one_epoch`'s updates
    and metrics row, from :class:`DeviceBatches` and :func:`sync_free_step`, with one host sync at the end.

    A generator that yields after every optimiser step, so that runs side by side in one process can take
    turns step by step (:mod:`learner.training.side_by_side`); a lone run drains it
    (:func:`train_device_epoch`). Its return value (``StopIteration.value``) is the metrics row.

    Args:
        lrs, lr: every step's LR (:func:`lr_table`) and the optimiser's LR tensor
            (:func:`sync_free_optimizer`).
        steps: batches per epoch.
        start: where a pre-empted run stopped: for this epoch, go on from there (batches are pure functions
            of (seed, epoch, index), so the same ones follow).
        on_step, stop_requested: after a step, when ``stop_requested()`` (a pre-emption signal, read on the
            host), ``on_step`` gets the epoch's position (a sync, only then).

    Returns:
        The metrics row: ``epoch``, ``step``, ``lr`` (of its last update), ``train_loss`` and
        ``train_<term>`` (means over its steps), ``grad_share_contrastive`` when measured.

    Raises:
        NonFiniteLossError: a loss or gradient of the epoch was NaN/inf (names the first such step).
    """
    trainee.network.train()
    progress = progress_bar(enabled=False) if progress is None else progress
    task = progress.add_task(f"epoch {epoch}/{epochs}", total=steps, loss=math.nan)
    first = 0
    if start is not None and start.epoch == epoch:
        first, step = start.index, start.step
        progress.update(task, advance=first)
    else:
        start = None
    counters = DeviceCounters.starting(step, trainee.device, start)
    for index in range(first, steps):
        clips, scores = batches.batch(epoch, index)
        measure = index == 0 and counters.share is None
        sync_free_step(
            trainee, clips, scores, counters, lrs, lr,
            two_views=batches.two_views, grad_clip=grad_clip, measure_share=measure,
        )  # fmt: skip
        fault_point("step")
        progress.update(task, advance=1)
        if on_step is not None and stop_requested is not None and stop_requested():
            reading = counters.read()
            last_lr = float(lrs[min(reading.step, len(lrs)) - 1])
            on_step(EpochPosition(epoch, index + 1, reading.step, reading.sums, reading.share, last_lr))
        yield
    reading = counters.read()
    if reading.first_bad:
        what = "loss" if reading.bad_what == _LOSS else "gradient"
        message = non_finite_message(what, epoch, reading.first_bad, last_dir)
        raise NonFiniteLossError(
            f"{message} (the update was skipped on the device; found at the epoch's end)"
        )
    last_lr = float(lrs[min(reading.step, len(lrs)) - 1]) if reading.step > 0 else math.nan
    row = {"epoch": epoch, "step": reading.step, "lr": last_lr}
    row |= {k: v / steps for k, v in reading.sums.items()}
    return row if reading.share is None else row | {"grad_share_contrastive": reading.share}


train_device_epoch = drained(device_epoch_steps)
"""A whole device-data epoch (:func:`device_epoch_steps` drained): its metrics row."""


@dataclass(frozen=True)
class DeviceRun:
    """The device-data path of a whole pretraining: the train batches, every step's LR, the optimiser's LR
    tensor, the pre-emption signals to watch and the val clips (None for a two-view objective, whose
    validation stays on its loader) (:func:`start_device_run`)."""

    batches: DeviceBatches
    lrs: Tensor
    lr: Tensor
    steps: int
    preemption: Preemption | None = None
    val: EvalClips | None = None

    def epoch_steps(
        self, trainee: Trainee, *, epoch: int, step: int, **options: Any
    ) -> Generator[None, None, dict[str, float]]:
        """:func:`device_epoch_steps` with this run's parts; ``options``: its keyword arguments (those of
        :func:`~learner.training.epoch.train_one_epoch`)."""
        preemption = self.preemption
        return device_epoch_steps(
            trainee, self.batches, epoch, step, self.lrs, self.lr, steps=self.steps,
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
    (:meth:`EvalClips.from_store`; a label objective only) and the optimiser made sync-free; call it after
    the optimiser state was restored (a resumed run's groups come back as they were saved)."""
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
    optimizer_lr = sync_free_optimizer(trainee.optimizer, device)
    return DeviceRun(batches, lrs, optimizer_lr, steps_per_epoch, preemption, val)
