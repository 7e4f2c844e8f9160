"""The sync-free training step of the device-data path (``data.device_data``): no host sync, so a GPU
never waits between steps and the step can be recorded as a CUDA graph (:mod:`learner.training.step_graph`).

The loader path (:func:`~learner.training.epoch.train_one_epoch`) reads the loss and each term with
``.item()``, checks the loss and the gradients with ``bool()`` and sets a Python-float LR every step:
each a host sync. Here, per step (:func:`sync_free_step`):

* the LR is a tensor on the device, read from a table of every step's LR (:func:`lr_table`, the run's
  own schedule) at the device's step counter, for a fused Adam / AdamW that takes a tensor LR
  (:func:`sync_free_optimizer`);
* a non-finite loss or gradient does not raise: it sets ``found_inf``, with which the fused optimiser skips
  the update (parameters, moments and its step count untouched, as ``GradScaler`` skips an fp16 step), and
  the first such step is recorded on the device;
* the loss, its terms and the step count are summed on the device (:class:`DeviceCounters`), in place,
  and read once at the epoch's end (:meth:`DeviceCounters.read`).

:class:`DeviceStep` is one run's step with its parts bound: the trainee, the LR table and tensor, the
clipping and the counters (kept for the whole run, restarted in place every epoch), optionally replayed
from a CUDA graph (``runtime.cuda_graph``).

Torch 2.13: ``capturable=True`` Adam is for CUDA / XPU / HPU / XLA parameters only (a CPU parameter
fails its check), while ``fused=True`` runs on CPU and CUDA and takes a tensor LR and ``found_inf``; so
the groups are fused on every device, and capturable too on CUDA. With fp16 loss scaling (GPUs without
bf16) the ``GradScaler`` keeps its own skip of non-finite gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from learner.training.epoch import Trainee, batch_loss
from learner.training.finite import finite_gradient_flag
from learner.training.grad_share import contrastive_gradient_norms, gradient_share
from learner.training.preemption import EpochPosition
from learner.training.step_graph import WARMUP_STEPS, GraphedStep, StepRecorder

LOSS, GRADIENT = 1, 2
"""What was non-finite at an epoch's first bad step (:attr:`DeviceCounters.bad_what`)."""


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
    # Fused Adam runs one kernel whether capturable or not, so torch's warning that a capturable optimiser
    # stepping outside a recording is slower (the warm-up steps; runs without runtime.cuda_graph) is moot.
    optimizer._warned_capturable_if_run_uncaptured = True
    return lr


def lr_table(lr_at: Callable[[int], float], steps: int, device: torch.device) -> Tensor:
    """Every step's LR, ``(steps,)`` float32 on ``device``: ``lr_at(s)`` at index s (0-based updates)."""
    return torch.tensor([lr_at(step) for step in range(steps)], dtype=torch.float32, device=device)


@dataclass
class DeviceCounters:
    """What the steps of an epoch keep on the device, read once at its end (:meth:`read`). Its tensors
    are only ever changed in place (a recorded step keeps writing where it wrote when recorded); one set
    serves a whole run, restarted every epoch (:meth:`restart`).

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

    def restart(self, step: int, start: EpochPosition | None = None) -> None:
        """In place, these counters as :meth:`starting` makes them (the names kept from earlier epochs):
        at run step ``step`` or at ``start``, nothing non-finite, the sums at 0 or at ``start``'s."""
        self.step.fill_(step)
        self.first_bad.zero_()
        self.bad_what.zero_()
        self.start_sums, self.share = ({}, None) if start is None else (dict(start.sums), start.share)
        self.norms = None
        if self.sums is not None:
            self._sums_from_start(self.sums)

    def add(self, values: dict[str, Tensor]) -> None:
        """Add one step's ``train_loss`` and ``train_<term>`` values (detached scalars) to the sums."""
        if self.sums is None:
            self.names = list(values)
            self.sums = torch.empty(len(self.names), dtype=torch.float64, device=self.step.device)
            self._sums_from_start(self.sums)
        self.sums += torch.stack([values[name] for name in self.names]).to(torch.float64)

    def _sums_from_start(self, sums: Tensor) -> None:
        """``sums`` set in place to 0, or to the interrupted epoch's :attr:`start_sums`: a host-to-device
        copy, made only where a pre-empted run goes on mid-epoch (a step recorded as a CUDA graph cannot
        hold one)."""
        if self.start_sums:
            sums.copy_(torch.tensor([self.start_sums.get(name, 0.0) for name in self.names]))
        else:
            sums.zero_()

    def flag(self, what: Tensor) -> None:
        """Record ``what`` (() int64: 0 finite, 1 loss, 2 gradient) for the step just counted, if it is the
        epoch's first non-finite one."""
        first = (self.first_bad == 0) & (what > 0)
        self.first_bad.copy_(torch.where(first, self.step, self.first_bad))
        self.bad_what.copy_(torch.where(first, what, self.bad_what))

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
        counters: the run's device counters (changed in place only: a recorded step keeps writing there).
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
    counters.flag(torch.where(bad_loss, zero + LOSS, torch.where(bad_gradient, zero + GRADIENT, zero)))
    counters.add({"train_loss": out.total.detach()} | {f"train_{k}": v for k, v in out.terms.items()})


@dataclass
class DeviceStep:
    """One device-data run's step: :func:`sync_free_step` with the run's parts bound, eager or replayed
    from a CUDA graph (:meth:`graph`).

    Attributes:
        trainee: what the step trains.
        lrs, lr: every step's LR (:func:`lr_table`), the optimiser's LR tensor (:func:`sync_free_optimizer`).
        counters: the run's device counters (:meth:`DeviceCounters.restart` at every epoch's start).
        two_views: batches of two views (a two-view objective).
        grad_clip: clip the gradient norm to this (``optim.grad_clip``).
        graphed: the step as a :class:`~learner.training.step_graph.GraphedStep`; None: eager.
    """

    trainee: Trainee
    lrs: Tensor
    lr: Tensor
    counters: DeviceCounters
    two_views: bool = False
    grad_clip: float | None = None
    graphed: GraphedStep | None = None

    def __call__(self, clips: Tensor, scores: Tensor, *, measure_share: bool = False) -> None:
        """One update on the batch; eager where it measures the contrastive gradient share (which takes
        gradients of each term apart, once an epoch), else replayed once recorded."""
        if self.graphed is not None and not measure_share:
            self.graphed(clips, scores)
        else:
            self.eager(clips, scores, measure_share=measure_share)

    def eager(self, clips: Tensor, scores: Tensor, *, measure_share: bool = False) -> None:
        """:func:`sync_free_step` called."""
        sync_free_step(
            self.trainee, clips, scores, self.counters, self.lrs, self.lr,
            two_views=self.two_views, grad_clip=self.grad_clip, measure_share=measure_share,
        )  # fmt: skip

    def graph(self, recorder: StepRecorder, *, warmup: int = WARMUP_STEPS) -> None:
        """From now on, record the step after ``warmup`` eager ones and replay it
        (:class:`~learner.training.step_graph.GraphedStep`)."""
        self.graphed = GraphedStep(self.eager, recorder, warmup=warmup)
