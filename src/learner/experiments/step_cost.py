"""The cost of one training step, validation clip and checkpoint at a run's settings, measured on this
machine (:func:`measure_cost`): what ``--dry-run``'s time estimate scales (:mod:`.dry_run`).

The run's own model and objective (:func:`learner.training.pretrain.build_model_and_objective`) on its
device and thread count (:func:`learner.training.device.thread_count`), through the toolkit's own training
loop (:func:`learner.training.epoch.train_one_epoch`) on synthetic clips of the run's shape; nothing is
written, and the caller's threads and torch RNG are left as they were.
"""

from __future__ import annotations

import io
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from learner.config import Config
from learner.data.scales import scale_from_config
from learner.losses.registry import build_view_objective
from learner.losses.regression import ScoreStandardiser
from learner.training.device import resolve_device, thread_count, torch_threads
from learner.training.epoch import train_one_epoch
from learner.training.loaders import Loaders
from learner.training.pretrain import build_model_and_objective
from learner.training.validation import predict_scores

CHECKPOINT_BYTES_PER_SECOND = 300e6
"""Writing checkpoints (serialise, write, rename): measured ~300 MB/s on this machine's disk."""
WARM_UP_LIMIT_SECONDS = 1.5
"""A whole-batch step expected to take longer than this is timed on :data:`SMALL_BATCH` clips and scaled."""
SMALL_BATCH = 4
"""The warm-up step's clips, and the timed steps' when whole-batch steps would be slow."""


@dataclass(frozen=True)
class StepCost:
    """Seconds measured on this machine at one run's settings (:func:`measure_cost`).

    Attributes:
        settings: what was measured, in words (backbone, size, batch, clip shape).
        train_step: one optimiser step on one batch (forward, backward, update).
        first_step_extra: what an epoch's first step adds (the contrastive gradient share; 0 without).
        eval_clip: one clip's forward pass in eval mode (validation, embedding).
        checkpoint: saving the checkpoints of one epoch (``last`` with the optimiser, and ``best``).
        build: building the model and objective.
        threads: torch's intra-op threads during the measurement (what the command will use).
        threads_from: where that number comes from (``runtime.threads``, ``OMP_NUM_THREADS``, the default).
        device: ``cpu`` or ``cuda``.
    """

    settings: str
    train_step: float
    first_step_extra: float
    eval_clip: float
    checkpoint: float
    build: float
    threads: int
    threads_from: str
    device: str

    def render(self) -> str:
        """One line for the terminal: what was measured, on how many threads, and the step times."""
        where = f"{self.threads} thread(s) ({self.threads_from})" if self.device == "cpu" else self.device
        return (
            f"Measured: {self.settings} on {where}: a training step {self.train_step:.2f} s, a validation "
            f"clip {self.eval_clip * 1000:.0f} ms, checkpoints {self.checkpoint:.2f} s per epoch "
            "(change threads with --set runtime.threads=N or OMP_NUM_THREADS)."
        )


_MEASURED: dict[str, StepCost] = {}
"""Measurements of this process, by :func:`_cost_key`: cells that share a model and batch shape share one."""


def _cost_key(config: Config, two_views: bool) -> str:
    data, runtime = config.data, config.runtime
    key = {
        "model": config.model.model_dump(mode="json", exclude={"init"}),  # init changes no cost
        "data": [data.size, data.frames, data.channels],
        "batch": config.optim.batch_size,
        "optimizer": config.optim.optimizer,
        "views": two_views,  # label objectives cost alike but for the first step's extra (pretrain_seconds)
        "memory": config.loss.memory,
        "runtime": [runtime.device, runtime.cpu_channels_last, runtime.channels_last, runtime.amp],
        "threads": thread_count(runtime)[0],
    }
    return json.dumps(key, sort_keys=True, default=str)


class _TimedBatches:
    """The same synthetic batch ``steps`` times; ``marks`` gets the time each batch is asked for (the end of
    the step before), so the steps of one :func:`train_one_epoch` call are timed one by one."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], device: torch.device):
        self.batch, self.device, self.marks = batch, device, list[float]()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        while True:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.marks.append(time.perf_counter())
            yield self.batch

    def set_epoch(self, epoch: int) -> None:
        """What the loop asks of its dataset and sampler; a synthetic batch has no epochs."""


def measure_cost(config: Config) -> StepCost:
    """Time the run's own training step, validation forward and checkpoint size on synthetic clips of the
    run's shape, on its device and thread count (module docstring); once per :func:`_cost_key`. The
    caller's threads and torch RNG are left as they were.

    Raises:
        ConfigError: the model or objective cannot be built from the config (as the run itself would say).
    """
    two_views = build_view_objective(config.loss) is not None
    key = _cost_key(config, two_views)
    if key not in _MEASURED:
        _MEASURED[key] = _measure(config, two_views)
    return _MEASURED[key]


def _measure(config: Config, two_views: bool) -> StepCost:
    data, optim = config.data, config.optim
    model = config.model.model_copy(update={"init": None})  # the same cost from any start
    loss = config.loss if two_views else config.loss.model_copy(update={"name": "mse+wcl"})  # two terms
    config = config.model_copy(update={"model": model, "loss": loss})
    device = resolve_device(config.runtime.device)
    threads, threads_from = thread_count(config.runtime)
    scale = scale_from_config(data)
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        started = time.perf_counter()
        standardiser = ScoreStandardiser.fit([scale.low, (scale.low + scale.high) / 2, scale.high])
        trainee = build_model_and_objective(config, standardiser, device)
        build = time.perf_counter() - started
        b, shape = optim.batch_size, (data.frames, data.channels, data.size, data.size)
        clips = torch.rand(b, 2, *shape) if two_views else torch.rand(b, *shape)  # (b[, 2], T, C, H, W)
        scores = scale.low + (scale.high - scale.low) * torch.rand(b)  # (b,) raw scores across the scale
        steps, scale_up = _time_steps(trainee, (clips, scores, torch.arange(b)), two_views, config, device)
        step = min(steps[1:]) * scale_up
        extra = max(0.0, steps[0] * scale_up - step)
        val = torch.rand(min(b, SMALL_BATCH) if scale_up > 1 else b, *shape)
        started = time.perf_counter()
        batches = cast(Any, [(val, scores[: len(val)], None)])  # one val batch, as the val loader yields it
        predict_scores(trainee.model, batches, standardiser, device, trainee.amp_dtype)  # warm
        started = time.perf_counter()
        predict_scores(trainee.model, batches, standardiser, device, trainee.amp_dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        eval_clip = (time.perf_counter() - started) / len(val)
        buffer = io.BytesIO()
        torch.save({"model": trainee.model.state_dict(), "optimizer": trainee.optimizer.state_dict()}, buffer)
        weights = sum(t.numel() * t.element_size() for t in trainee.model.state_dict().values())
    frames = f"{data.frames} × " if data.frames > 1 else ""
    settings = (
        f"{config.model.backbone} ({config.model.size}), batch {b} of {frames}{data.size}² px clips"
        + " (two views)" * two_views
    )
    return StepCost(
        settings=settings,
        train_step=step,
        first_step_extra=extra,
        eval_clip=eval_clip,
        checkpoint=(buffer.tell() + weights) / CHECKPOINT_BYTES_PER_SECOND,
        build=build,
        threads=threads,
        threads_from=threads_from,
        device=device.type,
    )


def _time_steps(
    trainee: Any, batch: tuple[torch.Tensor, ...], two_views: bool, config: Config, device: torch.device
) -> tuple[list[float], float]:
    """Seconds of the timed steps (the first an epoch's first step) and the factor that scales them to the
    run's batch: a warm-up step on :data:`SMALL_BATCH` clips, then an epoch of two steps on the whole batch,
    or, when the warm-up says a whole-batch step would take longer than :data:`WARM_UP_LIMIT_SECONDS`,
    on the small batch again, scaled by batch / small batch (a CPU step costs about its clips)."""
    lr, b = config.optim.lr, len(batch[0])
    small = min(b, SMALL_BATCH)

    def lr_at(_: int) -> float:
        return lr

    def epoch(clips: int, steps: int) -> list[float]:
        batches = _TimedBatches(cast(Any, tuple(t[:clips] for t in batch)), device)
        loaders = Loaders(
            train_set=cast(Any, batches), sampler=cast(Any, batches), train=cast(Any, batches),
            val=cast(Any, []), steps_per_epoch=steps, two_views=two_views,
        )  # fmt: skip
        train_one_epoch(trainee, loaders, 1, 0, lr_at, last_dir=Path(), grad_clip=config.optim.grad_clip)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        marks = [*batches.marks[:steps], time.perf_counter()]
        return [after - before for before, after in itertools.pairwise(marks)]

    warm_up = epoch(small, 1)[0]
    if warm_up * b / small <= WARM_UP_LIMIT_SECONDS:
        return epoch(b, 2), 1.0
    return epoch(small, 2), b / small
