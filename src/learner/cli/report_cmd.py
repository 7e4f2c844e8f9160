"""``learner report RUN_DIR``: the Markdown report of any finished run (pretraining, classification, an
experiment grid), written from its results file (:mod:`learner.report`); ``learner track RUN_DIR``: the same
finished run recorded in MLflow or TensorBoard from its files (:mod:`learner.experiments.tracking`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``track`` to the ``learner`` app."""
    app.command("report")(report_command)
    app.command("track")(track_command)


def report_command(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="An experiment, classification (learner classify) or pretraining (learner pretrain) run "
            "directory.",
            show_default=False,
        ),
    ],
) -> None:
    """Write RUN_DIR/REPORT.md: data source, tables with reference rows, Fig. 1, regression quality, pair
    balance, config; for a pretraining run its regression quality and training curves."""
    from learner import api

    typer.echo(f"report: {api.report(run_dir)}")


def track_command(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A finished experiment grid, classification or pretraining run directory.",
            show_default=False,
        ),
    ],
    logger: Annotated[
        str | None,
        typer.Option(
            "--logger",
            help="mlflow (RUN_DIR/mlruns) or tensorboard (RUN_DIR/tensorboard); default: the run's own "
            "runtime.logger, else mlflow.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Record a finished run in MLflow or TensorBoard from its files (metrics.csv, metrics.json,
    results.json), nothing rerun: a grid becomes a parent run with one nested run per cell."""
    from learner import api

    tracked = api.track(run_dir, logger=logger)
    typer.echo(f"tracked: {tracked.kind} as {tracked.runs} {tracked.logger} run(s) in {tracked.store}")
    typer.echo(f"browse: {tracked.ui}")
