"""GraphedStep (learner.training.step_graph) on CPU with the stand-in recorder of conftest (its replay calls
the step again, with host syncs forbidden): eager warm-up steps in the recorder's warming context, one
recording, replays on fixed input buffers, a clear error for a batch of another shape and for a replay that
reads a value on the host; and what conftest's host-sync guard refuses and lets run. The recording itself
(torch.cuda.graph) runs only on a GPU (benchmarks/gpu_check.py, form graph)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from learner.training.step_graph import GraphedStep


def test_warm_up_then_one_recording_then_replays_on_fixed_buffers(replaying_recorder: Any) -> None:
    calls: list[tuple[bool, int, int, torch.Tensor]] = []

    def step(clips: torch.Tensor, scores: torch.Tensor) -> None:  # reads no value: replays forbid it
        warm = replaying_recorder.warming_now
        calls.append((warm, clips.data_ptr(), scores.data_ptr(), clips.sum()))

    graphed = GraphedStep(step, replaying_recorder, warmup=2)
    batches = [torch.full((2, 3), float(i)) for i in range(5)]
    for clips in batches:
        graphed(clips, torch.zeros(2))
    assert [warm for warm, *_ in calls] == [True, True, False, False, False]
    assert (replaying_recorder.warmups, len(replaying_recorder.recorded)) == (2, 1)
    assert len({(clips, scores) for _, clips, scores, _ in calls}) == 1  # one pair of buffers throughout
    assert all(batch.data_ptr() != calls[0][1] for batch in batches)  # ... none of them the caller's
    assert [float(total) for *_, total in calls] == [6.0 * i for i in range(5)]  # each call's own batch


def test_a_replay_that_reads_a_value_on_the_host_fails_naming_the_op(replaying_recorder: Any) -> None:
    graphed = GraphedStep(lambda clips, scores: clips.sum().item(), replaying_recorder, warmup=1)
    graphed(torch.zeros(2), torch.zeros(2))  # the warm-up may (a recording would not see it)
    refused = r"a host sync inside a recorded step: aten\._local_scalar_dense"
    with pytest.raises(AssertionError, match=refused):
        graphed(torch.zeros(2), torch.zeros(2))


@pytest.mark.parametrize(
    ("op", "refused"),
    [
        (lambda x: x.sum().item(), "_local_scalar_dense"),
        (lambda x: bool(x.max() > 0), "_local_scalar_dense"),
        (lambda x: f"{x.mean():.3f}", "_local_scalar_dense"),
        (lambda x: x[x > 0], "aten.index.Tensor"),
        (lambda x: torch.nonzero(x > 0), "nonzero"),
        (lambda x: torch.unique(x), "_unique2"),
        (lambda x: x + torch.tensor([1.0, 2.0, 3.0]), "lift_fresh"),
        (lambda x: x + torch.tensor(0.5, device=x.device), r"torch\.tensor of host data with device=cpu"),
        (lambda x: x + torch.as_tensor(0.5, device="cpu"), r"torch\.as_tensor of host data with device=cpu"),
        (lambda x: x.tolist(), "Tensor.tolist"),
        (lambda x: x.numpy(), "Tensor.numpy"),
        (lambda x: x.cpu(), "Tensor.cpu"),
    ],
)
def test_the_host_sync_guard_refuses_what_a_gpu_would_wait_for(
    op: Any, refused: str, host_syncs_forbidden: Any
) -> None:
    refusal = pytest.raises(AssertionError, match=f"a host sync inside the test: .*{refused}")
    with refusal, host_syncs_forbidden("the test"):
        op(torch.arange(3.0))


def test_the_host_sync_guard_lets_the_device_side_ops_run(host_syncs_forbidden: Any) -> None:
    x = torch.arange(4.0, requires_grad=True)
    with host_syncs_forbidden("the test"):
        y = torch.where(x > 1, x, torch.zeros_like(x)).clone()
        y[0] = 0  # a number reaches the kernel as an argument
        picked = torch.index_select(y, 0, torch.zeros(1, dtype=torch.int64))
        picked = picked + torch.as_tensor(x.detach(), device=x.device)[:1] + torch.tensor(0.5)  # no copy
        (y.sum() + picked.sum() + torch.bucketize(x.detach(), x.detach()).sum()).backward()
    assert x.grad is not None
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_a_batch_of_another_shape_is_refused_naming_both(replaying_recorder: Any) -> None:
    graphed = GraphedStep(lambda clips, scores: None, replaying_recorder)
    graphed(torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"clips \(3, 2\) torch.float32, recorded with \(4, 2\)"):
        graphed(torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"scores \(4,\) torch.float64"):
        graphed(torch.zeros(4, 2), torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="warmup should be >= 1"):
        GraphedStep(lambda clips, scores: None, replaying_recorder, warmup=0)
