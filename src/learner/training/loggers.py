"""Where pretraining's per-epoch metrics go (``runtime.logger``): one interface, a registry of sinks.

Every run writes ``metrics.csv`` (:class:`CsvLogger`, the run directory's contract: reports and resume read
it); ``runtime.logger`` adds one more sink:

* ``csv``: nothing more;
* ``tensorboard``: event files under ``RUN_DIR/tensorboard`` (``pip install learner[tensorboard]``;
  ``tensorboard --logdir RUN_DIR/tensorboard``);
* ``mlflow``: a run in the local file store ``RUN_DIR/mlruns`` (``pip install learner[mlflow]``; no server,
  nothing leaves the machine; ``mlflow ui --backend-store-uri RUN_DIR/mlruns``), with the result settings
  as parameters. A resumed pretraining continues the same MLflow run.

A sink whose package is missing is a :class:`learner.errors.ConfigError` raised by :func:`check_logger`
before any work.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from learner.atomic import atomic_path, write_json
from learner.config import Config, LoggerName
from learner.errors import ConfigError
from learner.layout import RunLayout


class MetricsLogger(Protocol):
    """A sink for epoch rows (``epoch``, ``step``, ``lr``, ``train_*``, ``val_*``: numbers)."""

    def log(self, row: dict[str, float], history: Sequence[dict[str, float]]) -> None:
        """Record ``row``, the newest epoch; ``history`` is every epoch so far, ``row`` last."""

    def close(self) -> None:
        """Flush and release the sink (called once, after the last epoch)."""


class CsvLogger:
    """``RUN_DIR/metrics.csv``: one row per epoch, rewritten atomically after each epoch."""

    def __init__(self, run_dir: Path, config: Config) -> None:
        self.path = RunLayout(run_dir).epochs

    def log(self, row: dict[str, float], history: Sequence[dict[str, float]]) -> None:
        with atomic_path(self.path) as tmp:
            pd.DataFrame(list(history)).to_csv(tmp, index=False, na_rep="nan")

    def close(self) -> None:
        pass  # every write is complete on its own


class TensorBoardLogger:
    """Scalars per epoch under ``RUN_DIR/tensorboard`` (torch's SummaryWriter)."""

    def __init__(self, run_dir: Path, config: Config) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, row: dict[str, float], history: Sequence[dict[str, float]]) -> None:
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, int(row["epoch"]))

    def close(self) -> None:
        self.writer.close()


class MlflowLogger:
    """One MLflow run in the file store ``RUN_DIR/mlruns`` (experiment ``learner``): the result settings
    as parameters, each epoch's numbers as metrics at step = epoch. Its id is kept in
    ``RUN_DIR/mlruns/learner-run.json`` so that a resumed pretraining logs into the same run."""

    def __init__(self, run_dir: Path, config: Config) -> None:
        # MLflow 3 keeps the file store in maintenance mode behind this opt-in; it is what needs no server
        # and no database package (mlflow-skinny has no SQLAlchemy)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        store = run_dir / "mlruns"
        store.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=store.resolve().as_uri())
        record = store / "learner-run.json"
        if record.is_file():
            self.run_id: str = json.loads(record.read_text(encoding="utf-8"))["run_id"]
            return
        found = self.client.get_experiment_by_name("learner")
        experiment = found.experiment_id if found else self.client.create_experiment("learner")
        self.run_id = self.client.create_run(experiment, run_name=run_dir.name).info.run_id
        for key, value in flatten_settings(config.result_settings()).items():
            self.client.log_param(
                self.run_id, key, json.dumps(value) if not isinstance(value, str) else value
            )
        write_json(record, {"run_id": self.run_id})

    def log(self, row: dict[str, float], history: Sequence[dict[str, float]]) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row["epoch"])
        metrics = [Metric(key, float(value), now, step) for key, value in row.items() if key != "epoch"]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


LoggerFactory = Callable[[Path, Config], MetricsLogger]

LOGGERS: dict[LoggerName, tuple[LoggerFactory, str | None]] = {
    "csv": (CsvLogger, None),
    "tensorboard": (TensorBoardLogger, "tensorboard"),
    "mlflow": (MlflowLogger, "mlflow"),
}
"""``runtime.logger`` → (the sink, the Python package it needs: also the name of learner's extra)."""


def check_logger(name: LoggerName) -> None:
    """Fail before any work when the chosen sink's package is not installed.

    Raises:
        ConfigError: names the extra to install.
    """
    _, package = LOGGERS[name]
    if package is not None and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"runtime.logger={name} needs the {package} package: pip install 'learner[{package}]'"
        )


def open_loggers(name: LoggerName, run_dir: Path, config: Config) -> list[MetricsLogger]:
    """``metrics.csv`` plus the sink ``name`` names (nothing more for ``csv``)."""
    check_logger(name)
    sinks: list[MetricsLogger] = [CsvLogger(run_dir, config)]
    if name != "csv":
        sinks.append(LOGGERS[name][0](run_dir, config))
    return sinks


def flatten_settings(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings → ``{"optim.lr": 0.001, ...}`` (MLflow parameters; what a resume compares)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= (
            flatten_settings(value, f"{prefix}{key}.")
            if isinstance(value, dict)
            else {f"{prefix}{key}": value}
        )
    return flat
