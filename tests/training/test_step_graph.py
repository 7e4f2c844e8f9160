"""GraphedStep (learner.training.step_graph) on CPU with the stand-in recorder of conftest (its replay calls
the step again): eager warm-up steps in the recorder's warming context, one recording, replays on fixed
input buffers, and a clear error for a batch of another shape. The recording itself (torch.cuda.graph) runs
only on a GPU (benchmarks/gpu_check.py, form graph)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from learner.training.step_graph import GraphedStep


def test_warm_up_then_one_recording_then_replays_on_fixed_buffers(replaying_recorder: Any) -> None:
    calls: list[tuple[bool, int, int, float]] = []

    def step(clips: torch.Tensor, scores: torch.Tensor) -> None:
        warm = replaying_recorder.warming_now
        calls.append((warm, clips.data_ptr(), scores.data_ptr(), float(clips.sum())))

    graphed = GraphedStep(step, replaying_recorder, warmup=2)
    batches = [torch.full((2, 3), float(i)) for i in range(5)]
    for clips in batches:
        graphed(clips, torch.zeros(2))
    assert [warm for warm, *_ in calls] == [True, True, False, False, False]
    assert (replaying_recorder.warmups, len(replaying_recorder.recorded)) == (2, 1)
    assert len({(clips, scores) for _, clips, scores, _ in calls}) == 1  # one pair of buffers throughout
    assert all(batch.data_ptr() != calls[0][1] for batch in batches)  # ... none of them the caller's
    assert [total for *_, total in calls] == [6.0 * i for i in range(5)]  # each call's own batch


def test_a_batch_of_another_shape_is_refused_naming_both(replaying_recorder: Any) -> None:
    graphed = GraphedStep(lambda clips, scores: None, replaying_recorder)
    graphed(torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"clips \(3, 2\) torch.float32, recorded with \(4, 2\)"):
        graphed(torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"scores \(4,\) torch.float64"):
        graphed(torch.zeros(4, 2), torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="warmup should be >= 1"):
        GraphedStep(lambda clips, scores: None, replaying_recorder, warmup=0)
