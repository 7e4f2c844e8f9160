"""``experiment.init`` (issue 20 item 6): a grid-level self-supervised stage per dataset and seed, inside
Table 3 / Table 4 / the sweep, that starts every cell's encoder (``model.init``), split-safe and resumable.

The wiring tests use the counting stand-in for pretraining (conftest's ``fake_pretrain``); the last one
pretrains for real, so that the split check and the weights' provenance are the toolkit's own."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig
from learner.errors import ConfigError
from learner.experiments import ablation, table3
from learner.experiments.dry_run import plan_experiment
from learner.layout import RunLayout


def _grid(datasets: list[DatasetSpec], **extra: Any) -> ExperimentConfig:
    return ExperimentConfig(datasets=datasets, losses=["mse", "mse+wcl"], seeds=[0], init="vicreg", **extra)


def _init_of(encoder: Path) -> str:
    return str(yaml.safe_load(RunLayout(encoder).config.read_text())["model"]["init"])


@pytest.mark.slow
def test_one_stage_per_dataset_and_seed_starts_every_cell_and_is_reused_on_resume(
    tmp_path: Path, fake_pretrain: Any, tiny_experiment_config: Config, tiny_lus: DatasetSpec
) -> None:
    out = tmp_path / "t3"
    grid = _grid([tiny_lus], init_settings={"optim.epochs": 2})
    table3.run_table3(Experiment(tiny_experiment_config, grid), out)

    losses = [call["loss"] for call in fake_pretrain.calls]
    assert losses == ["vicreg", "mse", "mse+wcl"]  # the stage first, once for both objectives
    (stage,) = (out / "LUS" / "init-vicreg").iterdir()
    assert stage.name.startswith("seed-0-")
    encoder = RunLayout(stage).encoder()
    assert encoder.complete.is_file()
    stage_config = yaml.safe_load(encoder.config.read_text())
    assert stage_config["loss"]["name"] == "vicreg"
    assert stage_config["optim"]["epochs"] == 2  # experiment.init_settings reach the stage only
    for loss in ("mse", "mse+wcl"):
        cell = out / "LUS" / loss / "seed-0"
        assert Path(_init_of(cell / "encoder")) == encoder.root.resolve()
        assert yaml.safe_load((cell / "encoder" / "config.yaml").read_text())["optim"]["epochs"] == 1
    stamp = encoder.complete.stat().st_mtime_ns

    fake_pretrain.calls.clear()
    table3.run_table3(Experiment(tiny_experiment_config, grid), out, resume=True)
    assert fake_pretrain.calls == []  # the stage and both cells were complete
    assert encoder.complete.stat().st_mtime_ns == stamp

    plan = plan_experiment("table3", Experiment(tiny_experiment_config, grid), out).render()
    assert f"{stage.relative_to(out).as_posix()} (vicreg, no scores)" in plan


@pytest.mark.slow
def test_the_ablation_gets_one_stage_per_backbone(
    tmp_path: Path, fake_pretrain: Any, tiny_experiment_config: Config, tiny_lus: DatasetSpec
) -> None:
    grid = ExperimentConfig(
        datasets=[tiny_lus], losses=["mse"], seeds=[0], backbones=["tsm_resnet18", "vit"],
        combines=["difference"], classifiers=["mlp"], init="vicreg",
    )  # fmt: skip
    ablation.run_ablation(Experiment(tiny_experiment_config, grid), tmp_path / "t4")
    started = [(call["backbone"], call["loss"]) for call in fake_pretrain.calls]
    assert started == [("tsm_resnet18", "vicreg"), ("vit", "vicreg"), ("tsm_resnet18", "mse"), ("vit", "mse")]
    for backbone in ("tsm_resnet18", "vit"):
        init = Path(_init_of(tmp_path / "t4" / "LUS" / backbone / "mse" / "seed-0" / "encoder"))
        assert yaml.safe_load((init / "config.yaml").read_text())["model"]["backbone"] == backbone


@pytest.mark.parametrize(
    ("init", "settings", "message"),
    [
        ("mse", {}, "experiment.init: 'mse' is not a self-supervised objective"),
        ("vicreg", {"seed": 3}, "experiment.init_settings: seed is the cells' own"),
        ("vicreg", {"data.split.seed": 3}, "experiment.init_settings: data.split.seed is the cells' own"),
        ("vicreg", {"optim.epochs": 0}, "experiment.init_settings: invalid config value for 'optim.epochs'"),
    ],
)
def test_a_bad_init_is_refused_before_any_work(
    tmp_path: Path,
    tiny_experiment_config: Config,
    tiny_lus: DatasetSpec,
    init: str,
    settings: dict[str, Any],
    message: str,
) -> None:
    grid = ExperimentConfig(datasets=[tiny_lus], losses=["mse"], seeds=[0], init=init, init_settings=settings)
    with pytest.raises(ConfigError, match=re.escape(message)):
        table3.run_table3(Experiment(tiny_experiment_config, grid), tmp_path / "t3")
    assert not (tmp_path / "t3").exists()


@pytest.mark.slow
def test_a_real_stage_trains_on_the_cells_split_and_starts_their_encoders(
    tmp_path: Path, tiny_experiment_config: Config, tiny_lus: DatasetSpec, one_thread: None
) -> None:
    out = tmp_path / "t3"
    table3.run_table3(Experiment(tiny_experiment_config, _grid([tiny_lus])), out)
    (stage,) = (out / "LUS" / "init-vicreg").iterdir()
    stage_splits = pd.read_csv(RunLayout(stage).encoder().splits, dtype=str)
    for loss in ("mse", "mse+wcl"):
        encoder = RunLayout(out / "LUS" / loss / "seed-0" / "encoder")
        assert pd.read_csv(encoder.splits, dtype=str).equals(stage_splits)  # never a test patient of theirs
        record = yaml.safe_load(encoder.record.read_text())  # run.json (JSON is YAML)
        assert Path(record["init"]["path"]) == RunLayout(stage).encoder().root.resolve()
