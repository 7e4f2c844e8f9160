"""``learner experiment ... --launcher submitit-local``: one job per cell in its own process, results merged
as with the inline loop, completed cells reused on resume; the cell counter in the experiment's log."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from learner.config import Config, DatasetSpec
from learner.errors import ConfigError
from learner.experiments import stages
from learner.experiments.launch import _failure_line, executor_parameters
from learner.experiments.results import ExperimentResult
from learner.training.faults import FAULT_VARIABLE

pytestmark = pytest.mark.slow

CliRun = Callable[[list[str]], tuple[int, str, str]]


def _no_pretraining_here(*args: object, **kwargs: object) -> None:
    raise AssertionError("this process pretrained: the cells should have run as jobs")


def _tiny_grid_file(
    tmp_path: Path, config: Config, lus: DatasetSpec, losses: tuple[str, ...] = ("mse", "mse+wcl")
) -> Path:
    experiment = {
        **config.model_dump(mode="json"),
        "experiment": {
            "datasets": [{"name": lus.name, "manifest": str(lus.manifest), "scale": lus.scale}],
            "losses": list(losses),
            "seeds": [0],
        },
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(experiment))
    return path


def test_submitit_local_runs_one_job_per_cell_and_merges_like_the_inline_grid(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_experiment_config: Config,
    tiny_lus: DatasetSpec,
    tiny_table3: ExperimentResult,
    cli: CliRun,
) -> None:
    pytest.importorskip("submitit")
    monkeypatch.setattr(stages, "pretrain", _no_pretraining_here)
    config = _tiny_grid_file(tmp_path, tiny_experiment_config, tiny_lus)
    out = tmp_path / "exp"
    argv = ["experiment", "table3", "--config", str(config), "--out", str(out)]
    code, _, err = cli(["-v", *argv, "--launcher", "submitit-local", "--launcher-opt", "timeout_min=20"])
    assert code == 0, err
    jobs = sorted((out / "submitit").glob("*_0_result.pkl"))
    assert len(jobs) == 2  # one job per cell
    assert "cell 1/2: LUS/mse/seed-0" in err  # -v shows the counter; the log keeps it
    assert "cell 2/2: LUS/mse+wcl/seed-0" in (out / "log.txt").read_text()
    cells = {c["dir"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert sorted(cells) == ["LUS/mse+wcl/seed-0", "LUS/mse/seed-0"]
    inline = {c.dir: c for c in tiny_table3.results.cells}
    for where, cell in cells.items():  # the same settings computed in another process: the same numbers
        assert cell["regression"]["val_mae"] == pytest.approx(inline[where].regression["val_mae"], rel=1e-4)
        assert cell["n_test_pairs"] == inline[where].n_test_pairs
    timing = json.loads((out / "results.json").read_text())["timing"]  # the jobs' wall time is a stage
    assert timing["calls"]["cells (submitit-local jobs, 2)"] == 1
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["runtime"]["launcher_options"] == {"timeout_min": "20"}
    # resume inline: every stage is complete, nothing is pretrained (the patch would raise) or resubmitted
    code, _, err = cli([*argv, "--resume"])
    assert code == 0, err
    assert len(sorted((out / "submitit").glob("*_0_result.pkl"))) == 2
    resumed = {c["dir"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert resumed == cells


def test_a_bad_launcher_option_is_a_one_line_error(tmp_path: Path, cli: CliRun) -> None:
    argv = ["experiment", "table3", "--out", str(tmp_path), "--launcher", "submitit", "--launcher-opt", "x"]
    code, _, err = cli(argv)
    assert (code, err.strip()) == (2, "error: --launcher-opt 'x' must look like KEY=VALUE")


def _local_grid(tmp_path: Path, config: Config, lus: DatasetSpec, *options: str) -> list[str]:
    """``learner experiment table3`` of one cell (MSE) as a submitit-local job, with ``--launcher-opt``s."""
    grid = _tiny_grid_file(tmp_path, config, lus, losses=("mse",))
    argv = ["experiment", "table3", "--config", str(grid), "--out", str(tmp_path / "exp")]
    return [*argv, "--launcher", "submitit-local", *(word for o in options for word in ("--launcher-opt", o))]


@pytest.mark.parametrize(
    ("option", "why"),
    [
        ("bogus_key=1", "Unknown executor 'bogus' in parameter 'bogus_key'"),
        ("slurm_bogus=1", "Unknown argument 'bogus' for executor 'slurm'"),
        ("timeout_min=abc", "expected type <class 'int'>"),
        ("timeout_min=[", "not valid YAML"),
        (
            "timeout_min=0120",
            "YAML reads 0120 as the octal number 80; write the number without the leading zero",
        ),
        (
            "slurm_time=1:30:00",
            "YAML reads 1:30:00 as the base-60 number 5400; write the number without colons",
        ),
        (f"gpus_per_node={torch.cuda.device_count() + 1}", f"this machine has {torch.cuda.device_count()}"),
    ],
)
def test_a_launcher_option_submitit_cannot_use_is_one_line_before_any_work(
    option: str, why: str, tmp_path: Path, tiny_experiment_config: Config, tiny_lus: DatasetSpec, cli: CliRun
) -> None:
    """Checked with the plan: a wrong key, a value of the wrong type, more GPUs than local jobs can have
    (which would train on the CPU without a word)."""
    pytest.importorskip("submitit")
    code, _, err = cli(_local_grid(tmp_path, tiny_experiment_config, tiny_lus, option))
    assert code == 2, err
    assert err.startswith(f"error: --launcher-opt {option} (runtime.launcher_options): "), err
    assert why in err
    assert err.count("\n") == 1
    assert not (tmp_path / "exp").exists()


OTHER_BASES = {"timeout_min": ("0120", "octal", 80), "slurm_time": ("1:30:00", "base-60", 5400)}
"""Launcher option text that YAML 1.1 reads as a number in another base (what submitit would get)."""


@pytest.mark.parametrize("key", list(OTHER_BASES))
def test_a_launcher_option_yaml_reads_in_another_base_is_refused_naming_it(key: str) -> None:
    """``--launcher-opt`` text is read as YAML again: ``0120`` would reach submitit as 80 minutes."""
    text, base, read = OTHER_BASES[key]
    with pytest.raises(ConfigError) as refused:
        executor_parameters({"cpus_per_task": "8", key: text})
    assert str(refused.value).startswith(f"--launcher-opt {key}={text} (runtime.launcher_options): ")
    assert f"YAML reads {text} as the {base} number {read}" in str(refused.value)
    assert "\n" not in str(refused.value)
    quoted = executor_parameters({key: f"'{text}'"})  # quoted inside the value: text, as the message says
    assert quoted == {key: text}


def test_launcher_options_in_base_ten_are_read_as_numbers() -> None:
    assert executor_parameters({"timeout_min": "120", "mem_gb": "0", "slurm_partition": "gpu"}) == {
        "timeout_min": 120,
        "mem_gb": 0,
        "slurm_partition": "gpu",
    }


@pytest.mark.parametrize("key", list(OTHER_BASES))
def test_a_config_file_s_quoted_launcher_option_in_another_base_is_refused_before_any_work(
    key: str, tmp_path: Path, tiny_experiment_config: Config, tiny_lus: DatasetSpec, cli: CliRun
) -> None:
    """The config check refuses ``timeout_min: 0120`` and advises quotes; quoted, the option's text is still
    read as YAML when the jobs are set up, so it is refused there, with the plan (``--dry-run`` too)."""
    pytest.importorskip("submitit")
    text, base, read = OTHER_BASES[key]
    config = tiny_experiment_config.model_copy(deep=True)
    config.runtime.launcher_options = {key: text}
    argv = _local_grid(tmp_path, config, tiny_lus)
    for dry in (["--dry-run"], []):
        code, _, err = cli([*argv, *dry])
        assert code == 2, err
        assert err.startswith(f"error: --launcher-opt {key}={text} (runtime.launcher_options): "), err
        assert f"YAML reads {text} as the {base} number {read}" in err
        assert err.count("\n") == 1
    assert not (tmp_path / "exp").exists()


def test_a_plain_timeout_passes_the_plan_check(
    tmp_path: Path, tiny_experiment_config: Config, tiny_lus: DatasetSpec, cli: CliRun
) -> None:
    pytest.importorskip("submitit")
    code, _, err = cli(
        [*_local_grid(tmp_path, tiny_experiment_config, tiny_lus, "timeout_min=120"), "--dry-run"]
    )
    assert code == 0, err


def test_the_slurm_launcher_without_slurm_is_one_line_before_any_work(
    tmp_path: Path,
    tiny_experiment_config: Config,
    tiny_lus: DatasetSpec,
    cli: CliRun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # this Python's tools, no SLURM's
    assert shutil.which("srun") is None
    argv = _local_grid(tmp_path, tiny_experiment_config, tiny_lus)
    code, _, err = cli([*argv, "--launcher", "submitit"])  # the last --launcher wins
    assert code == 2, err
    assert err.startswith("error: runtime.launcher=submitit: submitit cannot submit from this machine (")
    assert err.count("\n") == 1
    assert not (tmp_path / "exp").exists()


def test_a_killed_cell_job_is_named_by_its_state_and_its_log_pointed_at(
    tmp_path: Path,
    tiny_experiment_config: Config,
    tiny_lus: DatasetSpec,
    cli: CliRun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job killed mid-cell leaves no result: the error says so (submitit's state), not the job's last
    line of output; the run folder holds a checkpoint, so it is kept and the line advises ``--resume`` and
    names the job's log, which exists."""
    submitit = pytest.importorskip("submitit")
    monkeypatch.setenv(FAULT_VARIABLE, "checkpoint-saved:1")  # the job's process inherits it
    # submitit waits 15 s for a result a shared file system may be slow to show; here none will come
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 1)
    code, _, err = cli(_local_grid(tmp_path, tiny_experiment_config, tiny_lus))
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert "1 of 1 cell job(s) failed: LUS/mse/seed-0 (job " in err
    assert "ended without a result (killed or crashed; submitit state: " in err
    assert "epoch 1/1" not in err
    assert "submitit INFO" not in err
    log = Path(err.split("log: ")[1].split(")")[0])
    assert log.is_file()
    assert err.rstrip().endswith("rerun with --resume to retry them (completed cells are reused)")


def test_a_grid_that_saved_nothing_promises_no_resume_and_no_log(tmp_path: Path) -> None:
    """Its folder, new, is removed with its logs (runs.removed_unless_started): the line only says where
    the logs are if the folder stays."""
    failed = [("LUS/mse/seed-0", "ended without a result", tmp_path / "submitit" / "1_0_log.err")]
    line = _failure_line(tmp_path, failed, 2)
    assert line.startswith("1 of 2 cell job(s) failed: LUS/mse/seed-0 (ended without a result); ")
    assert "--resume" not in line
    assert "log: " not in line
    assert f"if the run folder is kept: {tmp_path / 'submitit'}" in line
    (tmp_path / "LUS" / "mse" / "seed-0" / "encoder" / "checkpoints" / "last").mkdir(parents=True)
    assert "--resume" in _failure_line(tmp_path, failed, 2)  # a checkpoint: the folder is kept
