"""The launcher's checks and submission without running a job: a refused submission cancels the jobs
already submitted and is one line naming the cell; the dry run checks the launcher options as the real run
does; options the inline launcher does not use are named in a warning."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from learner.config import Config, DatasetSpec, RuntimeConfig
from learner.errors import LearnerError
from learner.experiments.launch import _submit, check_launcher

CliRun = Callable[[list[str]], tuple[int, str, str]]


class _Handle:
    def __init__(self) -> None:
        self.cancelled: list[bool] = []

    def cancel(self, check: bool = True) -> None:
        self.cancelled.append(check)


class _Refusing:
    """An executor that accepts ``accepted`` jobs, then refuses as sbatch does for a bad partition."""

    def __init__(self, accepted: int) -> None:
        self.accepted, self.handles = accepted, list[_Handle]()

    def submit(self, cell: Any) -> _Handle:
        if len(self.handles) == self.accepted:
            raise RuntimeError("sbatch: error: invalid partition specified: nope\nsbatch: error: more")
        self.handles.append(_Handle())
        return self.handles[-1]


class _Job:
    def __init__(self, where: str) -> None:
        self.where = Path(where)


@pytest.mark.parametrize("accepted", [0, 2])
def test_a_refused_submission_cancels_the_jobs_before_it_in_one_line(accepted: int) -> None:
    executor = _Refusing(accepted)
    jobs = [_Job(f"LUS/{loss}/seed-0") for loss in ("mse", "mse+cl", "mse+wcl")]
    with pytest.raises(LearnerError) as refused:
        _submit(executor, jobs, "submitit")  # type: ignore[arg-type]
    line = str(refused.value)
    assert "\n" not in line
    assert line.startswith(
        f"runtime.launcher=submitit could not submit cell {jobs[accepted].where}: "
        "sbatch: error: invalid partition specified: nope"
    )
    assert ("cancelled the 2 job(s) submitted before it" in line) == (accepted == 2)
    assert [handle.cancelled for handle in executor.handles] == [[False]] * accepted


def test_every_job_is_submitted_when_none_is_refused() -> None:
    executor = _Refusing(accepted=3)
    jobs = [_Job(f"LUS/mse/seed-{seed}") for seed in range(3)]
    submitted = _submit(executor, jobs, "submitit")  # type: ignore[arg-type]
    assert [(job, handle) for job, handle in submitted] == list(zip(jobs, executor.handles, strict=True))
    assert all(not handle.cancelled for handle in executor.handles)


def test_options_the_inline_launcher_does_not_use_are_named(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="learner.experiments.launch"):
        check_launcher(RuntimeConfig(launcher_options={"slurm_partition": "gpu"}))
        check_launcher(RuntimeConfig())
    (record,) = caplog.records
    assert record.getMessage() == (
        "runtime.launcher_options (slurm_partition) are not used: runtime.launcher=inline runs the cells here"
    )


def test_the_dry_run_checks_the_launcher_options_as_the_run_does(
    tmp_path: Path, tiny_experiment_config: Config, tiny_lus: DatasetSpec, cli: CliRun
) -> None:
    pytest.importorskip("submitit")
    grid = tmp_path / "grid.yaml"
    experiment = {"datasets": [{"name": "LUS", "manifest": str(tiny_lus.manifest), "scale": tiny_lus.scale}]}
    config = tiny_experiment_config.model_dump(mode="json")
    grid.write_text(yaml.safe_dump({**config, "experiment": experiment}))
    argv = ["experiment", "table3", "--config", str(grid), "--out", str(tmp_path / "exp")]
    options = ["--launcher", "submitit-local", "--launcher-opt", "bogus_key=1"]
    for dry in ([], ["--dry-run"]):
        code, _, err = cli([*argv, *options, *dry])
        assert code == 2, err
        assert err.startswith("error: --launcher-opt bogus_key=1 (runtime.launcher_options): "), err
        assert err.count("\n") == 1
    assert not (tmp_path / "exp").exists()
