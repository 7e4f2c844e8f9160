"""DDP with two gloo processes on CPU: the gathered loss and the all-reduced gradients equal the
single-process loss and gradients on the concatenated batch (the contrastive terms see the global batch),
and a rank that dies leaves the other one error line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from gloo_ranks import _free_port, run_gloo_ranks
from torch import nn

from learner.config import Config, LossConfig
from learner.losses.registry import build_objective
from learner.training.distributed import (
    DistInfo,
    all_gather_with_grad,
    broadcast_object,
    distributed,
    peer_failure,
    wrap_model,
)
from learner.training.faults import FAULT_VARIABLE
from learner.training.grad_share import contrastive_gradient_share

WORLD = 2
LOCAL_BATCH = 5
LOSSES = ("mse+cl", "mse+wcl", "mse+wcl_scaled")


class _TinyRegressor(nn.Module):
    """A linear encoder (N, 6) → (N, 4) and a linear head (N, 4) → (N,), in float64."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.encoder = nn.Linear(6, 4).double()
        self.head = nn.Linear(4, 1).double()
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = self.encoder(x)
        return embeddings, self.head(embeddings).squeeze(-1)


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(WORLD * LOCAL_BATCH, 6, generator=generator, dtype=torch.float64)
    scores = torch.randn(WORLD * LOCAL_BATCH, generator=generator, dtype=torch.float64)  # distinct: no ties
    return inputs, scores


def _loss_and_grads(model: nn.Module, inputs: torch.Tensor, scores: torch.Tensor, name: str) -> dict:
    model.zero_grad()
    embeddings, predictions = model(inputs)
    out = build_objective(LossConfig(name=name))(
        all_gather_with_grad(embeddings), all_gather_with_grad(predictions), all_gather_with_grad(scores)
    )
    share = contrastive_gradient_share(getattr(model, "module", model), out)  # as a step: before backward
    out.total.backward()
    grads = {
        key: p.grad.clone()
        for key, p in getattr(model, "module", model).named_parameters()
        if p.grad is not None
    }
    return {"loss": out.total.detach(), "terms": out.terms, "grads": grads, "share": share}


def _worker(rank: int, out_dir: str) -> None:
    with distributed("cpu") as info:
        assert info == DistInfo(rank, WORLD, rank)
        results = _rank_results(info)  # the DDP model dies in there, before the group is destroyed
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


def _rank_results(info: DistInfo) -> dict:
    model = wrap_model(_TinyRegressor(), info, torch.device("cpu"))
    inputs, scores = _global_batch()
    mine = slice(info.rank * LOCAL_BATCH, (info.rank + 1) * LOCAL_BATCH)
    results = {name: _loss_and_grads(model, inputs[mine], scores[mine], name) for name in LOSSES}
    # contrastive only: the head gets no gradient; DDP must be told, or its second step stalls/fails
    cl_only = wrap_model(_TinyRegressor(), info, torch.device("cpu"), find_unused_parameters=True)
    results["cl_steps"] = [_loss_and_grads(cl_only, inputs[mine], scores[mine], "cl") for _ in range(2)]
    results["broadcast"] = broadcast_object({"rank": info.rank})
    try:
        all_gather_with_grad(torch.zeros(info.rank + 1))
    except ValueError as exc:
        results["unequal"] = str(exc)
    return results


TWO_PROCESSES = pytest.mark.slow
"""The tests of :func:`rank_results`: its two gloo processes start once per test process (~4 s), so they
run in the full suite, not the fast lane."""


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    run_gloo_ranks(_worker, out, world=WORLD)
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]


@TWO_PROCESSES
@pytest.mark.parametrize("name", LOSSES)
def test_gathered_loss_equals_single_process_loss(rank_results: list[dict], name: str) -> None:
    single = _loss_and_grads(_TinyRegressor(), *_global_batch(), name)
    for result in rank_results:
        torch.testing.assert_close(result[name]["loss"], single["loss"], rtol=1e-12, atol=1e-12)
        for term, value in single["terms"].items():
            torch.testing.assert_close(result[name]["terms"][term], value, rtol=1e-12, atol=1e-12)


@TWO_PROCESSES
@pytest.mark.parametrize("name", LOSSES)
def test_ddp_gradients_equal_single_process_gradients(rank_results: list[dict], name: str) -> None:
    single = _loss_and_grads(_TinyRegressor(), *_global_batch(), name)
    assert any(g.abs().sum() > 0 for g in single["grads"].values())
    for result in rank_results:
        assert set(result[name]["grads"]) == set(single["grads"])
        for key, grad in single["grads"].items():
            torch.testing.assert_close(result[name]["grads"][key], grad, rtol=1e-10, atol=1e-12, msg=key)


@TWO_PROCESSES
@pytest.mark.parametrize("name", LOSSES)
def test_ddp_gradient_share_equals_the_single_process_share(rank_results: list[dict], name: str) -> None:
    """metrics.csv's ``grad_share_contrastive``: each rank's gradients of a term cover its own slice of the
    global batch; averaged over the ranks they are the single process's, and so is the share."""
    single = _loss_and_grads(_TinyRegressor(), *_global_batch(), name)["share"]
    assert single is not None
    assert 0 < single < 1
    for result in rank_results:
        assert result[name]["share"] == pytest.approx(single, rel=1e-5)  # norms in float32


@TWO_PROCESSES
def test_contrastive_only_objective_runs_repeated_ddp_steps(rank_results: list[dict]) -> None:
    single = _loss_and_grads(_TinyRegressor(), *_global_batch(), "cl")
    assert set(single["grads"]) == {"encoder.weight", "encoder.bias"}  # the head is unused
    for result in rank_results:
        for step in result["cl_steps"]:
            torch.testing.assert_close(step["loss"], single["loss"], rtol=1e-12, atol=1e-12)
            assert set(step["grads"]) == set(single["grads"])
            for key, grad in single["grads"].items():
                torch.testing.assert_close(step["grads"][key], grad, rtol=1e-10, atol=1e-12, msg=key)


@TWO_PROCESSES
def test_unequal_local_batches_are_refused(rank_results: list[dict]) -> None:
    for result in rank_results:
        assert "equal batch sizes on every rank, got [1, 2]" in result["unequal"]


@TWO_PROCESSES
def test_broadcast_hands_rank0_value_to_every_rank(rank_results: list[dict]) -> None:
    assert [result["broadcast"] for result in rank_results] == [{"rank": 0}, {"rank": 0}]


def test_single_process_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    x = torch.randn(3, 2)
    with distributed("cpu") as info:
        assert info == DistInfo(0, 1, 0)
        assert info.is_main
        assert all_gather_with_grad(x) is x
        model = nn.Linear(2, 1)
        assert wrap_model(model, info, torch.device("cpu")) is model


GLOO_RESET = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:7063: "
    "Connection reset by peer. This is typically caused by a remote worker hanging"
)  # what a surviving rank's DDP step raised when its peer was killed


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (RuntimeError(GLOO_RESET), "lost connection to a peer"),
        (
            dist.DistBackendError("NCCL communicator was aborted: ncclRemoteError"),
            "lost connection to a peer",
        ),
        (dist.DistStoreError("recv failed"), "lost connection to a peer"),
        (
            RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 3600000ms for recv"),
            "a collective timed out",
        ),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x6 and 5x4)"), None),  # this rank's own
        (RuntimeError("Connection reset by peer"), None),  # not from a collective
        (ValueError("all_gather_with_grad needs equal batch sizes on every rank, got [1, 2]"), None),
    ],
)
def test_only_a_collective_that_lost_its_peer_is_a_peer_failure(error: Exception, cause: str | None) -> None:
    assert peer_failure(error) == cause


def test_a_single_process_keeps_its_own_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="Connection reset by peer"), distributed("cpu"):
        raise RuntimeError(GLOO_RESET)


@pytest.mark.slow
def test_a_rank_that_dies_leaves_the_other_one_error_line(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    """``learner pretrain`` on two ranks (torchrun's variables) whose rank 1 is killed after its first
    update: rank 0 fails at its next collective with one line pointing at the other rank, no traceback."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(make_tiny_pretrain_config().to_yaml())
    out = tmp_path / "run"
    command = [sys.executable, "-m", "learner", "pretrain", "--config", str(config_file), "--out", str(out)]
    group = {"WORLD_SIZE": str(WORLD), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    ranks = []
    for rank in range(WORLD):
        env = os.environ | group | {"RANK": str(rank), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        env |= {FAULT_VARIABLE: "step:1"} if rank == 1 else {}
        ranks.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    try:
        outputs = [process.communicate(timeout=300) for process in ranks]
    finally:
        for process in ranks:
            process.kill()
    assert ranks[1].returncode == -signal.SIGKILL, outputs[1][1][-2000:]
    stderr = outputs[0][1]
    assert ranks[0].returncode == 2, stderr[-3000:]
    assert stderr.splitlines() == [
        "error: rank 0 of 2: another rank stopped (lost connection to a peer); see that rank's output"
    ], stderr[-3000:]
