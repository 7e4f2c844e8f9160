"""A grid's report shows the grid's axes in its Settings, not one cell's keys (issue 23 point 8)."""

from __future__ import annotations

from typing import Any

import yaml

from learner.config import load_experiment
from learner.report.sections import settings_section


def _grid_config(*sets: str) -> dict[str, Any]:
    """An experiment's ``config.yaml`` as the report reads it: the base config and its ``experiment:``."""
    experiment = load_experiment(
        None,
        [
            "experiment.losses=[mse,mse+cl,mse+wcl]",
            "experiment.seeds=[0,1]",
            "experiment.datasets=[{name: LUS, manifest: /data/lus.csv, scale: sf}]",
            *sets,
        ],
    )
    loaded: dict[str, Any] = yaml.safe_load(experiment.to_yaml())
    return loaded


def test_a_table3_report_lists_the_grid_axes_not_one_cells_loss() -> None:
    text = settings_section(_grid_config(), [], "table3")
    assert "- grid: objectives (`experiment.losses`): mse, mse+cl, mse+wcl" in text
    assert "- grid: seeds (`experiment.seeds`): 0, 1" in text
    assert "- grid: datasets (`experiment.datasets`): LUS (/data/lus.csv, scale sf)" in text
    assert "`loss.name`" in text  # named as taken from the grid, never shown with the base value
    assert "mse+wcl\n" not in text.replace("mse, mse+cl, mse+wcl", "")
    assert "experiment.init" not in text  # not set


def test_the_init_stage_and_the_ablation_axes_are_named() -> None:
    config = _grid_config("experiment.init=vicreg", "experiment.init_settings={optim.epochs: 10}")
    text = settings_section(config, [], "ablation")
    assert "self-supervised start of every cell (`experiment.init`): vicreg" in text
    assert "optim.epochs=10" in text
    assert "- encoder start" not in text  # model.init is each cell's stage, not the base's None
    assert "- grid: backbones (`experiment.backbones`): tsm_resnet18, vit, swin" in text
    assert "- backbone (`model.backbone`)" not in text


def test_a_single_run_keeps_its_own_settings() -> None:
    text = settings_section(_grid_config(), [])  # a pretraining or classification: no grid
    assert "grid" not in text
    assert "- backbone (`model.backbone`): tsm_resnet18" in text
