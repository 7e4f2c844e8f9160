"""``learner experiment table3 --launcher submitit`` on the real one-node SLURM cluster of
:mod:`slurm_cluster`: a tiny grid (2 losses × 2 seeds on the tiny LUS phantom) whose cells equal the inline
run's bit for bit, after one cell was cancelled while running (``scancel``) and another failed (a bad config
injected into its job), both named with their job id and log, and ``--resume`` completed them."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from slurm_cluster import SlurmCluster

from learner.config import Config, DatasetSpec, RuntimeConfig
from learner.experiments import launch as launching
from learner.experiments import table3
from learner.experiments.stages import CellJob

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CliRun = Callable[[list[str]], tuple[int, str, str]]
BROKEN = "LUS/mse+wcl/seed-1"
"""The cell whose job gets a bad config (a manifest that does not exist) in the first run."""


def _grid_file(tmp_path: Path, config: Config, lus: DatasetSpec) -> Path:
    experiment = {
        **config.model_dump(mode="json"),
        "experiment": {
            "datasets": [{"name": lus.name, "manifest": str(lus.manifest), "scale": lus.scale}],
            "losses": ["mse", "mse+wcl"],
            "seeds": [0, 1],
        },
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(experiment))
    return path


def _cells(out: Path) -> dict[str, Any]:
    """results.json's cells without what depends on where and when they ran (wall times, paths)."""
    cells = json.loads((out / "results.json").read_text())["cells"]
    return {cell["dir"]: _numbers(cell) for cell in cells}


def _numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items() if "seconds" not in k and k not in {"timing"}}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _cancel_first_running(
    slurm: SlurmCluster, out: Path, cancelled: list[str], stop: threading.Event
) -> None:
    """scancel the first cell job seen running whose cell is not :data:`BROKEN` (read from the job's
    submission pickle), 2 s after it started: SLURM sends SIGTERM (submitit ignores it) and SIGKILL
    ``KillWait`` (3 s here) later, before the tiny cell (about 8 s) can finish. ``--full --signal=KILL``
    so that no race remains; the SIGTERM path is the pre-emption test's (test_cluster_pretrain.py)."""

    from submitit.core.utils import DelayedSubmission

    while not stop.is_set():
        listing = slurm.run("squeue", "--noheader", "--states=RUNNING", "--format=%i %M", check=False)
        for job, elapsed in (line.split() for line in listing.stdout.splitlines()):
            submission = out / "submitit" / f"{job}_submitted.pkl"
            seconds = sum(int(x) * 60**i for i, x in enumerate(reversed(elapsed.split(":"))))
            if seconds < 2 or not submission.is_file():
                continue
            where = DelayedSubmission.load(submission).function.job.where.as_posix()
            if where != BROKEN:
                slurm.run("scancel", "--full", "--signal=KILL", job, check=False)
                cancelled.append(job)
                return
        time.sleep(0.3)


def test_grid_on_slurm_equals_inline_after_a_cancelled_and_a_failed_cell(
    slurm_env: SlurmCluster,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_experiment_config: Config,
    tiny_lus: DatasetSpec,
    cli: CliRun,
    one_thread: None,
) -> None:
    pytest.importorskip("submitit")
    grid = _grid_file(tmp_path, tiny_experiment_config, tiny_lus)
    inline = tmp_path / "inline"
    code, _, err = cli(["experiment", "table3", "--config", str(grid), "--out", str(inline)])
    assert code == 0, err

    launch = table3.launch_cells

    def inject(run_dir: Path, jobs: Sequence[CellJob], runtime: RuntimeConfig) -> None:
        bad = {"data": tiny_experiment_config.data.model_copy(update={"manifest": str(tmp_path / "no.csv")})}
        broken = [
            dataclasses.replace(job, encoder=job.encoder.model_copy(update=bad))
            if job.where.as_posix() == BROKEN else job
            for job in jobs
        ]  # fmt: skip
        launch(run_dir, broken, runtime)

    monkeypatch.setattr(table3, "launch_cells", inject)
    # the cluster's file system is this machine's: a job's result is there when the job ends, and the
    # cancelled job need not be waited for the 30 s a shared file system may take
    monkeypatch.setattr(launching, "RESULT_GRACE_S", 3.0)
    out = tmp_path / "slurm"
    argv = ["experiment", "table3", "--config", str(grid), "--out", str(out), "--launcher", "submitit"]
    options = ["--launcher-opt", "timeout_min=10", "--launcher-opt", "cpus_per_task=1"]
    cancelled: list[str] = []
    stop = threading.Event()
    canceller = threading.Thread(target=_cancel_first_running, args=(slurm_env, out, cancelled, stop))
    canceller.start()
    try:
        code, _, err = cli([*argv, *options])
    finally:
        stop.set()
        canceller.join()
    assert code != 0
    assert len(cancelled) == 1, err
    assert "2 of 4 cell job(s) failed" in err, err
    assert f"{BROKEN} (job " in err, err
    assert "no.csv" in err, err  # the job's own error line
    assert f"(job {cancelled[0]}: ended " in err, err
    assert "without a result; log: " in err, err
    assert str(out / "submitit") in err  # where the logs are
    finished = [p.parent.parent.name for p in out.glob("LUS/*/seed-*/encoder/complete.json")]
    assert len(finished) >= 2  # the other cells finished

    monkeypatch.setattr(table3, "launch_cells", launch)
    code, _, err = cli([*argv, *options, "--resume"])
    assert code == 0, err
    assert _cells(out) == _cells(inline)
