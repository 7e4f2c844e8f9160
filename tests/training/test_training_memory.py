"""The cross-batch memory: FIFO order, its train-state round trip, identical queues under DDP (two gloo
processes), bit-identical resume of a pretraining run that uses it; every new loss in ``learner pretrain``."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from gloo_ranks import run_gloo_ranks
from torch import nn

from learner.config import Config, LossConfig
from learner.losses.registry import LossOutput, Objective, ScoreLabels, build_objective
from learner.training import pretrain as pretrain_module
from learner.training.checkpoint import load_checkpoint, load_train_state
from learner.training.distributed import all_gather_with_grad, distributed, wrap_model
from learner.training.memory import CrossBatchMemory
from learner.training.pretrain import pretrain

WORLD, LOCAL_BATCH, STEPS, MEMORY = 2, 3, 3, 8


def test_fifo_keeps_the_newest_entries_oldest_first() -> None:
    memory = CrossBatchMemory(5)
    assert memory.references() == (None, None)
    assert len(memory) == 0
    for step in range(3):
        u = torch.full((2, 3), float(step), requires_grad=True)
        memory.push(u * 1, torch.tensor([step + 0.1, step + 0.2]))
    u_ref, s_ref = memory.references()
    assert u_ref is not None
    assert s_ref is not None
    assert s_ref.tolist() == pytest.approx([0.2, 1.1, 1.2, 2.1, 2.2])  # step 0's first entry fell out
    assert u_ref[:, 0].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0]
    assert not u_ref.requires_grad
    buffer = io.BytesIO()
    torch.save(memory.state_dict(), buffer)
    buffer.seek(0)
    restored = CrossBatchMemory(5)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.references()[0], u_ref)  # type: ignore[arg-type]
    assert torch.equal(restored.references()[1], s_ref)  # type: ignore[arg-type]


def test_size_zero_is_off_and_bad_input_is_refused() -> None:
    memory = CrossBatchMemory(0)
    memory.push(torch.zeros(4, 2), torch.zeros(4))
    assert memory.references() == (None, None)
    assert memory.state_dict() == {}
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        CrossBatchMemory(3).push(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="≥ 0"):
        CrossBatchMemory(-1)


# ---- DDP: the queue holds the gathered batch, so it is the same on every process ----


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(5, 4).double()


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(2)
    return [
        (
            torch.randn(WORLD * LOCAL_BATCH, 5, generator=generator, dtype=torch.float64),
            torch.randn(WORLD * LOCAL_BATCH, generator=generator, dtype=torch.float64),
        )
        for _ in range(STEPS)
    ]


def _steps(model: nn.Module, rank: int, world: int) -> dict[str, object]:
    """STEPS optimiser steps of ``mse``-free RnC with memory; this rank's share of every global batch."""
    objective = build_objective(LossConfig(name="rnc", memory=MEMORY))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    memory, losses = CrossBatchMemory(MEMORY), []
    local = len(_batches()[0][1]) // world
    for inputs, scores in _batches():
        mine = slice(rank * local, (rank + 1) * local)
        u_local = model(inputs[mine])
        u, y = all_gather_with_grad(u_local), all_gather_with_grad(scores[mine])
        out = objective(u, y, y, *memory.references())
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        memory.push(u, y)
        losses.append(out.total.detach())
    return {"losses": torch.stack(losses), "memory": memory.state_dict()}


def _worker(rank: int, out_dir: str) -> None:
    with distributed("cpu") as info:
        model = wrap_model(_model(), info, torch.device("cpu"))
        results = _steps(model, info.rank, info.world_size)
        del model  # the DDP reducer must be gone before the gloo group is destroyed (training/distributed.py)
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.slow  # end to end; the full suite (CI) runs it, the fast lane leaves it out
def test_ddp_queues_are_identical_and_equal_the_single_process_queue(tmp_path: Path) -> None:
    run_gloo_ranks(_worker, tmp_path, world=WORLD)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]
    single = _steps(_model(), 0, 1)
    assert ranks[0]["memory"]["scores"].shape == (MEMORY,)  # 3 steps × 6 > 8: the FIFO has wrapped
    for result in ranks:
        for key in ("embeddings", "scores"):
            assert torch.equal(result["memory"][key], ranks[0]["memory"][key])  # identical on every rank
            torch.testing.assert_close(result["memory"][key], single["memory"][key], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(result["losses"], single["losses"], rtol=1e-12, atol=1e-12)


# ---- pretraining with the memory ----


class _Interrupt:
    """Wraps the objective; raises KeyboardInterrupt at call ``at`` (1-based)."""

    def __init__(self, objective: Objective, at: int) -> None:
        self.objective, self.at, self.calls, self.names = objective, at, 0, objective.names

    def __call__(self, *args: torch.Tensor) -> LossOutput:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.objective(*args)


@pytest.mark.slow
def test_resume_with_memory_is_bit_identical(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_tiny_pretrain_config(**{"loss.name": "mse+rnc", "loss.memory": 6})
    pretrain(config, tmp_path / "reference")
    state = load_train_state(tmp_path / "reference" / "checkpoints" / "last")
    assert state["memory"]["scores"].shape == (6,)  # 4 steps × 4 clips, the newest 6 kept

    real = pretrain_module.build_objective

    def interrupted(*args: object) -> _Interrupt:
        return _Interrupt(real(*args), at=4)  # type: ignore[arg-type]

    monkeypatch.setattr(pretrain_module, "build_objective", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, tmp_path / "run")
    monkeypatch.undo()
    assert json.loads((tmp_path / "run" / "checkpoints" / "last" / "meta.json").read_text())["epoch"] == 1
    pretrain(config, tmp_path / "run", resume=True)
    expected, _ = load_checkpoint(tmp_path / "reference" / "checkpoints" / "last")
    resumed, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert isinstance(expected, dict)
    assert isinstance(resumed, dict)
    for key, value in expected.items():
        assert torch.equal(value, resumed[key]), key
    resumed_state = load_train_state(tmp_path / "run" / "checkpoints" / "last")
    for key in ("embeddings", "scores"):
        assert torch.equal(resumed_state["memory"][key], state["memory"][key])


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        {"loss.name": "mse+rnc"},
        {"loss.name": "mse+yaware", "loss.kernel_sigma": 0.5, "loss.feature_similarity": "neg_l2"},
        {"loss.name": "supcon_bins+mse", "loss.temperature": 0.1},
        {"loss.name": "mse+wcl_scaled", "loss.memory": 8},
    ],
    ids=lambda o: o["loss.name"] + ("+memory" if "loss.memory" in o else ""),
)
def test_pretrain_runs_with_every_new_objective(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, overrides: dict[str, object]
) -> None:
    config = make_tiny_pretrain_config(**{"optim.epochs": 1, **overrides})
    result = pretrain(config, tmp_path / "run")
    term = next(t for t in str(overrides["loss.name"]).split("+") if t != "mse")
    assert all(
        torch.isfinite(torch.tensor(result.last[k])) for k in ("train_loss", f"train_{term}", "val_mae")
    )


def test_supcon_bins_in_pretrain_gets_the_scales_standardised_edges() -> None:
    objective = build_objective(
        LossConfig(name="supcon_bins"),
        ScoreLabels(pretrain_module.ScoreStandardiser(250.0, 50.0), (200.0, 300.0)),
    )
    loss = objective.contrastive
    assert loss.edges == (-1.0, 1.0)
