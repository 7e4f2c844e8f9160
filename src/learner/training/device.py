"""The one device rule: where pretraining runs and where frozen encoders embed (Section 2.3, Table 2).

``auto`` takes CUDA when a device is visible and the CPU otherwise; asking for ``cuda`` on a machine without
one is a configuration error, not a silent fall-back, because it would change how long a run takes (and,
through non-deterministic kernels, its numbers) without anyone having asked for that.

Threads: a command runs torch on :func:`thread_count` intra-op threads (``runtime.threads``, else
``OMP_NUM_THREADS``, else every core for a CPU run and the cores left after the loader processes for a GPU
run); the commands set it (:func:`torch_threads`), a Python caller keeps whatever ``torch.set_num_threads``
it chose.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from learner.config import RuntimeConfig
from learner.errors import ConfigError


def resolve_device(requested: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when visible) → the torch device to use.

    Raises:
        ConfigError: ``cuda`` was requested and no CUDA device is visible.
    """
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device is 'cuda' but no CUDA device is visible; use --device cpu or auto")
    return torch.device("cuda" if runs_on_cuda(requested) else "cpu")


def runs_on_cuda(requested: str) -> bool:
    """Whether ``runtime.device`` asks for a GPU run: ``cuda``, or ``auto`` where CUDA is visible. Unlike
    :func:`resolve_device` it does not need the device here (a grid submitted to GPU nodes from a login
    node without one)."""
    return requested == "cuda" or (requested == "auto" and torch.cuda.is_available())


def default_threads(workers: int, device: torch.device, cores: int | None = None) -> int:
    """torch's intra-op threads when neither ``runtime.threads`` nor ``OMP_NUM_THREADS`` says.

    On the CPU, every core: the model's step is the work there, and the ``workers`` loader processes, which
    read decoded clips from the cache over 100× faster than a CPU step uses them (BENCHMARKS.md, target 4),
    sleep most of the time. On a quiet 2-core machine 2 threads train the demo 1.5× faster than 1 (10.0 s
    against 15.0 s an epoch, BENCHMARKS.md). On a GPU the host's work is the loader's, so torch gets the
    cores left after the ``workers`` processes, at least 1.
    """
    cores = cores if cores is not None else usable_cores()
    return cores if device.type == "cpu" else max(1, cores - workers)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_count(runtime: RuntimeConfig) -> tuple[int, str]:
    """The intra-op threads a command uses and where that number comes from: ``runtime.threads`` when set,
    else ``OMP_NUM_THREADS`` when set, else :func:`default_threads`."""
    if runtime.threads is not None:
        return runtime.threads, "runtime.threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cores, workers = usable_cores(), runtime.workers
    device = torch.device("cuda" if runs_on_cuda(runtime.device) else "cpu")
    threads = default_threads(workers, device, cores)
    if device.type == "cpu":
        return threads, f"default: the {cores} cores of a CPU run"
    return threads, f"default: {cores} cores − {workers} loader workers of a GPU run, at least 1"


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run the block on ``threads`` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
