"""Where pretraining's per-epoch metrics go (``runtime.logger``): one interface, a registry of sinks.

Every run writes ``metrics.csv`` (:class:`CsvLogger`, the run directory's contract: reports and resume read
it); ``runtime.logger`` adds one more sink, a run of the tracker of :mod:`learner.training.tracker`
(:class:`TrackerLogger`):

* ``csv``: nothing more (nothing imported, nothing looked up);
* ``tensorboard``: event files under ``RUN_DIR/tensorboard`` (``pip install learner[tensorboard]``;
  ``tensorboard --logdir RUN_DIR/tensorboard``);
* ``mlflow``: a run in the local file store ``RUN_DIR/mlruns`` (``pip install learner[mlflow]``; no server,
  nothing leaves the machine; docs/training.md gives the UI command), with the result settings as
  parameters.

The tracker run is written afresh whenever the sinks open (:func:`open_loggers`): from the rows of
``metrics.csv``, which on a resume hold exactly the checkpoint's history. A resumed pretraining therefore
replaces the killed attempt's run by one that holds every epoch of ``metrics.csv`` once: an epoch saved but
killed before it reached the tracker is not lost, one logged but killed before its checkpoint (which the
resume trains again) is not doubled.

Each epoch's numbers are metrics at step = epoch; when the run ends its ``metrics.json`` (best and last
rows, as ``best.*`` / ``last.*``) and training curves are added. A pretraining that is a stage of an
experiment grid (self-supervised ones included) keeps only ``metrics.csv``: its grid records it in the
cell's run (:mod:`learner.experiments.tracking`). :func:`track_pretraining` records a finished run from
its files instead (``learner track``).

A sink whose package is missing is a :class:`learner.errors.ConfigError` raised by :func:`check_logger`
before any work.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from learner.atomic import atomic_path
from learner.config import Config, LoggerName
from learner.errors import ConfigError
from learner.layout import RunLayout
from learner.runs import load_run_config
from learner.training.tracker import PACKAGES, Tracker, grid_of, numeric_leaves, open_tracker


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


class TrackerLogger:
    """Epoch rows as metrics of a tracker run (step = epoch); on close, the run's ``metrics.json`` and
    training curves (:func:`log_pretraining_outcome`)."""

    def __init__(self, tracker: Tracker, run_dir: Path) -> None:
        self.tracker, self.run_dir = tracker, run_dir

    def log(self, row: dict[str, float], history: Sequence[dict[str, float]]) -> None:
        self.tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, int(row["epoch"]))

    def close(self) -> None:
        log_pretraining_outcome(self.tracker, self.run_dir)
        self.tracker.close()


def check_logger(name: LoggerName) -> None:
    """Fail before any work when the chosen sink's package is not installed.

    Raises:
        ConfigError: names the extra to install.
    """
    package = PACKAGES.get(name)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"runtime.logger={name} needs the {package} package: pip install 'learner[{package}]'"
        )


def open_loggers(name: LoggerName, run_dir: Path, config: Config) -> list[MetricsLogger]:
    """``metrics.csv`` plus a run of the tracker ``name`` (nothing more for ``csv``, or for a stage of an
    experiment grid, which its grid records).

    The tracker run replaces what its store held for ``run_dir`` and starts with every row of
    ``metrics.csv`` (:func:`log_epochs`). Opened after :func:`learner.training.epoch.restore`, which leaves
    that file holding exactly the restored history (none for a new run), so a resumed run's tracker holds
    the epochs of ``metrics.csv`` whatever a kill left in it.
    """
    check_logger(name)
    sinks: list[MetricsLogger] = [CsvLogger(run_dir, config)]
    if name != "csv" and grid_of(run_dir) is None:
        tracker = open_tracker(
            name, run_dir, run_dir.name, "pretraining", pretraining_params(config), replace=True
        )
        log_epochs(tracker, run_dir)
        sinks.append(TrackerLogger(tracker, run_dir))
    return sinks


def pretraining_params(config: Config) -> dict[str, Any]:
    """A pretraining's tracker parameters: its result settings, flat (``optim.lr``, ``loss.name``, ...)."""
    return flatten_settings(config.result_settings())


def log_epochs(tracker: Tracker, run_dir: Path, prefix: str = "") -> int:
    """Every row of ``run_dir/metrics.csv`` as metrics at step = epoch (names prefixed with ``prefix``);
    returns the number of epochs (0 without the file)."""
    path = RunLayout(run_dir).epochs
    if not path.is_file():
        return 0
    rows = pd.read_csv(path).to_dict("records")
    for row in rows:
        numbers = {f"{prefix}{k}": float(v) for k, v in row.items() if k != "epoch"}
        tracker.log_metrics(numbers, int(row["epoch"]))
    return len(rows)


def log_pretraining_outcome(tracker: Tracker, run_dir: Path) -> None:
    """A finished pretraining's ``metrics.json`` (numbers of its best and last rows, scan counts, ...) as
    metrics, and the file and the training curves as artifacts (each when present)."""
    from learner.training.curves import CURVES_FILE  # matplotlib: only when a run is tracked

    layout = RunLayout(run_dir)
    if layout.metrics.is_file():
        tracker.log_metrics(numeric_leaves(json.loads(layout.metrics.read_text(encoding="utf-8"))))
    for path in (layout.metrics, run_dir / CURVES_FILE):
        if path.is_file():
            tracker.log_artifact(path)


def track_pretraining(run_dir: Path, name: LoggerName) -> Tracker:
    """Record a finished pretraining (``learner track``) from its files: its settings, every epoch of
    ``metrics.csv`` and :func:`log_pretraining_outcome`, replacing what the store held for it; returns
    the closed run."""
    tracker = open_tracker(
        name, run_dir, run_dir.name, "pretraining", pretraining_params(load_run_config(run_dir)), replace=True
    )
    log_epochs(tracker, run_dir)
    log_pretraining_outcome(tracker, run_dir)
    tracker.close()
    return tracker


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
