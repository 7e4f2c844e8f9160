"""``learner pretrain --logger csv|tensorboard|mlflow``: each sink holds the numbers of metrics.csv; plain
progress lines when stdout is not a terminal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from learner.config import Config
from learner.errors import ConfigError
from learner.training import loggers

pytestmark = pytest.mark.slow

CliRun = Callable[[list[str]], tuple[int, str, str]]


def _pretrain(make: Callable[..., Config], tmp_path: Path, cli: CliRun, *flags: str) -> tuple[Path, str]:
    config_file, out = tmp_path / "tiny.yaml", tmp_path / "run"
    config_file.write_text(make().to_yaml())
    code, stdout, stderr = cli(["pretrain", "--config", str(config_file), "--out", str(out), *flags])
    assert code == 0, stderr
    return out, stdout


def test_mlflow_logger_records_every_epoch_of_metrics_csv_in_a_local_store(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, cli: CliRun
) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out, _ = _pretrain(make_tiny_pretrain_config, tmp_path, cli, "--logger", "mlflow")
    table = pd.read_csv(out / "metrics.csv")
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("learner").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["loss.name"] == "mse+wcl"
    for column in ("train_loss", "val_mae", "lr"):
        history = sorted(client.get_metric_history(run.info.run_id, column), key=lambda m: m.step)
        assert [m.step for m in history] == table["epoch"].tolist()
        assert [m.value for m in history] == pytest.approx(table[column].tolist(), rel=1e-12)


def test_tensorboard_logger_writes_the_epoch_scalars(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, cli: CliRun
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    out, _ = _pretrain(make_tiny_pretrain_config, tmp_path, cli, "--logger", "tensorboard")
    table = pd.read_csv(out / "metrics.csv")
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for column in ("val_mae", "train_loss", "lr"):  # double-precision scalars: metrics.csv's numbers exactly
        scalars = [(e.step, make_ndarray(e.tensor_proto).item()) for e in events.Tensors(column)]
        assert scalars == list(zip(table["epoch"], table[column], strict=True)), column


def test_csv_logger_is_the_default_and_progress_is_plain_lines_off_a_terminal(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, cli: CliRun
) -> None:
    out, stdout = _pretrain(make_tiny_pretrain_config, tmp_path, cli)
    assert not (out / "tensorboard").exists()
    assert not (out / "mlruns").exists()
    assert len(pd.read_csv(out / "metrics.csv")) == 2
    lines = stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["epoch 1/2", "epoch 2/2"]  # no blank line either
    assert "━" not in stdout  # no rich progress bar in a log file
    assert "\x1b[" not in stdout


def test_a_missing_logger_package_fails_before_any_work(
    monkeypatch: pytest.MonkeyPatch, make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    from learner.training.pretrain import pretrain

    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None)
    config = make_tiny_pretrain_config(**{"runtime.logger": "mlflow"})
    with pytest.raises(ConfigError, match=r"pip install 'learner\[mlflow\]'"):
        pretrain(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
