"""The default thread count (issue 23 point 5): runtime.threads, else OMP_NUM_THREADS, else the cores left
after the loader processes, at least 1; a command's count is restored after it."""

from __future__ import annotations

import pytest
import torch

from learner.config import load_config
from learner.training.device import default_threads, thread_count, torch_threads


def test_the_default_leaves_the_loader_workers_their_cores() -> None:
    assert default_threads(2, cores=2) == 1  # the shared 2-core machine: one thread
    assert default_threads(1, cores=2) == 1
    assert default_threads(0, cores=2) == 2
    assert default_threads(2, cores=16) == 14


def test_an_explicit_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_count(load_config(None, ["runtime.threads=5"]).runtime) == (5, "runtime.threads")
    assert thread_count(load_config(None, []).runtime) == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    threads, source = thread_count(load_config(None, ["runtime.workers=1"]).runtime)
    assert threads >= 1
    assert source.startswith("default: ")


def test_a_commands_threads_are_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
