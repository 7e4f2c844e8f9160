"""The ``learner`` command line (typer). Each command group lives in its own module and registers itself.

Errors caused by the user's input are :class:`learner.errors.LearnerError` s: printed as one line
``error: …`` on stderr with a non-zero exit code, no traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from learner import __version__
from learner.errors import LearnerError

app = typer.Typer(
    name="learner",
    help=(
        "LEARNER: learn patient progression from coarse inter-patient labels.\n\n"
        "Pipeline: data check/split → phantom (built-in data) → pretrain (MSE / +CL / +wCL) → embed → "
        "classify (improved / stable / deteriorated) → experiment / report. `learner demo` runs it all "
        "on the built-in phantom cohort."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Each module defines ``register(app)``; the order is the order of `learner --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "learner.cli.data_cmd",
    "learner.cli.phantom_cmd",
    "learner.cli.train_cmd",
    "learner.cli.weights_cmd",
    "learner.cli.evaluate_cmd",
    "learner.cli.experiment_cmd",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"learner {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """LEARNER command line."""


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_commands()


class _StderrWarnings(logging.StreamHandler):  # type: ignore[type-arg]
    """WARNING and above as ``warning: …`` on whatever ``sys.stderr`` is at the time of the message."""

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.WARNING)
        self.setFormatter(logging.Formatter("warning: %(message)s"))

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _: object) -> None:
        pass  # always the current sys.stderr (it may be swapped, e.g. by a test harness)


def _console_warnings() -> None:
    """Warnings from the library (skipped scans, patients without pairs, rare classes) reach the terminal."""
    logger = logging.getLogger("learner")
    if not any(isinstance(h, _StderrWarnings) for h in logger.handlers):
        logger.addHandler(_StderrWarnings())


def run(argv: list[str] | None = None) -> int:
    """Run one ``learner`` command in this process and return its exit code (0 on success).

    Typer's standalone mode handles usage errors and ``typer.Exit`` codes itself (by exiting, which is
    caught here); anything else propagates, so only the toolkit's own user-facing errors become
    ``error: …`` lines.
    """
    _console_warnings()
    try:
        app(args=argv, prog_name="learner")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except LearnerError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: :func:`run`, then exit with its code."""
    sys.exit(run(argv))
