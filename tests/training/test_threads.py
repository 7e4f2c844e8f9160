"""The default thread count (issue 23 point 5): runtime.threads, else OMP_NUM_THREADS, else every core for a
CPU run and the cores left after the loader processes for a GPU run (at least 1); a command's count is
restored after it."""

from __future__ import annotations

import pytest
import torch

from learner.config import load_config
from learner.training.device import default_threads, thread_count, torch_threads


def test_the_default_gives_a_cpu_run_every_core_and_a_gpu_runs_loader_its_cores() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_threads(2, cpu, cores=2) == 2  # the loader sleeps beside a CPU step: the model gets both
    assert default_threads(0, cpu, cores=16) == 16
    assert default_threads(2, cuda, cores=2) == 1  # on a GPU the host's work is the loader's
    assert default_threads(1, cuda, cores=2) == 1
    assert default_threads(2, cuda, cores=16) == 14


def test_a_cpu_runs_default_names_its_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("learner.training.device.usable_cores", lambda: 3)
    runtime = load_config(None, ["runtime.device=cpu", "runtime.workers=2"]).runtime
    assert thread_count(runtime) == (3, "default: the 3 cores of a CPU run")


def test_a_gpu_runs_default_needs_no_gpu_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """A grid for GPU nodes is submitted from a login node without one: its thread count is no error."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("learner.training.device.usable_cores", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runtime = load_config(None, ["runtime.device=cuda", "runtime.workers=2"]).runtime
    assert thread_count(runtime) == (6, "default: 8 cores − 2 loader workers of a GPU run, at least 1")


def test_an_explicit_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_count(load_config(None, ["runtime.threads=5"]).runtime) == (5, "runtime.threads")
    assert thread_count(load_config(None, []).runtime) == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    threads, source = thread_count(load_config(None, ["runtime.workers=1", "runtime.device=cpu"]).runtime)
    assert threads >= 1
    assert source.startswith("default: ")


def test_a_commands_threads_are_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
