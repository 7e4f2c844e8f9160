"""``learner report RUN_DIR``: the Markdown report of any finished run (pretraining, classification, an
experiment grid), written from its results file (:mod:`learner.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add ``report`` to the ``learner`` app."""
    app.command("report")(report_command)


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
