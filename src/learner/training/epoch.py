"""The epoch loop of pretraining (Algorithm 1): what it carries between epochs and its three parts.

:func:`learner.training.pretrain.pretrain` builds :class:`Loaders` and a :class:`Trainee`, then calls
:func:`restore` (a fresh :class:`LoopState`, or with ``resume`` everything a step depends on, so that the
continuation is bit-identical) and, each epoch, :func:`train_one_epoch` (the optimiser updates) and
:func:`validate_and_checkpoint` (validation on rank 0, ``checkpoints/{best,last}``, the metrics sinks).
Each can be called alone on parts built by hand (tests/training/test_training_parts.py).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from learner.atomic import finite
from learner.console import ON_CONSOLE
from learner.data.clip_store import EvalClips
from learner.data.datasets import views_to_batch
from learner.errors import NonFiniteLossError
from learner.losses.registry import LossOutput, Objective, ViewObjective
from learner.losses.regression import ScoreStandardiser
from learner.models.heads import ScoreRegressor
from learner.runs import RunDir
from learner.timing import stage
from learner.training.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    load_train_state,
    recover_checkpoint,
)
from learner.training.checkpoint_writer import CheckpointSaver
from learner.training.distributed import DistInfo, all_gather_with_grad, barrier, broadcast_object
from learner.training.faults import fault_point
from learner.training.finite import finite_gradients, non_finite_message
from learner.training.grad_share import contrastive_gradient_share
from learner.training.loaders import Loaders
from learner.training.loggers import CsvLogger, MetricsLogger
from learner.training.memory import CrossBatchMemory
from learner.training.plan import PretrainPlan
from learner.training.preemption import EpochPosition, Preemption, StopCheck
from learner.training.seeding import rng_state, set_rng_state
from learner.training.validation import (
    predict_clips,
    predict_scores,
    regression_metrics,
    view_loss,
    write_val_predictions,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trainee:
    """The model θ = {θ_V, θ_M} and everything a training step uses or changes.

    Attributes:
        model: the :class:`ScoreRegressor`: clips (b, T, C, H, W) → embeddings (b, D), predictions (b,).
        network: ``model`` as a step calls it (DDP-wrapped when distributed:
            :func:`~learner.training.distributed.wrap_model`).
        optimizer, scaler: the optimiser and the fp16 GradScaler (disabled unless fp16).
        objective: the label objective (on the gathered batch) or the two-view one.
        memory: earlier steps' (embedding, standardised score) pairs (``loss.memory``).
        amp_dtype: the autocast dtype on GPU, None for float32.
        standardiser: scores → standardised targets (train split).
        meta: what every checkpoint's ``meta.json`` starts from.
        device: where the model and the batches live.
    """

    model: ScoreRegressor
    network: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    objective: Objective | ViewObjective
    memory: CrossBatchMemory
    amp_dtype: torch.dtype | None
    standardiser: ScoreStandardiser
    meta: CheckpointMeta
    device: torch.device


@dataclass(frozen=True)
class LoopState:
    """Where the epoch loop stands: optimiser updates done (``step``), every epoch's metrics row
    (``history``) and the best of them (``best``; the same object as its ``history`` entry); ``position``:
    where a pre-empted epoch stopped (None at an epoch's end)."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    position: EpochPosition | None = None


def restore(
    plan: PretrainPlan, info: DistInfo, run: RunDir | None, trainee: Trainee, last_dir: Path, best_dir: Path
) -> LoopState:
    """With ``plan.resume``, load ``last_dir`` into ``trainee`` (weights, optimiser, scaler, memory) and the
    RNG states, so that the continuation is bit-identical, after rank 0 put back the newest complete copy
    of each checkpoint a kill between a save's two renames left aside; else (or before a first checkpoint)
    a fresh :class:`LoopState`. On a resume rank 0 leaves ``metrics.csv`` holding exactly the restored
    history (the tracker run starts from it: :func:`~learner.training.loggers.open_loggers`). Every rank
    calls it (it waits for rank 0's recovery)."""
    run_dir, resume = plan.run_dir, plan.resume
    state = LoopState()
    if resume and info.is_main:  # a kill between a save's two renames: put the newest complete copy back
        recover_checkpoint(best_dir)
        recover_checkpoint(last_dir)
    barrier()  # rank 0 recovers; then every rank reads the same checkpoint
    if resume and last_dir.is_dir():
        load_checkpoint(last_dir, trainee.model)
        saved = load_train_state(last_dir)
        trainee.optimizer.load_state_dict(saved["optimizer"])
        trainee.scaler.load_state_dict(saved["scaler"])
        position = EpochPosition.from_state(saved.get("position"))
        state = LoopState(saved["step"], saved["history"], saved["best"], position)
        set_rng_state(saved["rng"])
        trainee.memory.load_state_dict(saved.get("memory", {}), trainee.device)
        log.info("resumed %s at epoch %d, step %d", run_dir, len(state.history), state.step)
    elif resume:
        log.info("resumed %s: no checkpoint was saved yet, starting at epoch 1", run_dir)
    if resume and run is not None:  # metrics.csv := the restored history: a kill after a save lost its
        if state.history:  # row, one between save points left rows of epochs the resume trains again
            CsvLogger(run_dir, plan.config).log(state.history[-1], state.history)
        else:
            run.layout.epochs.unlink(missing_ok=True)
    return state


def train_one_epoch(
    trainee: Trainee,
    loaders: Loaders,
    epoch: int,
    step: int,
    lr_at: Callable[[int], float],
    *,
    last_dir: Path,
    grad_clip: float | None = None,
    progress: Progress | None = None,
    epochs: int | None = None,
    start: EpochPosition | None = None,
    on_step: StopCheck | None = None,
) -> dict[str, float]:
    """Epoch ``epoch`` of Alg. 1: for each of ``loaders.steps_per_epoch`` batches B, U = θ_V(B),
    Y = θ_M(U), θ ← θ − η∇(λ·MSE + (1 − λ)·CL), with η = ``lr_at(step)`` and ``step`` counting updates
    (0-based) from the given one.

    Each batch (clips (b, T, C, H, W), scores (b,); two views: (b, 2, T, C, H, W)) goes through
    :func:`batch_loss`; a non-finite loss (or, without fp16 loss scaling, gradient) raises before the update.

    Args:
        last_dir: the checkpoint a non-finite error message points at.
        grad_clip: clip the gradient norm to this (``optim.grad_clip``).
        progress: the bar to advance (a task "epoch ``epoch``/``epochs``"); None: none shown.
        start: where a pre-empted run stopped: for this epoch, go on from there (earlier batches skipped).
        on_step: called after every update with the epoch's position (pre-emption checkpoints).

    Returns:
        The epoch's ``metrics.csv`` row so far: ``epoch``, ``step`` (the updates done after this epoch),
        ``lr`` (of its last update), ``train_loss`` and ``train_<term>`` (means over its steps), and for
        λ·MSE + (1 − λ)·C ``grad_share_contrastive`` on the epoch's first batch
        (:func:`contrastive_gradient_share`).

    Raises:
        NonFiniteLossError: the loss or a gradient became NaN/inf (names the epoch and the step).
    """
    model, optimizer, scaler = trainee.model, trainee.optimizer, trainee.scaler
    steps = loaders.steps_per_epoch
    loaders.train_set.set_epoch(epoch)
    loaders.sampler.set_epoch(epoch)
    trainee.network.train()
    progress = progress_bar(enabled=False) if progress is None else progress
    task = progress.add_task(f"epoch {epoch}/{epochs}", total=steps, loss=math.nan)
    sums: dict[str, float] = defaultdict(float)
    lr, share, first = math.nan, None, 0
    if start is not None and start.epoch == epoch:  # items are pure functions of (seed, epoch, index)
        sums.update(start.sums)
        lr, share, first, step = start.lr, start.share, start.index, start.step
        progress.update(task, advance=first)
    batches = itertools.islice(loaders.train, first, steps)
    for index, (clips, scores, members) in enumerate(batches, start=first):
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        codes = None if loaders.visit_codes is None else tuple(c[members] for c in loaders.visit_codes)
        out = batch_loss(trainee, clips, scores, two_views=loaders.two_views, visit_codes=codes)
        if index == 0:  # the epoch's first batch: how much of the update the contrastive term drives
            share = contrastive_gradient_share(model, out)
        step += 1
        loss = out.total.item()
        if not math.isfinite(loss):
            raise NonFiniteLossError(non_finite_message(f"loss ({loss})", epoch, step, last_dir))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out.total).backward()  # type: ignore[no-untyped-call]  # untyped in torch
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if not scaler.is_enabled() and not finite_gradients(model):  # fp16 scaling skips such steps
            raise NonFiniteLossError(non_finite_message("gradient", epoch, step, last_dir))
        scaler.step(optimizer)
        scaler.update()
        fault_point("step")
        sums["train_loss"] += loss
        for name, value in out.terms.items():
            sums[f"train_{name}"] += value.item()
        progress.update(task, advance=1, loss=loss)
        if on_step is not None:  # after the last batch too: the resumed epoch then only validates
            on_step(EpochPosition(epoch, index + 1, step, dict(sums), share, lr))
    row = {"epoch": epoch, "step": step, "lr": lr} | {k: v / steps for k, v in sums.items()}
    return row if share is None else row | {"grad_share_contrastive": share}


def batch_loss(
    trainee: Trainee,
    clips: torch.Tensor,
    scores: torch.Tensor,
    *,
    two_views: bool,
    visit_codes: tuple[torch.Tensor, ...] | None = None,
) -> LossOutput:
    """The objective on one local batch, with gradient: clips (b, T, C, H, W) and raw scores (b,) →
    embeddings (b, D) and predictions (b,) → the label objective on the batch gathered over the processes
    (world·b rows, standardised scores, the memory's references), which then joins ``trainee.memory``.
    ``visit_codes``: the members' (b,) track and visit codes, for the within-patient term. Two views: clips
    (b, 2, T, C, H, W) → (2b, T, C, H, W), and the objective sees the two views' embeddings (b, D) each and
    no score."""
    device, objective, memory = trainee.device, trainee.objective, trainee.memory
    clips = clips.to(device, non_blocking=True)  # (b, T, C, H, W); two views: (b, 2, T, C, H, W)
    inputs = views_to_batch(clips) if two_views else clips  # two views: (2b, T, C, H, W)
    with torch.autocast(device.type, dtype=trainee.amp_dtype, enabled=trainee.amp_dtype is not None):
        embeddings, predictions = trainee.network(inputs)  # (b, D), (b,); two views: (2b, D), (2b,)
    if isinstance(objective, ViewObjective):  # the two views' embeddings (b, D) each, no scores
        view_a, view_b = embeddings.float().chunk(2)
        return objective(all_gather_with_grad(view_a), all_gather_with_grad(view_b))
    # on the GLOBAL batch (world·b), identical on every rank
    target = trainee.standardiser.standardise(scores.to(device))  # (b,), this rank's slice
    u, y = all_gather_with_grad(embeddings.float()), all_gather_with_grad(target)
    groups: dict[str, torch.Tensor] = {}
    if visit_codes is not None:  # gathered like the batch: codes are small integers, exact in float32
        track, visit = (all_gather_with_grad(c.to(device, torch.float32)).long() for c in visit_codes)
        groups = {"groups": track, "visits": visit}
    out = objective(u, all_gather_with_grad(predictions.float()), y, *memory.references(), **groups)
    memory.push(u, y)  # the gathered batch, detached: identical on every rank
    return out


def validate_and_checkpoint(
    row: dict[str, float],
    state: LoopState,
    trainee: Trainee,
    loaders: Loaders,
    run: RunDir | None,
    sinks: list[MetricsLogger],
    *,
    last_dir: Path,
    best_dir: Path,
    batch_size: int,
    progress: Progress,
    epochs: int,
    saver: CheckpointSaver | None = None,
    val_clips: EvalClips | None = None,
) -> LoopState:
    """Complete ``row`` (from :func:`train_one_epoch`) with validation and, on rank 0 (``run``), save
    ``best_dir`` (when the monitored figure improved) and ``last_dir`` (weights, optimiser, scaler, step,
    history, best, RNG states, memory), then log the row to ``sinks``. Every rank calls it.

    ``saver`` decides when they are written (``runtime.checkpoint_every``,
    :mod:`learner.training.checkpoint_writer`): an improved best is kept in memory and ``last`` written
    (in the background when k > 1) every k-th and the last epoch; None: both every epoch, synchronously.

    Validation (rank 0; the row is then broadcast): MAE, RMSE and Pearson r of the val predictions in score
    units next to the train-mean baseline (``val_mae`` monitored), or for a two-view objective its value
    on the fixed val views in consecutive batches of ``batch_size`` (``val_loss`` monitored). With
    ``val_clips`` (``data.device_data``: the val loader's clips, held on the device) the predictions come
    from there (:func:`~learner.training.validation.predict_clips`) instead of the val loader.

    Returns:
        The state after this epoch: ``row`` appended to the history, ``best`` the row if it improved.
    """
    model, objective, device = trainee.model, trainee.objective, trainee.device
    epoch, step = int(row["epoch"]), int(row["step"])
    predictions: tuple[np.ndarray, np.ndarray] | None = None
    with stage("validation"):
        if run is not None and isinstance(objective, ViewObjective):
            row |= view_loss(model, loaders.val, objective, device, trainee.amp_dtype, batch_size)
        elif run is not None:
            pred, truth = (
                predict_scores(model, loaders.val, trainee.standardiser, device, trainee.amp_dtype)
                if val_clips is None
                else predict_clips(model, val_clips, trainee.standardiser, trainee.amp_dtype, batch_size)
            )
            row |= regression_metrics(pred, truth, trainee.standardiser.mean)
            predictions = (pred, truth)
    row = broadcast_object(row)  # rank 0 alone validates; every rank keeps the same history
    history = [*state.history, row]
    monitor = "val_loss" if loaders.two_views else "val_mae"
    improved = not state.best or row[monitor] < state.best[monitor]
    best = row if improved else state.best
    with stage("checkpoints"):
        if run is not None:
            saver = CheckpointSaver() if saver is None else saver
            summary = replace(trainee.meta, epoch=epoch, step=step, metrics=finite(row))
            if improved:  # kept for the next save, written before last: a crash between redoes both
                after = None
                if predictions is not None:
                    val_scans = loaders.val.dataset.records  # type: ignore[attr-defined]  # a ScanDataset
                    path = run.layout.val_predictions
                    after = partial(write_val_predictions, path, val_scans, *predictions)
                saver.keep_best(best_dir, model, summary, after)
            if saver.due(epoch, epochs):
                train_state = {
                    "optimizer": trainee.optimizer.state_dict(), "scaler": trainee.scaler.state_dict(),
                    "step": step, "history": history, "best": best, "rng": rng_state(),
                    "memory": trainee.memory.state_dict(),
                }  # fmt: skip
                saver.save_last(last_dir, model, summary, train_state)
                fault_point("checkpoint-saved")
            # a kill between the save and these writes loses no row: a resume rewrites the sinks from the
            # checkpoint's history (restore, open_loggers), which also drops rows logged after the save
            for sink in sinks:
                sink.log(row, history)
            _report(progress, row, epochs)
    barrier()
    return LoopState(step, history, best)


def preemption_checkpoint(
    preemption: Preemption,
    state: LoopState,
    trainee: Trainee,
    run: RunDir | None,
    last_dir: Path,
    saver: CheckpointSaver | None = None,
) -> StopCheck:
    """``on_step`` for :func:`train_one_epoch`: when a pre-emption signal came (every rank agrees), rank 0
    saves ``last_dir`` at the epoch's position (weights, optimiser, scaler, memory, RNG states, the epoch's
    running sums) and the signal goes to its old handler (:mod:`learner.training.preemption`). With a
    ``saver``, its write in flight is joined and a best kept in memory is written first, synchronously."""
    writer = CheckpointSaver() if saver is None else saver

    def check(position: EpochPosition) -> None:
        signum = preemption.requested()
        if signum is None:
            return
        with stage("checkpoints"):
            if run is not None:
                summary = replace(trainee.meta, epoch=position.epoch - 1, step=position.step,
                                  metrics=finite(state.history[-1]) if state.history else {})  # fmt: skip
                train_state = {
                    "optimizer": trainee.optimizer.state_dict(), "scaler": trainee.scaler.state_dict(),
                    "step": position.step, "history": state.history, "best": state.best,
                    "rng": rng_state(), "memory": trainee.memory.state_dict(),
                    "position": position.to_state(),
                }  # fmt: skip
                writer.save_last(last_dir, trainee.model, summary, train_state, wait=True)
                log.warning(
                    "signal %d: checkpoint written after batch %d of epoch %d (step %d); --resume goes on",
                    signum, position.index, position.epoch, position.step,
                )  # fmt: skip
        barrier()
        preemption.hand_over(signum)

    return check


def progress_bar(*, enabled: bool) -> Progress:
    """The epoch bar (steps, loss, time left); ``enabled=False``: nothing is drawn."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), disable=not enabled,
    )  # fmt: skip


def _report(progress: Progress, row: dict[str, float], epochs: int) -> None:
    if "val_mae" in row:
        quality = (
            f"val MAE {row['val_mae']:.3f} RMSE {row['val_rmse']:.3f} r {row['val_r']:.3f} | "
            f"predict-the-mean MAE {row['baseline_mae']:.3f}"
        )
    else:  # self-supervised: the objective on fixed val views
        quality = "val " + ", ".join(
            f"{k.removeprefix('val_')} {v:.4f}" for k, v in row.items() if k[:4] == "val_"
        )
    text = f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f} | {quality}"
    progress.console.print(text, markup=False, soft_wrap=True)
    log.info(text, extra={ON_CONSOLE: True})  # for log.txt; the terminal has it already
