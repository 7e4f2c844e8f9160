"""Worker processes die with their parent (issue 21: a killed `data cache` left its pool decoding)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PARENT = textwrap.dedent(
    """
    import multiprocessing, os, signal, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from learner.data.workers import die_with_parent

    def report(path):
        with open(path, "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(120)  # a long decode

    if __name__ == "__main__":
        use = sys.argv[2] == "yes"
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=die_with_parent if use else None)
        pool.submit(report, sys.argv[1])
        while not os.path.exists(sys.argv[1]) or not open(sys.argv[1]).read():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)  # the parent is killed, the worker mid-job
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie is gone for our purposes
        return handle.read().split()[2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
@pytest.mark.parametrize("use", [True, False], ids=["die_with_parent", "without"])
def test_a_worker_dies_with_its_killed_parent(tmp_path: Path, use: bool) -> None:
    script, pid_file = tmp_path / "parent.py", tmp_path / "worker.pid"
    script.write_text(PARENT)
    child = subprocess.run(
        [sys.executable, str(script), str(pid_file), "yes" if use else "no"], timeout=120, check=False
    )
    assert child.returncode == -signal.SIGKILL
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + (10 if use else 2)  # the control only has to outlive a short wait
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert (
            _alive(worker) is not use
        )  # with the initializer it is gone; without, it lingers (why we need it)
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
