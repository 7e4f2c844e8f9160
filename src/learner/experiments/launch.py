"""Where the cells of an experiment grid run (``runtime.launcher``): here, or one job per cell via submitit.

* ``inline`` (default): nothing is launched; the grid's own loop runs every stage in this process.
* ``submitit``: one SLURM job per cell (:class:`learner.experiments.stages.CellJob`), submitted together and
  awaited; ``runtime.launcher_options`` are submitit's executor parameters (``slurm_partition``,
  ``timeout_min``, ``cpus_per_task``, ``gpus_per_node``, ``mem_gb``, ...; ``--launcher-opt k=v``).
* ``submitit-local``: the same jobs as local processes (submitit's local executor): to try a cluster set-up
  on one machine.

Jobs write only their own cell's folders; their submitit logs go to ``OUT/submitit``. When all have
finished, the grid's loop finds every stage complete (``complete.json``) and only collects the numbers,
so results merge and resume exactly as with ``inline``: a cell that completed is never submitted again, a
failed cell is named with its log and retried by ``--resume``. Needs ``pip install 'learner[cluster]'``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from learner.config import LauncherName, RuntimeConfig
from learner.errors import ConfigError, LearnerError
from learner.experiments.stages import CellJob
from learner.layout import RunLayout
from learner.timing import stage

log = logging.getLogger(__name__)

SUBMITIT_CLUSTERS: dict[LauncherName, str | None] = {
    "inline": None,
    "submitit": "slurm",
    "submitit-local": "local",
}
"""``runtime.launcher`` → submitit's cluster (None: this process)."""


def check_launcher(runtime: RuntimeConfig) -> None:
    """Fail before any work when the launcher needs submitit and it is not installed.

    Raises:
        ConfigError: names the extra to install.
    """
    if SUBMITIT_CLUSTERS[runtime.launcher] is not None and importlib.util.find_spec("submitit") is None:
        raise ConfigError(
            f"runtime.launcher={runtime.launcher} needs submitit: pip install 'learner[cluster]'"
        )


def launch_cells(run_dir: Path, jobs: Sequence[CellJob], runtime: RuntimeConfig) -> None:
    """Run the unfinished ``jobs`` as ``runtime.launcher`` says and wait for them (no-op for ``inline``).

    Raises:
        LearnerError: some cells failed (each named with its submitit log); the others are complete.
    """
    cluster = SUBMITIT_CLUSTERS[runtime.launcher]
    if cluster is None:
        return
    check_launcher(runtime)
    import submitit

    pending = [job for job in jobs if not _complete(job)]
    if not pending:
        return
    executor = submitit.AutoExecutor(folder=run_dir / "submitit", cluster=cluster)
    executor.update_parameters(name="learner", **executor_parameters(runtime.launcher_options))
    # the jobs' own stages are timed in their processes: here their wall time is one stage, not "other"
    with stage(f"cells ({runtime.launcher} jobs, {len(pending)})"):
        submitted = [(job, executor.submit(job)) for job in pending]
        log.info(
            "submitted %d cell job(s) via %s: %s", len(submitted), runtime.launcher, run_dir / "submitit"
        )
        failed: list[str] = []
        for job, handle in submitted:
            try:
                handle.result()
            except Exception:  # submitit re-raises what the job raised, wrapped; its log has the traceback
                failed.append(f"{job.where.as_posix()} (log: {handle.paths.stderr})")
    if failed:
        raise LearnerError(
            f"{len(failed)} of {len(submitted)} cell job(s) failed: {'; '.join(failed)}; "
            "rerun with --resume to retry them (completed cells are reused)"
        )


def executor_parameters(options: dict[str, str]) -> dict[str, Any]:
    """``--launcher-opt`` values (text) → typed executor parameters (``timeout_min=60`` → 60)."""
    return {key: yaml.safe_load(value) for key, value in options.items()}


def _complete(job: CellJob) -> bool:
    cell = RunLayout(job.run_dir / job.where)
    stages = [cell.encoder(), *(RunLayout(cell.root / name) for name, _ in job.classifications)]
    return all(stage.complete.is_file() for stage in stages)
