"""Resumable grids: an interrupted Table 3 continues without recomputing finished stages, and the Table 4
ablation pretrains each (backbone, loss, seed) once. Pretraining is the counting stand-in of conftest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig, apply_overrides, load_experiment
from learner.errors import ConfigError, RunDirError
from learner.evaluation import embed
from learner.experiments import ablation, stages, table3
from learner.report import write_report


class Interrupted(Exception):
    """Stands for whatever stops a run midway (Ctrl-C, a crash, a killed job)."""


@pytest.mark.slow
def test_interrupted_table3_continues_where_it_stopped(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_pretrain: Any,
    tiny_experiment_config: Config,
    tiny_datasets: list[DatasetSpec],
) -> None:
    grid = {"datasets": tiny_datasets[:1], "losses": ["mse"], "seeds": [0, 1]}
    classified: list[Path] = []
    real = stages.run_classification

    def interrupted(encoder: Path, manifest: Any, config: Config, out: Path, **kw: Any) -> Any:
        classified.append(out)
        if len(classified) == 2 and len(fake_pretrain.calls) == 2:  # the first run's second cell
            raise Interrupted
        return real(encoder, manifest, config, out, **kw)

    monkeypatch.setattr(stages, "run_classification", interrupted)
    with pytest.raises(Interrupted):
        table3.run_table3(Experiment(tiny_experiment_config, ExperimentConfig(**grid)), tmp_path / "t3")
    assert len(fake_pretrain.calls) == 2  # cell 1 finished; cell 2 pretrained, its classification interrupted
    done = tmp_path / "t3" / "LUS" / "mse" / "seed-0" / "classifier" / "complete.json"
    stamp = done.stat().st_mtime_ns

    with pytest.raises(RunDirError, match="--resume"):
        table3.run_table3(Experiment(tiny_experiment_config, ExperimentConfig(**grid)), tmp_path / "t3")
    classified.clear()
    result = table3.run_table3(
        Experiment(tiny_experiment_config, ExperimentConfig(**grid)), tmp_path / "t3", resume=True
    )
    assert len(fake_pretrain.calls) == 2  # both encoders were complete: nothing pretrained again
    assert [p.parent.name for p in classified] == ["seed-1"]  # only the interrupted classification is redone
    assert done.stat().st_mtime_ns == stamp
    assert [c["seed"] for c in result.results.to_json()["cells"]] == [0, 1]

    classified.clear()
    more_seeds = ExperimentConfig(**{**grid, "seeds": [0, 1, 2]})
    grown = table3.run_table3(Experiment(tiny_experiment_config, more_seeds), tmp_path / "t3", resume=True)
    assert [c["seed"] for c in fake_pretrain.calls] == [0, 1, 2]  # a grown grid computes only its new cell
    assert [p.parent.name for p in classified] == ["seed-2"]
    assert json.loads((tmp_path / "t3" / "results.json").read_text())["seeds"] == [0, 1, 2]
    assert len(grown.results.to_json()["cells"]) == 3


def test_an_interrupted_pretraining_is_resumed_not_restarted(
    tmp_path: Path, fake_pretrain: Any, tiny_experiment_config: Config, tiny_datasets: list[DatasetSpec]
) -> None:
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    tiny_cell_config = stages.cell_config(tiny_experiment_config, tiny_datasets[0])
    (encoder / "config.yaml").write_text(tiny_cell_config.to_yaml())  # what an interrupted pretrain leaves
    record = stages.ensure_encoder(tiny_cell_config, encoder)
    assert fake_pretrain.calls[-1]["resume"] is True
    assert fake_pretrain.calls[-1]["force"] is False
    assert stages.ensure_encoder(tiny_cell_config, encoder) == record
    assert len(fake_pretrain.calls) == 1


@pytest.mark.slow  # end to end; the full suite (CI) runs it, the fast lane leaves it out
def test_a_finished_cell_with_another_config_is_refused(
    tmp_path: Path, fake_pretrain: Any, tiny_experiment_config: Config, tiny_datasets: list[DatasetSpec]
) -> None:
    grid = {"datasets": tiny_datasets[:1], "losses": ["mse"], "seeds": [0]}
    table3.run_table3(Experiment(tiny_experiment_config, ExperimentConfig(**grid)), tmp_path / "t3")
    changed = apply_overrides(tiny_experiment_config, {"optim.epochs": 2})
    with pytest.raises(RunDirError, match="another config"):
        table3.run_table3(Experiment(changed, ExperimentConfig(**grid)), tmp_path / "t3", resume=True)


def test_a_bad_grid_fails_before_any_pretraining(
    tmp_path: Path, fake_pretrain: Any, tiny_experiment_config: Config, tiny_datasets: list[DatasetSpec]
) -> None:
    grid = ExperimentConfig(datasets=tiny_datasets, losses=["mse", "mse+cls"], seeds=[0])
    with pytest.raises(ConfigError, match="unknown term 'cls'"):
        table3.run_table3(Experiment(tiny_experiment_config, grid), tmp_path / "a")
    with pytest.raises(ConfigError, match=r"experiment\.classifiers"):  # refused as the grid is read
        load_experiment(None, ["experiment.classifiers=[mlp, svm]"])
    grid = ExperimentConfig(datasets=tiny_datasets, backbones=["tsm_resnet18", "resnet9000"])
    with pytest.raises(ConfigError, match=r"model\.backbone"):
        ablation.run_ablation(Experiment(tiny_experiment_config, grid), tmp_path / "b")
    assert fake_pretrain.calls == []


@pytest.mark.slow
def test_ablation_pretrains_each_backbone_loss_seed_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_pretrain: Any,
    tiny_experiment_config: Config,
    tiny_datasets: list[DatasetSpec],
) -> None:
    fake_pretrain.keep_embeddings = False  # so every new encoder has to embed the scans
    embedded: list[Path] = []
    real_load = embed.load_regressor

    def counting_load(run_dir: Path, **kw: Any) -> Any:
        embedded.append(Path(run_dir))
        return real_load(run_dir, **kw)

    monkeypatch.setattr(embed, "load_regressor", counting_load)
    axes = {
        "backbones": ["tsm_resnet18", "vit"],
        "combines": ["difference", "concatenate"],
        "classifiers": ["mlp_large", "mlp"],
        "losses": ["mse"],
        "seeds": [0],
    }
    experiment = Experiment(tiny_experiment_config, ExperimentConfig(datasets=tiny_datasets[:1], **axes))
    result = ablation.run_ablation(experiment, tmp_path / "t4")
    assert len(fake_pretrain.calls) == 2  # backbones × losses × seeds, not × 4 classifier variants
    assert {(c["backbone"], c["loss"], c["seed"]) for c in fake_pretrain.calls} == {
        ("tsm_resnet18", "mse", 0),
        ("vit", "mse", 0),
    }
    assert len(embedded) == 2  # each encoder embeds the scans once; 8 classifiers reuse the cache
    assert len(result.results.to_json()["cells"]) == 8
    rows = [(r["backbone"], r["combine"], r["classifier"]) for r in result.results.to_json()["summary"]]
    assert rows[:4] == [
        ("tsm_resnet18", "difference", "mlp_large"), ("tsm_resnet18", "difference", "mlp"),
        ("tsm_resnet18", "concatenate", "mlp_large"), ("tsm_resnet18", "concatenate", "mlp"),
    ]  # fmt: skip
    for cell in result.results.to_json()["cells"]:
        folder = tmp_path / "t4" / cell["dir"] / f"classify-{cell['combine']}-{cell['classifier']}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert (metrics["combine"], metrics["head"]) == (cell["combine"], cell["classifier"])
        assert cell["accuracy"] == metrics["test"]["accuracy"]
    write_report(tmp_path / "t4")  # writes table4.md beside REPORT.md
    table4 = (tmp_path / "t4" / "table4.md").read_text()
    # 4 classifier variants, the regressor's own two answers, each variant adapted by EM and by BBSE
    assert table4.count("| tsm_resnet18 |") == 4 + 2 + 8
    assert table4.count("| *Δ predicted score* |") == 2  # one per encoder (backbone × loss), not per variant
    # the report reads each variant's own classification stage (it once looked for <cell>/classifier, which
    # an ablation never writes, and silently dropped the small-sample warnings)
    test = json.loads((folder / "metrics.json").read_text())["test"]
    assert test["n_patients"] < 5
    report = write_report(tmp_path / "t4").read_text()
    assert f"LUS, seed 0: the test set has {test['n_patients']} patient(s), fewer than 5" in report
    again = ablation.run_ablation(experiment, tmp_path / "t4", resume=True)
    assert len(fake_pretrain.calls) == 2
    assert len(embedded) == 2
    assert again.results.to_json()["summary"] == result.results.to_json()["summary"]
