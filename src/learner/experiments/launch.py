"""Where the cells of an experiment grid run (``runtime.launcher``): here, or one job per cell via submitit.

* ``inline`` (default): nothing is launched; the grid's own loop runs every stage in this process.
* ``submitit``: one SLURM job per cell (:class:`learner.experiments.stages.CellJob`, requeued by submitit on
  pre-emption: :class:`RequeueableCell`), submitted together and awaited; ``runtime.launcher_options`` are
  submitit's executor parameters (``slurm_partition``, ``timeout_min``, ``cpus_per_task``,
  ``gpus_per_node``, ``mem_gb``, ...; ``--launcher-opt k=v``).
* ``submitit-local``: the same jobs as local processes (submitit's local executor): to try a cluster set-up
  on one machine.

Jobs write only their own cell's folders; their submitit logs go to ``OUT/submitit``. When all have
finished, the grid's loop finds every stage complete (``complete.json``) and only collects the numbers,
so results merge and resume exactly as with ``inline``: a cell that completed is never submitted again, a
failed cell is named with its job id, its end (the job's error line, or for a job that left no result
submitit's state or a SLURM state such as ``CANCELLED``) and its log, and retried by ``--resume``. On SLURM
each job is awaited through ``scontrol`` (no accounting database needed). Needs
``pip install 'learner[cluster]'``.

The launcher options are checked with the plan, before any work (:func:`check_launcher`): each is set on
a throwaway executor of the same kind, so a key or value submitit refuses is one line naming it, and
``submitit-local`` is refused more GPUs per job than this machine has (its jobs would train on the CPU).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from learner.config import Config, LauncherName, RuntimeConfig, load_yaml
from learner.errors import ConfigError, LearnerError
from learner.experiments.stages import CellJob, ensure_encoders_side_by_side
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
    """Fail before any work when the launcher cannot run the cells as configured.

    Raises:
        ConfigError: submitit is not installed (names the extra), ``runtime.cells_side_by_side`` off the
            inline launcher, or a launcher option submitit cannot use (:func:`submitit_executor`). Options
            given to the inline launcher are not an error (a config may keep them for its cluster runs): a
            warning names them.
    """
    if runtime.cells_side_by_side and runtime.launcher != "inline":
        raise ConfigError(
            f"runtime.cells_side_by_side runs the cells in this process; set runtime.launcher=inline, got "
            f"{runtime.launcher}"
        )
    if SUBMITIT_CLUSTERS[runtime.launcher] is None:
        if runtime.launcher_options:  # e.g. --launcher-opt slurm_partition=... without --launcher submitit
            log.warning(
                "runtime.launcher_options (%s) are not used: runtime.launcher=%s runs the cells here",
                ", ".join(runtime.launcher_options),
                runtime.launcher,
            )
        return
    if importlib.util.find_spec("submitit") is None:
        raise ConfigError(
            f"runtime.launcher={runtime.launcher} needs submitit: pip install 'learner[cluster]'"
        )
    with tempfile.TemporaryDirectory(prefix="learner-launcher-") as scratch:  # a local executor writes there
        submitit_executor(runtime.launcher, Path(scratch), runtime.launcher_options)


def submitit_executor(launcher: LauncherName, folder: Path, options: Mapping[str, str]) -> Any:
    """submitit's executor for ``launcher`` (``submitit`` or ``submitit-local``), its files in ``folder``,
    with the job name ``learner`` and ``options`` (``--launcher-opt`` text, read as YAML values:
    :func:`executor_parameters`) set one by one, so that a refusal names its option.

    Raises:
        ConfigError: ``submitit`` where no ``srun`` runs; an option that is not a YAML value or is a number
            YAML reads in base 8 or 60 (:func:`executor_parameters`), a key no executor knows, a value of
            the wrong type or one the executor refuses; for ``submitit-local`` more ``gpus_per_node`` than
            this machine has GPUs.
    """
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=SUBMITIT_CLUSTERS[launcher])
    except RuntimeError as exc:  # submitit's SLURM executor looks for srun first
        raise ConfigError(
            f"runtime.launcher={launcher}: submitit cannot submit from this machine ({_first_line(exc)}); "
            "run it where SLURM is, or use --launcher submitit-local to run the jobs here"
        ) from None
    executor.update_parameters(name="learner")
    for key, text in options.items():
        (value,) = executor_parameters({key: text}).values()
        where = _option_where(key, text)
        try:  # submitit checks with assert, NameError and ValueError
            executor.update_parameters(**{key: value})
        except (AssertionError, NameError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: submitit refuses it: {_first_line(exc)}") from None
        gpus, here = executor.parameters.get("gpus_per_node") or 0, torch.cuda.device_count()
        if launcher == "submitit-local" and gpus > here:  # the jobs would train on the CPU without a word
            raise ConfigError(
                f"{where}: submitit-local jobs run here, and this machine has {here} GPU(s): ask for at most "
                f"{here}"
            )
    return executor


def launch_cells(run_dir: Path, jobs: Sequence[CellJob], runtime: RuntimeConfig) -> None:
    """Run the unfinished ``jobs`` as ``runtime.launcher`` says and wait for them (for ``inline``, only the
    new encoders of ``runtime.cells_side_by_side``: :func:`pretrain_cells_side_by_side`).

    Raises:
        LearnerError: some cells failed or ended without a result (each named with its job id, how it ended
            and its submitit log); the others are complete.
    """
    cluster = SUBMITIT_CLUSTERS[runtime.launcher]
    if cluster is None:
        if runtime.cells_side_by_side:
            pretrain_cells_side_by_side(jobs)
        return
    check_launcher(runtime)
    pending = [job for job in jobs if not _complete(job)]
    if not pending:
        return
    executor = submitit_executor(runtime.launcher, run_dir / "submitit", runtime.launcher_options)
    # the jobs' own stages are timed in their processes: here their wall time is one stage, not "other"
    with stage(f"cells ({runtime.launcher} jobs, {len(pending)})"):
        submitted = _submit(executor, pending, runtime.launcher)
        log.info(
            "submitted %d cell job(s) via %s: %s", len(submitted), runtime.launcher, run_dir / "submitit"
        )
        failed: list[tuple[str, str, Path]] = []  # (cell, how its job ended, its log)
        for job, handle in submitted:
            ended = _wait(handle) if cluster == "slurm" else None
            try:
                if ended is not None:
                    raise RuntimeError(ended)
                handle.result()
            except Exception as exc:  # submitit re-raises what the job raised, wrapped; its log has it all
                end = f"job {handle.job_id}: {ended or _job_end(exc)}"
                failed.append((job.where.as_posix(), end, handle.paths.stderr))
    if failed:
        raise LearnerError(_failure_line(run_dir, failed, len(submitted)))


def _submit(executor: Any, jobs: Sequence[CellJob], launcher: str) -> list[tuple[CellJob, Any]]:
    """Submit every job; where one is refused (sbatch's partition, account or QoS check: submitit's
    ``FailedJobError``), the jobs already submitted are cancelled, so a grid that failed to start leaves
    nothing running.

    Raises:
        LearnerError: the refused cell and the submitter's first line.
    """
    submitted: list[tuple[CellJob, Any]] = []
    for job in jobs:
        try:
            submitted.append((job, executor.submit(RequeueableCell(job))))
        except Exception as exc:  # what submitit raises depends on the executor: FailedJobError, OSError
            for _, handle in submitted:
                handle.cancel(check=False)
            cancelled = f"; cancelled the {len(submitted)} job(s) submitted before it" if submitted else ""
            raise LearnerError(
                f"runtime.launcher={launcher} could not submit cell {job.where.as_posix()}: "
                f"{_first_line(exc)}{cancelled}"
            ) from None
    return submitted


def _failure_line(run_dir: Path, failed: Sequence[tuple[str, str, Path]], submitted: int) -> str:
    """The error line for ``failed`` cells (each: where, how its job ended, its log). A grid whose folder
    holds nothing worth resuming (:meth:`RunLayout.started`) is removed, its logs with it, when it was new
    (:func:`learner.runs.removed_unless_started`): then neither ``--resume`` nor a log is promised, only
    where the logs are if the folder stays (a ``--resume`` run's does)."""
    if RunLayout(run_dir).started():
        cells = "; ".join(f"{where} ({end}; log: {path})" for where, end, path in failed)
        advice = "rerun with --resume to retry them (completed cells are reused)"
    else:
        cells = "; ".join(f"{where} ({end})" for where, end, _ in failed)
        advice = (
            "no cell saved anything to resume from, so rerun the command (the jobs' logs, if the run folder "
            f"is kept: {run_dir / 'submitit'})"
        )
    return f"{len(failed)} of {submitted} cell job(s) failed: {cells}; {advice}"


class RequeueableCell:
    """A cell's job as submitit runs it: on pre-emption or near its time limit (submitit's SIGUSR2) submitit
    calls :meth:`checkpoint` and requeues the job, which then continues the cell's stages from their
    checkpoints (a pretraining in a SLURM job writes one before that signal acts:
    :mod:`learner.training.preemption`)."""

    def __init__(self, job: CellJob) -> None:
        self.job = job

    def __call__(self) -> str:
        return self.job()

    def checkpoint(self) -> Any:
        """submitit's requeue hook: the same cell again (its completed stages are reused)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def pretrain_cells_side_by_side(jobs: Sequence[CellJob]) -> None:
    """``runtime.cells_side_by_side``: the new encoder stages of the cells that share a dataset
    (``data.manifest``) pretrained together in this process, one group per dataset
    (:func:`~learner.experiments.stages.ensure_encoders_side_by_side`); the grid's loop then finds them
    complete."""
    groups: dict[str, list[tuple[Config, Path, str]]] = defaultdict(list)
    for job in jobs:
        groups[str(job.encoder.data.manifest)].append((job.encoder, job.encoder_dir, str(job.where)))
    for group in groups.values():
        ensure_encoders_side_by_side(group)


def executor_parameters(options: Mapping[str, str]) -> dict[str, Any]:
    """``--launcher-opt`` values (text) → typed executor parameters (``timeout_min=60`` → 60), each read
    as YAML the way a config file is (:func:`learner.config.load_yaml`).

    Raises:
        ConfigError: one line naming the option: text that is not YAML, or a number that YAML 1.1 reads in
            another base than the user meant (``timeout_min=0120`` is octal 80, ``1:30:00`` base-60 5400;
            a config file's quotes do not help, the option's text is read again here).
    """
    return {key: load_yaml(value, _option_where(key, value)) for key, value in options.items()}


def _option_where(key: str, text: str) -> str:
    """How an error names a launcher option: as given on the command line, and where a config keeps it."""
    return f"--launcher-opt {key}={text} (runtime.launcher_options)"


SLURM_ENDED = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "TIMEOUT",
})  # fmt: skip
"""SLURM job states after which no result can come any more (a requeued job is PENDING again)."""

POLL_S = 2.0
RESULT_GRACE_S = 30.0
"""How long a result may take to appear on a shared file system after its job ended."""


def _wait(handle: Any) -> str | None:
    """Wait for a SLURM job's result file; the job's final state when it ended without one (``CANCELLED``:
    ``scancel``, ``TIMEOUT``, ...), else None. Asks ``scontrol`` (the controller, every few seconds), not
    submitit's ``sacct`` poll, which needs the cluster's accounting database and checks once a minute."""
    result = Path(handle.paths.result_pickle)
    ended_at: float | None = None
    while not result.exists():
        state = _slurm_state(str(handle.job_id))
        if state in SLURM_ENDED or state == "":  # "": the controller forgot it (MinJobAge)
            ended_at = ended_at or time.monotonic()
            if time.monotonic() - ended_at > RESULT_GRACE_S:
                return f"ended {state or 'without a trace'} without a result"
        else:
            ended_at = None
        time.sleep(POLL_S)
    return None


def _slurm_state(job_id: str) -> str:
    """``JobState`` of ``job_id`` as the SLURM controller reports it; "" for a job it does not know."""
    try:
        done = subprocess.run(
            ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"  # keep waiting: the controller may be busy
    if done.returncode != 0:
        return "" if "Invalid job id" in done.stderr else "UNKNOWN"
    fields = dict(item.split("=", 1) for item in done.stdout.split() if "=" in item)
    return fields.get("JobState", "UNKNOWN")


def _job_end(exc: Exception) -> str:
    """How a job ended without its result, from what submitit raised: for a job that raised, its own error
    line (``ManifestError: ...``) from the traceback submitit wraps; for one that left no result (killed,
    crashed) that and submitit's state, not the job's last output, which submitit quotes after it."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    if isinstance(exc, UncompletedJobError) and not isinstance(exc, FailedJobError):
        state = re.search(r"has not produced any output \(state: ([^)\n]*)\)", str(exc))
        # a local job's state is its controller's, FINISHED even when the job itself was killed
        detail = f"; submitit state: {state[1]}" if state else ""
        return f"ended without a result (killed or crashed{detail})"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"[\w.]*(Error|Exception|Interrupt)\b", line)]
    return (errors or lines or [type(exc).__name__])[-1]


def _first_line(exc: BaseException) -> str:
    """An exception's first line of text, without a closing full stop (part of a longer line)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


def _complete(job: CellJob) -> bool:
    cell = RunLayout(job.run_dir / job.where)
    stages = [cell.encoder(), *(RunLayout(cell.root / name) for name, _ in job.classifications)]
    return all(stage.complete.is_file() for stage in stages)
