"""A training step recorded once as a CUDA graph and replayed (``runtime.cuda_graph``; issue 22, part 4).

At batch 16 × 8 frames a tsm_resnet18 step is launch-bound: the GPU waits while the host queues the
step's many small kernels (``benchmarks/gpu_check.py`` times it). A CUDA graph records those kernels once
and launches them all again with one call, on the same memory. That replays a step correctly only if

* the step never reads a value on the host (no ``.item()``, no ``bool()`` of a tensor, no data-dependent
  shape): :func:`~learner.training.sync_free.sync_free_step` is built so (its test forbids every sync);
* every tensor the step changes is changed in place and outlives the graph (parameters, Adam's moments
  and step counts, BatchNorm statistics, the LR tensor, the run's
  :class:`~learner.training.sync_free.DeviceCounters`): a Python attribute rebound to a new tensor during
  recording would be read by later replays at its old address (tested on CPU:
  ``tests/training/test_device_epoch.py``);
* its inputs sit at fixed addresses: :class:`GraphedStep` copies each batch into buffers made at the first
  call (the batch itself is still made eagerly by ``DeviceBatches`` from its seeded generator, so the
  batches are exactly the eager path's).

The order follows PyTorch's whole-network capture recipe (``torch.cuda.graph``): ``warmup`` eager steps
(:data:`WARMUP_STEPS` by default) on
a side stream (the run's real first updates: lazy initialisation, cuDNN's autotuning and Adam's state
happen there), then the next step is recorded (recording runs nothing) and replayed at once, then every
later step is a copy into the buffers and a replay. A replay should compute what the eager step computes,
up to the kernels cuDNN picks (a GPU check measures how far: ``benchmarks/gpu_check.py``, form ``graph``).

:class:`GraphedStep` takes its recorder as a parameter (:class:`StepRecorder`): :class:`CudaGraphRecorder`
on a GPU; the CPU tests give it one whose "replay" calls the step again, which checks everything here but
the recording itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

WARMUP_STEPS = 3
"""Eager steps before the recording (``runtime.cuda_graph``)."""

Step = Callable[[Tensor, Tensor], None]
"""A training step on a batch: clips ``(b, T, C, H, W)`` (or ``(b, 2, T, C, H, W)``) and scores ``(b,)``."""


class StepRecorder(Protocol):
    """How a step is warmed up and recorded: :class:`CudaGraphRecorder` on a GPU."""

    def warming(self) -> AbstractContextManager[None]:
        """Where the eager warm-up steps run."""
        ...

    def record(self, step: Callable[[], None]) -> Callable[[], None]:
        """Record ``step`` (it reads fixed buffers) without running it; returns its replay."""
        ...


@dataclass(frozen=True)
class CudaGraphRecorder:
    """Warm-up on a side stream, then ``torch.cuda.graph`` on ``device``.

    ``capture_error_mode="thread_local"``: a checkpoint of another run side by side may be written by a
    background thread meanwhile (host work); only this thread's calls are checked during recording.
    """

    device: torch.device

    @contextmanager
    def warming(self) -> Iterator[None]:
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]  # untyped in torch
        side.wait_stream(current)
        with torch.cuda.stream(side):
            yield
        current.wait_stream(side)

    def record(self, step: Callable[[], None]) -> Callable[[], None]:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            step()
        return graph.replay


class GraphedStep:
    """``step`` eager for its first ``warmup`` calls, then recorded once and replayed (module docstring).

    Every call copies its batch into the buffers the first call made, so every batch must have the first
    one's shape and dtype (``DeviceBatches`` drops an epoch's last incomplete batch).
    """

    def __init__(self, step: Step, recorder: StepRecorder, *, warmup: int = WARMUP_STEPS) -> None:
        if warmup < 1:
            raise ValueError(f"warmup should be >= 1 eager step before recording, got {warmup}")
        self.step, self.recorder, self.warmup = step, recorder, warmup
        self.eager_calls = 0
        self.inputs: tuple[Tensor, Tensor] | None = None
        self.replay: Callable[[], None] | None = None

    def __call__(self, clips: Tensor, scores: Tensor) -> None:
        clips, scores = self._into_buffers(clips, scores)
        if self.replay is None and self.eager_calls < self.warmup:
            self.eager_calls += 1
            with self.recorder.warming():
                self.step(clips, scores)
            return
        if self.replay is None:
            self.replay = self.recorder.record(lambda: self.step(clips, scores))
        self.replay()

    def _into_buffers(self, clips: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        if self.inputs is None:
            self.inputs = (clips.clone(), scores.clone())
            return self.inputs
        for name, buffer, value in zip(("clips", "scores"), self.inputs, (clips, scores), strict=True):
            if value.shape != buffer.shape or value.dtype != buffer.dtype:
                raise ValueError(
                    f"a graphed step takes batches of one shape: {name} {tuple(value.shape)} {value.dtype}, "
                    f"recorded with {tuple(buffer.shape)} {buffer.dtype}"
                )
            buffer.copy_(value)
        return self.inputs
