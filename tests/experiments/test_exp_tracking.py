"""Tracking end to end (``runtime.logger``, ``learner track``): a Table 3 read back through MLflow's own
client is one parent run with one nested run per cell whose metrics are that cell's numbers in
``results.json``, live and backfilled; a classification's metrics and confusion matrix; TensorBoard."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from learner import api
from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig, apply_overrides
from learner.data.scales import CLASS_NAMES
from learner.errors import ConfigError
from learner.experiments.results import ExperimentResult
from learner.training import loggers

# found, not imported: importing MLflow at collection costs every test process about a second
pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed")


def _client(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())


def _runs(client: Any) -> list[Any]:
    return list(client.search_runs([client.get_experiment_by_name("learner").experiment_id]))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _expected_cell_metrics(cell: dict[str, Any]) -> dict[str, float]:
    """What a cell run must hold: every number of the cell's ``results.json`` entry (seed and clips per
    scan are parameters), written out field by field; nulls (undefined intervals) have no metric."""
    out: dict[str, Any] = {
        name: cell[name] for name in ("accuracy", "macro_f1", "weighted_f1", "n_test_pairs")
    }
    out["pretrain_seconds"] = cell.get("pretrain_seconds")
    for metric, (low, high) in cell["ci"].items():
        out[f"ci.{metric}.low"], out[f"ci.{metric}.high"] = low, high
    out |= {f"regression.{k}": v for k, v in cell["regression"].items() if _number(v)}
    out |= {f"pair_counts.{s}.{c}": n for s, counts in cell["pair_counts"].items() for c, n in counts.items()}
    for answer, values in cell["answers"].items():
        for name in ("accuracy", "macro_f1", "weighted_f1"):
            out[f"answers.{answer}.{name}"] = values[name]
        for metric, (low, high) in values["ci"].items():
            out[f"answers.{answer}.ci.{metric}.low"] = low
            out[f"answers.{answer}.ci.{metric}.high"] = high
    return {key: float(value) for key, value in out.items() if value is not None}


def _check_grid_store(run_dir: Path, monkeypatch: pytest.MonkeyPatch, inits: int = 0) -> list[Any]:
    """One parent run (FINISHED, with the grid's files) and one nested run per cell of ``results.json``
    whose metrics are the cell's numbers, whose params are its settings and whose encoder epochs are those
    of its ``metrics.csv``; besides them ``inits`` nested runs of self-supervised stages (returned)."""
    client = _client(run_dir, monkeypatch)
    runs = _runs(client)
    results = json.loads((run_dir / "results.json").read_text())
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["learner.kind"] == "experiment"
    assert json.loads(parent.data.params["experiment.losses"]) == results["losses"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.json", "config.yaml", "table3.csv", "table3.md", "REPORT.md"} <= artifacts
    figures = {Path(f["png"]).name for targets in results["figures"].values() for f in targets.values()}
    assert figures
    assert figures <= artifacts
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(nested) == len(results["cells"]) + inits == len(runs) - 1
    stages = [r for r in nested if r.data.tags["learner.kind"] == "init"]
    assert len(stages) == inits
    by_folder = {r.data.tags["learner.folder"]: r for r in nested}
    for cell in results["cells"]:
        run = by_folder[f"{cell['dir']}/classifier"]
        recorded = {k: v for k, v in run.data.metrics.items() if not k.startswith("encoder.")}
        expected = _expected_cell_metrics(cell)
        assert sorted(recorded) == sorted(expected)
        assert recorded == pytest.approx(expected, rel=1e-12)
        params = run.data.params
        assert (params["seed"], params["loss.name"]) == (str(cell["seed"]), cell["loss"])
        assert (params["grid.dataset"], params["grid.loss"]) == (cell["dataset"], cell["loss"])
        epochs = pd.read_csv(run_dir / cell["dir"] / "encoder" / "metrics.csv")
        history = sorted(client.get_metric_history(run.info.run_id, "encoder.val_mae"), key=lambda m: m.step)
        assert [m.step for m in history] == epochs["epoch"].tolist()
        assert [m.value for m in history] == pytest.approx(epochs["val_mae"].tolist(), rel=1e-12)
    return stages


@pytest.mark.slow
def test_a_table3_with_mlflow_is_a_parent_run_with_a_nested_run_per_cell(
    tmp_path: Path,
    fake_pretrain: Any,
    tiny_experiment_config: Config,
    tiny_lus: DatasetSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = apply_overrides(tiny_experiment_config, {"runtime.logger": "mlflow"})
    grid = ExperimentConfig(datasets=[tiny_lus], losses=["mse", "mse+wcl"], seeds=[0])
    result = api.table3(tmp_path / "t3", config=Experiment(config, grid))
    out = result.out_dir
    _check_grid_store(out, monkeypatch)
    assert sorted(p.name for p in out.rglob("mlruns")) == ["mlruns"]  # the stages keep no stores
    api.table3(tmp_path / "t3", config=Experiment(config, grid), resume=True)  # cells recorded again
    _check_grid_store(out, monkeypatch)  # replaced, never doubled
    tracked = api.track(out)  # the same numbers from the files
    assert (tracked.kind, tracked.logger, tracked.runs) == ("table3", "mlflow", 3)
    _check_grid_store(out, monkeypatch)


@pytest.mark.slow
def test_a_grids_self_supervised_stage_is_a_nested_run_with_its_epochs(
    tmp_path: Path,
    fake_pretrain: Any,
    tiny_experiment_config: Config,
    tiny_lus: DatasetSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = apply_overrides(tiny_experiment_config, {"runtime.logger": "mlflow"})
    grid = ExperimentConfig(datasets=[tiny_lus], losses=["mse"], seeds=[0], init="vicreg")
    out = api.table3(tmp_path / "t3", config=Experiment(config, grid)).out_dir
    for check in ("live", "backfilled"):
        (stage,) = _check_grid_store(out, monkeypatch, inits=1)
        folder = stage.data.tags["learner.folder"]
        assert re.fullmatch(r"LUS/init-vicreg/seed-0-\w+/encoder", folder), check
        assert stage.data.params["loss.name"] == "vicreg"
        epochs = pd.read_csv(out / folder / "metrics.csv")
        client = _client(out, monkeypatch)
        history = sorted(client.get_metric_history(stage.info.run_id, "train_loss"), key=lambda m: m.step)
        assert [m.value for m in history] == pytest.approx(epochs["train_loss"].tolist(), rel=1e-12)
        assert api.track(out).runs == 3


def test_a_grid_without_its_tracker_package_fails_before_any_work(
    tmp_path: Path, tiny_experiment_config: Config, tiny_lus: DatasetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None)
    config = apply_overrides(tiny_experiment_config, {"runtime.logger": "mlflow"})
    grid = ExperimentConfig(datasets=[tiny_lus], losses=["mse"], seeds=[0])
    with pytest.raises(ConfigError, match=r"^runtime.logger=mlflow needs the mlflow package: pip install"):
        api.table3(tmp_path / "t3", config=Experiment(config, grid))
    assert not (tmp_path / "t3").exists()


@pytest.mark.slow
def test_learner_track_backfills_a_finished_grid(
    tiny_table3: ExperimentResult,
    tmp_path: Path,
    cli: Callable[[list[str]], tuple[int, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "t3"
    shutil.copytree(tiny_table3.out_dir, out)  # the shared run is read-only
    code, stdout, stderr = cli(["track", str(out)])  # its logger is csv: mlflow by default
    assert code == 0, stderr
    assert f"tracked: table3 as 5 mlflow run(s) in {out / 'mlruns'}" in stdout
    assert f"browse: MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {out / 'mlruns'}" in stdout
    _check_grid_store(out, monkeypatch)


@pytest.mark.slow
def test_learner_track_a_grid_into_tensorboard_gives_every_cell_its_folder(
    tiny_table3: ExperimentResult, tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    out = tmp_path / "t3"
    shutil.copytree(tiny_table3.out_dir, out, ignore=shutil.ignore_patterns("embeddings"))
    code, _, stderr = cli(["track", str(out), "--logger", "tensorboard"])
    assert code == 0, stderr
    for cell in json.loads((out / "results.json").read_text())["cells"]:
        events = EventAccumulator(str(out / "tensorboard" / cell["dir"] / "classifier"))
        events.Reload()
        (accuracy,) = events.Tensors("accuracy")
        assert make_ndarray(accuracy.tensor_proto).item() == cell["accuracy"]  # double precision: exact
    parent = EventAccumulator(str(out / "tensorboard"))
    parent.Reload()
    assert "REPORT.md/text_summary" in parent.Tags()["tensors"]


@pytest.mark.slow  # trains its own classification (~20 s)
def test_a_classification_records_its_metrics_and_confusion_matrix(
    tiny_table3: ExperimentResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    encoder = tiny_table3.out_dir / "LUS" / "mse" / "seed-0" / "encoder"
    result = api.classify(encoder, tmp_path / "cls", overrides={"runtime.logger": "mlflow"}, device="cpu")
    client = _client(result.out_dir, monkeypatch)
    (run,) = _runs(client)
    assert (run.info.status, run.data.tags["learner.kind"]) == ("FINISHED", "classification")
    metrics, test = run.data.metrics, result.metrics["test"]
    for name in ("accuracy", "macro_f1", "weighted_f1"):
        assert metrics[f"test.{name}"] == test[name]
    for name, row in test["per_class"].items():
        assert metrics[f"test.per_class.{name}.f1"] == row["f1"]
        assert metrics[f"test.per_class.{name}.recall"] == row["recall"]
    for i, truth in enumerate(CLASS_NAMES):
        for j, predicted in enumerate(CLASS_NAMES):
            assert metrics[f"test.confusion.{truth}.{predicted}"] == test["confusion"][i][j]
    assert run.data.params["classifier.head"] == result.metrics["head"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.json", "predictions.csv"}
    assert not (encoder / "mlruns").exists()
