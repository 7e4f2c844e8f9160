"""The parts of a pretraining called alone (learner.training.pretrain and learner.training.epoch): on the tiny
phantom cohort, the parts in the driver's order give the full run's numbers bit for bit, and the scan cache
is built once per process."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from learner.config import Config
from learner.data import cache_entry
from learner.data.cache import CacheReport
from learner.training import pretrain as pretrain_module
from learner.training.distributed import DistInfo
from learner.training.epoch import LoopState, restore, train_one_epoch, validate_and_checkpoint
from learner.training.loaders import build_loaders
from learner.training.plan import plan_pretraining
from learner.training.pretrain import (
    build_model_and_objective,
    lr_schedule,
    open_run,
    prepare_scans,
    pretrain,
)
from learner.training.seeding import seed_everything

pytestmark = pytest.mark.slow

ONE_EPOCH = {"optim.epochs": 1, "loss.memory": 4}  # the memory: a step's state that outlives the step


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_epoch_of_parts_is_the_first_epoch_of_a_full_run_bit_for_bit(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, one_thread: None
) -> None:
    config = make_tiny_pretrain_config(**ONE_EPOCH)
    full = pretrain(config, tmp_path / "full")
    csv = pd.read_csv(tmp_path / "full" / "metrics.csv")

    # the driver's order, by hand: plan, seeds, run directory, scans, loaders, model, restore, one epoch
    plan = plan_pretraining(config, tmp_path / "parts")
    info, cpu = DistInfo(), torch.device("cpu")
    seed_everything(config.seed, deterministic=True)
    run = open_run(plan, info)
    scans = prepare_scans(plan, info, run)
    loaders = build_loaders(config, scans, info, cpu)
    trainee = build_model_and_objective(config, scans.standardiser, cpu)
    last_dir, best_dir = plan.run_dir / "checkpoints" / "last", plan.run_dir / "checkpoints" / "best"
    state = restore(plan, info, run, trainee, last_dir, best_dir)
    assert state == LoopState()  # a new run: nothing restored
    before = [p.detach().clone() for p in trainee.model.parameters()]
    schedule = lr_schedule(config.optim, loaders.steps_per_epoch)

    def lr_at(step: int) -> float:
        return schedule(step, config.optim.epochs * loaders.steps_per_epoch, config.optim.lr)

    row = train_one_epoch(trainee, loaders, 1, state.step, lr_at, last_dir=last_dir)

    assert loaders.steps_per_epoch == config.optim.max_steps_per_epoch == 2
    assert row["step"] == state.step + loaders.steps_per_epoch
    assert len(trainee.memory.state_dict()["scores"]) == 4  # two steps of 4 clips, capped at loss.memory
    assert any(not torch.equal(a, b) for a, b in zip(before, trainee.model.parameters(), strict=True))
    train_keys = ["epoch", "step", "lr", "train_loss", "train_mse", "train_wcl"]
    assert {k: row[k] for k in train_keys} == {k: full.history[0][k] for k in train_keys}
    assert row["train_loss"] == csv["train_loss"][0]  # what metrics.csv got, exactly

    after = validate_and_checkpoint(
        row, state, trainee, loaders, run, [],
        last_dir=last_dir, best_dir=best_dir, batch_size=config.optim.batch_size,
        progress=pretrain_module.progress_bar(enabled=False), epochs=config.optim.epochs,
    )  # fmt: skip
    assert after.step == 2
    assert after.history == full.history  # validation too: every column, exactly
    assert after.best is after.history[0]
    for name in ("model.safetensors", "train_state.pt"):  # weights, optimiser, RNG states, memory
        assert _sha256(last_dir / name) == _sha256(tmp_path / "full" / "checkpoints" / "last" / name)
    assert _sha256(best_dir / "model.safetensors") == _sha256(last_dir / "model.safetensors")


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts of the pretraining module's build_cache calls and ScanCache constructions."""
    counts = {"build_cache": 0, "ScanCache": 0}
    real_build, real_cache = pretrain_module.build_cache, pretrain_module.ScanCache

    def build_cache(*args: Any, **kwargs: Any) -> CacheReport:
        counts["build_cache"] += 1
        return real_build(*args, **kwargs)

    class ScanCache(real_cache):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            counts["ScanCache"] += 1
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "build_cache", build_cache)
    monkeypatch.setattr(pretrain_module, "ScanCache", ScanCache)
    return counts


def test_a_run_builds_and_checks_the_scan_cache_once(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, counted: dict[str, int]
) -> None:
    pretrain(make_tiny_pretrain_config(**ONE_EPOCH), tmp_path / "run")
    assert counted == {"build_cache": 1, "ScanCache": 1}


def test_a_run_checks_each_cache_entry_once_per_process(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a warm cache, as every run after the first finds it: a cold build reads each new entry back once in
    # the process that wrote it, which is not the check this test counts
    pretrain(make_tiny_pretrain_config(**ONE_EPOCH), tmp_path / "warm")
    monkeypatch.setattr(cache_entry, "_VERIFIED", {})  # as in a process started afresh: nothing checked
    checked: list[Path] = []
    real = cache_entry.read_entry

    def read_entry(path: Path, source: str) -> tuple[Any, int]:
        checked.append(path)
        return real(path, source)

    monkeypatch.setattr(cache_entry, "read_entry", read_entry)
    pretrain(make_tiny_pretrain_config(**ONE_EPOCH), tmp_path / "run")  # workers=0: every read in-process
    assert checked
    assert len(checked) == len(set(checked))
    checked.clear()
    pretrain(make_tiny_pretrain_config(**ONE_EPOCH), tmp_path / "again")  # the same process: all checked
    assert checked == []
