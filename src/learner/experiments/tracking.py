"""What the tracker (``runtime.logger``: MLflow or TensorBoard, :mod:`learner.training.tracker`) records of a
classification and of an experiment grid, as they finish and from a finished run's files (``learner track``).

* A **classification** (``learner classify``): one run with its settings as parameters, every number of
  its ``metrics.json`` as metrics (test accuracy, macro- and weighted-F1, per-class precision / recall /
  F1, the confusion matrix as ``test.confusion.<true>.<predicted>``, the 95% intervals as
  ``….low`` / ``….high``, the other answers, the val metrics, the pair counts), and ``metrics.json`` and
  ``predictions.csv`` as artifacts.
* An **experiment grid** (Table 3, the ablation, a sweep): a parent run (the run settings and the grid as
  parameters) holding one nested run per cell of ``results.json``: the cell's settings (its classification
  stage's config: ``seed``, ``loss.name``, ...) and its grid axes (``grid.<axis>``) as parameters, every
  number of its ``results.json`` entry as metrics (:func:`cell_metrics`), and its encoder's epochs
  (``metrics.csv``) as ``encoder.<column>`` at step = epoch. A self-supervised stage that starts cells
  (``experiment.init``) is a nested run of its own with its epochs. The grid's tables, figures,
  ``results.json``, ``config.yaml`` and ``REPORT.md`` are artifacts of the parent. A cell is recorded when
  it finishes (:func:`track_cell`), the grid's files when its report is written (:func:`track_outputs`).

The stages of a grid record nothing of their own (:func:`learner.training.tracker.grid_of`). With
``runtime.logger=csv`` (the default) every function here returns at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

from learner.config import Config, LoggerName, load_experiment
from learner.errors import ConfigError, RunDirError
from learner.experiments.results import Cell, load_results
from learner.layout import RunLayout
from learner.runs import load_run_config
from learner.training.loggers import (
    check_logger,
    flatten_settings,
    log_epochs,
    log_pretraining_outcome,
    pretraining_params,
    track_pretraining,
)
from learner.training.tracker import Tracker, grid_of, numeric_leaves, open_tracker, store_of, ui_command

GRID_KINDS: tuple[str, ...] = ("table3", "ablation", "sweep")
SETTING_FIELDS: tuple[str, ...] = ("seed", "clips_per_scan")
"""Numbers of a results record that are settings: recorded as parameters, not metrics."""


def cell_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of a cell's (or a classification's) JSON record: every number in it, flat
    (:func:`learner.training.tracker.numeric_leaves`), but :data:`SETTING_FIELDS`."""
    return {key: value for key, value in numeric_leaves(record).items() if key not in SETTING_FIELDS}


# ------------------------------------------------------------------------------------------ classification
def track_classification(run_dir: Path, config: Config) -> None:
    """Record a finished classification in its run directory's tracker (nothing for ``csv``, nothing for a
    stage of a grid: its cell's run holds its numbers)."""
    if config.runtime.logger != "csv" and grid_of(run_dir) is None:
        _record_classification(Path(run_dir), config.runtime.logger, config)


def _record_classification(run_dir: Path, name: LoggerName, config: Config) -> None:
    layout = RunLayout(run_dir)
    metrics = json.loads(layout.metrics.read_text(encoding="utf-8"))
    params = flatten_settings(config.result_settings()) | {
        "encoder_run": metrics["encoder_run"],
        "checkpoint": metrics["checkpoint"],
    }
    tracker = open_tracker(name, run_dir, run_dir.name, "classification", params, replace=True)
    tracker.log_metrics(cell_metrics(metrics))
    for path in (layout.metrics, layout.predictions):
        if path.is_file():
            tracker.log_artifact(path)
    tracker.close()


# ------------------------------------------------------------------------------------------ grids
def _open_grid(run_dir: Path, name: LoggerName, *, replace: bool) -> Tracker:
    """The grid's parent run: its run settings and grid (``experiment.*``) as parameters."""
    experiment = load_experiment(RunLayout(run_dir).config)
    params = flatten_settings(experiment.config.result_settings()) | flatten_settings(
        {"experiment": experiment.grid.model_dump(mode="json")}
    )
    return open_tracker(name, run_dir, run_dir.name, "experiment", params, replace=replace)


def _grid_logger(run_dir: Path) -> LoggerName:
    return load_experiment(RunLayout(run_dir).config).config.runtime.logger


def track_cell(run_dir: Path, cell: Cell, config: Config) -> None:
    """Record a finished cell of the grid in ``run_dir`` (``config``: its classification stage's) as a nested
    run of the grid's parent run, replacing an earlier record of it (a resumed grid)."""
    if config.runtime.logger != "csv":
        _record_cell(_open_grid(run_dir, config.runtime.logger, replace=False), run_dir, cell, config)


def _record_cell(parent: Tracker, run_dir: Path, cell: Cell, config: Config) -> None:
    params = flatten_settings(config.result_settings()) | {
        f"grid.{axis}": value for axis, value in cell.key.axes().items()
    }
    title = "/".join([*cell.key.axes().values(), f"seed-{cell.seed}"])
    child = parent.nested(cell.classification_folder.as_posix(), title, "cell", params, replace=True)
    child.log_metrics(cell_metrics(cell.to_json()))
    log_epochs(child, run_dir / cell.encoder_folder, prefix="encoder.")
    child.close()


def track_init_stage(run_dir: Path, encoder_dir: Path, config: Config) -> None:
    """Record a grid's finished self-supervised stage (``experiment.init``) in ``encoder_dir`` as a nested
    run of the grid's parent run: its settings, its epochs and its outcome."""
    if config.runtime.logger != "csv":
        _record_init(_open_grid(run_dir, config.runtime.logger, replace=False), run_dir, encoder_dir)


def _record_init(parent: Tracker, run_dir: Path, encoder_dir: Path) -> None:
    folder = Path(os.path.relpath(encoder_dir, run_dir)).as_posix()
    params = pretraining_params(load_run_config(encoder_dir))
    child = parent.nested(folder, folder, "init", params, replace=True)
    log_epochs(child, encoder_dir)
    log_pretraining_outcome(child, encoder_dir)
    child.close()


OUTPUT_SUFFIXES: tuple[str, ...] = (".md", ".csv", ".png", ".svg")
"""The grid's own files recorded as artifacts of its parent run (tables, figures, ``REPORT.md``), besides
``results.json`` and ``config.yaml``."""


def track_outputs(run_dir: str | os.PathLike[str]) -> None:
    """Record a finished grid's tables, figures, ``results.json``, ``config.yaml`` and ``REPORT.md`` as
    artifacts of its parent run and mark it finished (nothing when the grid's logger is ``csv``)."""
    root = Path(run_dir)
    name = _grid_logger(root)
    if name != "csv":
        parent = _open_grid(root, name, replace=False)
        _record_outputs(parent, root)
        parent.close()


def _record_outputs(parent: Tracker, run_dir: Path) -> None:
    layout = RunLayout(run_dir)
    files = [p for p in sorted(run_dir.iterdir()) if p.is_file() and p.suffix in OUTPUT_SUFFIXES]
    for path in [layout.results, layout.config, *files]:
        if path.is_file():
            parent.log_artifact(path)


# ------------------------------------------------------------------------------------------ backfill
@dataclass(frozen=True)
class TrackedRun:
    """What ``learner track`` recorded: the run, its kind, the tracker and its store, and how many tracker
    runs it wrote (1, or for a grid its parent, one per cell and one per self-supervised stage)."""

    run_dir: Path
    kind: str
    logger: LoggerName
    store: Path
    runs: int

    @property
    def ui(self) -> str:
        """The command that browses :attr:`store` (docs/training.md)."""
        return ui_command(self.logger, self.store)


def track_run(run_dir: str | os.PathLike[str], logger: str | None = None) -> TrackedRun:
    """Record a finished pretraining, classification or experiment grid in a tracker from its files
    (``metrics.csv``, ``metrics.json``, ``results.json``): nothing is rerun. ``logger`` (``mlflow`` or
    ``tensorboard``) defaults to the run's own ``runtime.logger``, else ``mlflow``; the store is the run's
    own (``RUN_DIR/mlruns`` or ``RUN_DIR/tensorboard``), and what it held for the run is replaced.

    Raises:
        RunDirError: ``run_dir`` holds no finished run of those kinds.
        ConfigError: ``logger`` is not a tracker, or its package is missing.
    """
    root = Path(run_dir)
    kind = _finished_kind(root)
    grid = kind in GRID_KINDS
    name = _tracker_name(logger, _grid_logger(root) if grid else load_run_config(root).runtime.logger)
    check_logger(name)
    if grid:
        runs = _track_grid(root, name)
    elif kind == "pretraining":
        track_pretraining(root, name)
        runs = 1
    else:
        _record_classification(root, name, load_run_config(root))
        runs = 1
    return TrackedRun(root, kind, name, store_of(name, root), runs)


def _finished_kind(root: Path) -> str:
    layout = RunLayout(root)
    for path, kinds in ((layout.results, GRID_KINDS), (layout.metrics, ("pretraining", "classification"))):
        if path.is_file():
            kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
            if kind in kinds:
                return str(kind)
    raise RunDirError(
        f"{root}: not a finished pretraining, classification or experiment grid (no metrics.json or "
        "results.json of one); `learner track` records finished runs"
    )


def _tracker_name(given: str | None, own: LoggerName) -> LoggerName:
    trackers = [name for name in get_args(LoggerName) if name != "csv"]
    if given is None:
        return own if own != "csv" else "mlflow"
    if given not in trackers:
        raise ConfigError(f"--logger {given!r}: choose one of {', '.join(trackers)}")
    return cast(LoggerName, given)


def _track_grid(root: Path, name: LoggerName) -> int:
    results = load_results(RunLayout(root).results)
    parent = _open_grid(root, name, replace=True)
    inits: set[Path] = set()
    for cell in results.cells:
        config = load_run_config(root / cell.classification_folder)
        _record_cell(parent, root, cell, config)
        init = Path(config.model.init).resolve() if config.model.init else None
        if init is not None and init.is_relative_to(root.resolve()) and RunLayout(init).epochs.is_file():
            inits.add(init)
    for encoder_dir in sorted(inits):
        _record_init(parent, root.resolve(), encoder_dir)
    _record_outputs(parent, root)
    parent.close()
    return 1 + len(results.cells) + len(inits)
