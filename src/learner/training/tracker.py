"""One tracker interface for every stage (``runtime.logger``): a run of MLflow or TensorBoard that takes
parameters, metrics (at a step) and files, and can hold nested runs.

A tracker store lives in the run directory it records: ``RUN_DIR/mlruns`` (an MLflow file store, experiment
``learner``) or ``RUN_DIR/tensorboard`` (event files). A run in it is named by its **folder**, the path of
what it records relative to ``RUN_DIR`` (``.`` for the run itself, ``LUS/mse/seed-0/classifier`` for a
grid cell), kept as the MLflow tag ``learner.folder`` or as the TensorBoard sub-directory. Opening a folder
again continues its run; ``replace=True`` starts it afresh (``learner track``, a resumed pretraining, a
grid cell recorded again on resume), so recording twice never doubles a metric's history. TensorBoard
scalars are written in double precision, so both trackers hold the numbers of the run's files exactly.

Which stage records what is decided above this module: pretraining epochs in
:mod:`learner.training.loggers`, classifications and grids in :mod:`learner.experiments.tracking`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from learner.config import LoggerName
from learner.data.scales import CLASS_NAMES
from learner.errors import ConfigError
from learner.runs import stored_kind

EXPERIMENT = "learner"
"""The MLflow experiment every learner run is recorded in (one per store)."""

STORES: dict[LoggerName, str] = {"mlflow": "mlruns", "tensorboard": "tensorboard"}
"""A tracker → its store's folder in the run directory."""

PACKAGES: dict[LoggerName, str] = {"mlflow": "mlflow", "tensorboard": "tensorboard"}
"""A tracker → the Python package it needs (also the name of learner's extra)."""

ROOT_FOLDER = "."

MLFLOW_UI_ENV = "MLFLOW_ALLOW_FILE_STORE=true"
"""What ``mlflow ui`` needs to read a file store (MLflow 3 keeps it behind this opt-in)."""


class Tracker(Protocol):
    """One run of a tracking backend."""

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Record numbers at ``step`` (an epoch; 0 for a final value)."""

    def log_artifact(self, path: Path) -> None:
        """Attach a file (a table, a figure, a report) to the run."""

    def nested(
        self, folder: str, title: str, kind: str, params: Mapping[str, Any], *, replace: bool
    ) -> Tracker:
        """A run nested in this one for ``folder`` (relative to the store's run directory), created with
        ``params`` and tags, or continued when it exists and not ``replace``."""

    def close(self) -> None:
        """Mark the run finished and release the backend."""


def store_of(name: LoggerName, run_dir: Path) -> Path:
    """The store of tracker ``name`` in ``run_dir`` (``mlruns`` or ``tensorboard``)."""
    return Path(run_dir) / STORES[name]


def open_tracker(
    name: LoggerName, run_dir: Path, title: str, kind: str, params: Mapping[str, Any], *, replace: bool
) -> Tracker:
    """The run of ``run_dir`` itself (folder ``.``) in its store of tracker ``name`` (not ``csv``)."""
    if name == "mlflow":
        return MlflowTracker.open(Path(run_dir), ROOT_FOLDER, title, kind, params, replace=replace)
    if name == "tensorboard":
        return TensorBoardTracker.open(Path(run_dir), ROOT_FOLDER, params, replace=replace)
    raise ConfigError(f"runtime.logger={name} records no tracker run; choose mlflow or tensorboard")


def ui_command(name: LoggerName, store: Path) -> str:
    """The command that browses a store on this machine (docs/training.md; the MLflow UI needs the full
    ``mlflow`` package, which ``learner[mlflow]`` installs)."""
    if name == "mlflow":
        server = "--host 127.0.0.1 --port 5000 --workers 1"  # one worker serves one browser, starts sooner
        return f"{MLFLOW_UI_ENV} mlflow ui --backend-store-uri {store} {server}"
    return f"tensorboard --logdir {store}"


def grid_of(run_dir: Path) -> Path | None:
    """The experiment grid whose stage ``run_dir`` is (a folder below a run directory of kind
    ``experiment``), else None: a stage is recorded in its grid's cell run, not in a store of its own."""
    for folder in Path(run_dir).resolve().parents:
        if stored_kind(folder) == "experiment":
            return folder
    return None


# ------------------------------------------------------------------------------------------ values
def numeric_leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a results record as flat metric names: ``{"ci": {"accuracy": [0.4, 0.6]}}`` →
    ``{"ci.accuracy.low": 0.4, "ci.accuracy.high": 0.6}``; a confusion matrix (rows true, columns
    predicted) → ``confusion.<true>.<predicted>``; other lists by position. Strings, booleans and nulls
    are left out (they are parameters or tags, or undefined)."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= numeric_leaves(value, f"{name}.")
        elif isinstance(value, list | tuple):
            flat |= numeric_leaves(_named_items(name, value), f"{name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def _named_items(name: str, items: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    """A list as a mapping: a ``ci`` entry's (low, high), a confusion matrix's rows and columns by class
    name (K × K, rows true), anything else by position."""
    parent, _, key = f".{name}".rpartition(".")
    if parent.endswith(".ci") and len(items) == 2:
        return dict(zip(("low", "high"), items, strict=True))
    if key == "confusion" and len(items) == len(CLASS_NAMES):
        rows = zip(CLASS_NAMES, items, strict=True)
        return {truth: dict(zip(CLASS_NAMES, row, strict=True)) for truth, row in rows}
    return {str(k): item for k, item in enumerate(items)}


def param_text(value: Any) -> str:
    """A setting as a parameter value: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


# ------------------------------------------------------------------------------------------ MLflow
class MlflowTracker:
    """A run in the MLflow file store ``RUN_DIR/mlruns`` (no server, nothing leaves the machine)."""

    def __init__(self, client: Any, experiment_id: str, run_id: str, run_dir: Path) -> None:
        self.client, self.experiment_id, self.run_id, self.run_dir = client, experiment_id, run_id, run_dir

    @classmethod
    def open(
        cls,
        run_dir: Path,
        folder: str,
        title: str,
        kind: str,
        params: Mapping[str, Any],
        *,
        replace: bool,
        parent: str | None = None,
    ) -> MlflowTracker:
        # MLflow 3 keeps the file store in maintenance mode behind this opt-in; it needs no server and no
        # database (the UI reads it with the same variable set: docs/training.md)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        store = store_of("mlflow", run_dir)
        store.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=store.resolve().as_uri())
        found = client.get_experiment_by_name(EXPERIMENT)
        experiment = found.experiment_id if found else client.create_experiment(EXPERIMENT)
        runs = [
            run
            for run in client.search_runs([experiment], _folder_filter(folder), max_results=50000)
            if run.data.tags.get("learner.folder") == folder
        ]
        if runs and not replace:
            return cls(client, experiment, runs[0].info.run_id, run_dir)
        for run in runs:
            client.delete_run(run.info.run_id)
        tags = {"learner.folder": folder, "learner.kind": kind}
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        run_id = client.create_run(experiment, run_name=title, tags=tags).info.run_id
        tracker = cls(client, experiment, run_id, run_dir)
        tracker._log_params(params)
        return tracker

    def _log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, param_text(value)) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(items), 1000):  # and at most 1000 metrics
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def nested(
        self, folder: str, title: str, kind: str, params: Mapping[str, Any], *, replace: bool
    ) -> MlflowTracker:
        return MlflowTracker.open(
            self.run_dir, folder, title, kind, params, replace=replace, parent=self.run_id
        )

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _folder_filter(folder: str) -> str:
    """The search filter for a run's folder tag (a folder with a quote is matched after the search)."""
    return "" if "'" in folder else f"tags.`learner.folder` = '{folder}'"


# ------------------------------------------------------------------------------------------ TensorBoard
class TensorBoardTracker:
    """Event files under ``RUN_DIR/tensorboard/<folder>`` (torch's SummaryWriter): a nested run is a
    sub-directory, which TensorBoard lists as a run of its own; parameters are a text table, Markdown and
    CSV files are text, PNG figures are images."""

    def __init__(self, run_dir: Path, folder: str) -> None:
        self.run_dir, self.folder = run_dir, folder
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        """The SummaryWriter, made on the first write (a run only opened to nest another writes no file)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(store_of("tensorboard", self.run_dir) / self.folder))
        return self._writer

    @classmethod
    def open(
        cls, run_dir: Path, folder: str, params: Mapping[str, Any], *, replace: bool
    ) -> TensorBoardTracker:
        logdir = store_of("tensorboard", run_dir) / folder
        events = sorted(logdir.glob("events.out.tfevents.*")) if logdir.is_dir() else []
        if replace:
            for path in events:
                path.unlink()
        tracker = cls(run_dir, folder)
        if replace or not events:
            rows = "\n".join(f"| {key} | {param_text(value)} |" for key, value in params.items())
            tracker.writer.add_text("params", "| parameter | value |\n|---|---|\n" + rows)
        return tracker

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        for key, value in metrics.items():
            # the legacy scalar field is float32 (metrics.csv's numbers would differ in the 8th digit);
            # TensorBoard reads a double tensor summary as the same scalar
            self.writer.add_scalar(key, float(value), step, new_style=True, double_precision=True)

    def log_artifact(self, path: Path) -> None:
        if path.suffix == ".png":
            import numpy as np
            from PIL import Image

            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
            self.writer.add_image(path.name, pixels, dataformats="HWC")
        elif path.suffix in {".md", ".csv", ".json", ".yaml", ".txt"}:
            text = path.read_text(encoding="utf-8")
            self.writer.add_text(path.name, text if path.suffix == ".md" else f"```\n{text}\n```")

    def nested(
        self, folder: str, title: str, kind: str, params: Mapping[str, Any], *, replace: bool
    ) -> TensorBoardTracker:
        return TensorBoardTracker.open(self.run_dir, folder, params, replace=replace)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
