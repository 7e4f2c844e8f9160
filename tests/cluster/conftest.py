"""The session's real one-node SLURM cluster (:mod:`slurm_cluster`) for the tests of this folder.

Each test module here is marked ``slurm`` and ``slow`` (the fast lane, ``pytest -m "not slow"``, leaves
them out) and skips with a one-line reason where the cluster cannot start: the Debian packages
``slurm-wlm`` and ``munge`` missing, not root, or a SLURM or munge daemon already running (never touched);
``LEARNER_REQUIRE_SLURM=1`` (set by ``.ci/run``) turns that skip into a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, missing_binaries, refusal, start_cluster


@pytest.fixture(scope="session")
def slurm(
    shared_root: Path, shared_lock: Callable[[str], AbstractContextManager[None]]
) -> Iterator[SlurmCluster]:
    """munged, slurmctld and slurmd started (by PID) from a generated config, stopped at the end.

    Under pytest-xdist the workers share one cluster: the first to need it starts it, each one counts
    itself in ``users``, and the last to leave stops it (a cluster of this session is not "already
    running" for the refusal)."""
    root = shared_root / "slurm-cluster"
    users = shared_root / "slurm-cluster.users"
    with shared_lock("slurm-cluster"):
        cluster = SlurmCluster.load(root)
        if cluster is None:
            missing = missing_binaries()
            why = refusal()
            if missing:
                why = f"no SLURM here ({', '.join(missing)} missing): apt-get install slurm-wlm munge"
            if why is not None:
                _skip(why)
            cluster = start_cluster(root)
            users.write_text("0")
        users.write_text(str(int(users.read_text()) + 1))
    try:
        yield cluster
    finally:
        with shared_lock("slurm-cluster"):
            left = int(users.read_text()) - 1
            users.write_text(str(left))
            if left == 0:
                cluster.stop()


def _skip(why: str) -> None:
    """Skip with ``why``; fail instead where ``LEARNER_REQUIRE_SLURM`` is set (``.ci/run``, as root with the
    packages installed), so that CI cannot pass these tests by skipping them."""
    if os.environ.get("LEARNER_REQUIRE_SLURM"):
        pytest.fail(f"LEARNER_REQUIRE_SLURM is set but {why}")
    pytest.skip(why)


@pytest.fixture
def slurm_env(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """:func:`slurm`, with ``SLURM_CONF`` (the cluster) and ``OMP_NUM_THREADS=1`` (bit-identical numbers in
    every job) in this process's environment, which ``sbatch`` hands to the jobs."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in ("SLURM_JOB_ID", "SLURM_STEP_ID", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return slurm
