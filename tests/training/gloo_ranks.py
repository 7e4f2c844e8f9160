"""Run a function on gloo CPU ranks over loopback, as the DDP tests need (two ranks on a 2-core machine).

Ranks are *spawned*, not forked: a rank forked from a busy pytest-xdist worker (its OpenMP pool or I/O
threads running) can hang. ``worker(rank, out_dir)`` must be a module-level function (spawn imports it by
name); it runs with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set and one
torch thread, and leaves its results in ``out_dir``.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp


def run_gloo_ranks(
    worker: Callable[[int, str], None], out_dir: Path, *, world: int = 2, timeout_s: float = 300
) -> None:
    """Run ``worker`` on ``world`` spawned ranks; fail the test on a failed rank or after ``timeout_s``.

    The port is picked free and released before rank 0 listens on it, so another process (the other
    pytest-xdist worker starting its own ranks) can take it in between; only that failure is retried, on a
    new port."""
    for attempt in range(3):
        try:
            return _run_once(worker, out_dir, world, timeout_s)
        except mp.ProcessRaisedException as exc:
            if "EADDRINUSE" not in str(exc) or attempt == 2:
                raise


def _run_once(worker: Callable[[int, str], None], out_dir: Path, world: int, timeout_s: float) -> None:
    ranks = mp.start_processes(
        _rank,
        args=(world, _free_port(), worker, str(out_dir)),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s  # generous: the shared CI machine can be heavily loaded
    while not ranks.join(timeout=1):  # raises if a rank failed
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail(f"the {world} DDP ranks did not finish within {timeout_s:g} s")


def _rank(rank: int, world: int, port: int, worker: Callable[[int, str], None], out_dir: str) -> None:
    torch.set_num_threads(1)  # the ranks share the machine's cores
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    worker(rank, out_dir)
    # Leave without the interpreter's teardown: gloo's background threads, still joinable when C++ static
    # destructors run, made a rank abort ("terminate called without an active exception") after its work
    # was done and written, about once in four full runs on the 2-core machine.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
