"""``learner experiment ... --launcher submitit-local``: one job per cell in its own process, results merged
as with the inline loop, completed cells reused on resume; the cell counter in the experiment's log."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from learner.config import Config, DatasetSpec
from learner.experiments import stages
from learner.experiments.results import ExperimentResult

pytestmark = pytest.mark.slow

CliRun = Callable[[list[str]], tuple[int, str, str]]


def _no_pretraining_here(*args: object, **kwargs: object) -> None:
    raise AssertionError("this process pretrained: the cells should have run as jobs")


def _tiny_grid_file(tmp_path: Path, config: Config, lus: DatasetSpec) -> Path:
    experiment = {
        **config.model_dump(mode="json"),
        "experiment": {
            "datasets": [{"name": lus.name, "manifest": str(lus.manifest), "scale": lus.scale}],
            "losses": ["mse", "mse+wcl"],
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
