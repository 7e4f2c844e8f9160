"""``runtime.cells_side_by_side``: a tiny Table 3 grid (MSE and MSE+wCL, seed 0, data on the device) whose
cells' encoders are pretrained side by side in one process gives the same ``results.json`` cells as the
same grid cell by cell (all but the measured pretraining seconds), with every encoder stage's
``complete.json`` written; the key is refused where it cannot apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig, apply_overrides
from learner.errors import ConfigError
from learner.experiments import table3
from learner.layout import RunLayout

pytestmark = pytest.mark.slow


def grid_cells(config: Config, lus: DatasetSpec, out: Path) -> dict[str, dict[str, Any]]:
    grid = ExperimentConfig(datasets=[lus], losses=["mse", "mse+wcl"], seeds=[0])
    table3.run_table3(Experiment(config, grid), out)
    cells = json.loads((out / "results.json").read_text())["cells"]
    return {cell["dir"]: {k: v for k, v in cell.items() if k != "pretrain_seconds"} for cell in cells}


def test_a_grid_with_cells_side_by_side_gives_the_cells_it_gives_cell_by_cell(
    tiny_experiment_config: Config, tiny_lus: DatasetSpec, tmp_path: Path, one_thread: None
) -> None:
    config = apply_overrides(tiny_experiment_config, {"data.device_data": True})
    by_cell = grid_cells(config, tiny_lus, tmp_path / "by-cell")
    side = apply_overrides(config, {"runtime.cells_side_by_side": True})
    together = grid_cells(side, tiny_lus, tmp_path / "together")
    assert sorted(together) == ["LUS/mse+wcl/seed-0", "LUS/mse/seed-0"]
    assert together == by_cell
    timing = json.loads((tmp_path / "together" / "results.json").read_text())["timing"]
    assert any(name.startswith("pretrain side by side") for name in timing["calls"]), timing["calls"]
    for where in together:
        assert RunLayout(tmp_path / "together" / where).encoder().complete.is_file()


def test_cells_side_by_side_is_refused_where_it_cannot_apply(
    tiny_experiment_config: Config, tiny_lus: DatasetSpec, tmp_path: Path
) -> None:
    grid = ExperimentConfig(datasets=[tiny_lus], losses=["mse"], seeds=[0])
    loader_path = apply_overrides(tiny_experiment_config, {"runtime.cells_side_by_side": True})
    with pytest.raises(ConfigError, match=r"data\.device_data=true"):
        table3.plan_table3(Experiment(loader_path, grid), tmp_path / "a")
    jobs = apply_overrides(loader_path, {"data.device_data": True, "runtime.launcher": "submitit"})
    with pytest.raises(ConfigError, match=r"runtime\.launcher=inline"):
        table3.plan_table3(Experiment(jobs, grid), tmp_path / "b")
