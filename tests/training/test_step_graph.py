"""GraphedStep (learner.training.step_graph) on CPU with a recorder whose replay calls the step again:
eager warm-up steps in the recorder's warming context, one recording, replays on fixed input buffers, and
a clear error for a batch of another shape. The recording itself (torch.cuda.graph) runs only on a GPU
(benchmarks/gpu_check.py, form graph)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch

from learner.training.step_graph import GraphedStep


class Recorder:
    """Counts warm-ups and recordings; "records" a step by keeping it (its replay calls it again)."""

    def __init__(self) -> None:
        self.warming_now = False
        self.recorded: list[Callable[[], None]] = []

    @contextmanager
    def warming(self) -> Iterator[None]:
        self.warming_now = True
        try:
            yield
        finally:
            self.warming_now = False

    def record(self, step: Callable[[], None]) -> Callable[[], None]:
        self.recorded.append(step)
        return step


def test_warm_up_then_one_recording_then_replays_on_fixed_buffers() -> None:
    recorder = Recorder()
    calls: list[tuple[bool, int, int, float]] = []

    def step(clips: torch.Tensor, scores: torch.Tensor) -> None:
        calls.append((recorder.warming_now, clips.data_ptr(), scores.data_ptr(), float(clips.sum())))

    graphed = GraphedStep(step, recorder, warmup=2)
    batches = [torch.full((2, 3), float(i)) for i in range(5)]
    for clips in batches:
        graphed(clips, torch.zeros(2))
    assert [warm for warm, *_ in calls] == [True, True, False, False, False]
    assert len(recorder.recorded) == 1
    assert len({(clips, scores) for _, clips, scores, _ in calls}) == 1  # one pair of buffers throughout
    assert all(batch.data_ptr() != calls[0][1] for batch in batches)  # ... none of them the caller's
    assert [total for *_, total in calls] == [6.0 * i for i in range(5)]  # each call's own batch


def test_a_batch_of_another_shape_is_refused_naming_both() -> None:
    graphed = GraphedStep(lambda clips, scores: None, Recorder())
    graphed(torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"clips \(3, 2\) torch.float32, recorded with \(4, 2\)"):
        graphed(torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"scores \(4,\) torch.float64"):
        graphed(torch.zeros(4, 2), torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="warmup should be >= 1"):
        GraphedStep(lambda clips, scores: None, Recorder(), warmup=0)
