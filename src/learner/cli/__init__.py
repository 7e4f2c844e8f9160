"""The ``learner`` command line (typer). Each command group lives in its own module and registers itself.

Errors caused by the user's input are :class:`learner.errors.LearnerError` s: printed as one line
``error: …`` on stderr with a non-zero exit code, no traceback (``learner --debug …`` prints it first).
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import traceback

import typer

from learner import __version__
from learner.console import ON_CONSOLE
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
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every subcommand
)

# Each module defines ``register(app)``; the order is the order of `learner --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "learner.cli.data_cmd",
    "learner.cli.phantom_cmd",
    "learner.cli.train_cmd",
    "learner.cli.weights_cmd",
    "learner.cli.evaluate_cmd",
    "learner.cli.experiment_cmd",
    "learner.cli.report_cmd",
    "learner.cli.config_cmd",
)


_OPTIONS = {"debug": False}  # root options that outlive the callback: set by _root, reset by run()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"learner {__version__}")
        raise typer.Exit()


VERBOSITY_LEVELS: dict[int, int] = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}
"""``-q`` / default / ``-v``: the lowest level of the library's log messages shown on stderr."""


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Also show progress messages (cells, splits, epochs) on stderr."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Show errors only, no warnings."),
    debug: bool = typer.Option(
        False, "--debug", help="On an error, print its traceback before the one-line message."
    ),
) -> None:
    """LEARNER command line."""
    _OPTIONS["debug"] = debug
    if verbose and quiet:
        raise typer.BadParameter("-v and -q exclude each other")
    level = VERBOSITY_LEVELS[int(verbose) - int(quiet)]
    _console_handler().setLevel(level)
    if verbose:  # a run directory sets INFO too (its log.txt); before one is open the logger must pass INFO
        logging.getLogger("learner").setLevel(logging.INFO)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_commands()


class _ConsoleFormatter(logging.Formatter):
    """``warning: …`` / ``error: …`` for problems, the bare message for progress (INFO, with ``-v``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


class _StderrWarnings(logging.StreamHandler):  # type: ignore[type-arg]
    """The library's log messages at the chosen verbosity (default: WARNING and above) on whatever
    ``sys.stderr`` is at the time of the message."""

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.WARNING)
        self.setFormatter(_ConsoleFormatter())
        self.addFilter(lambda record: not getattr(record, ON_CONSOLE, False))  # printed already: once only

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _: object) -> None:
        pass  # always the current sys.stderr (it may be swapped, e.g. by a test harness)


def _console_handler() -> _StderrWarnings:
    """The one handler through which the library's messages (skipped scans, patients without pairs, rare
    classes; with ``-v`` also progress) reach the terminal."""
    logger = logging.getLogger("learner")
    for handler in logger.handlers:
        if isinstance(handler, _StderrWarnings):
            return handler
    handler = _StderrWarnings()
    logger.addHandler(handler)
    return handler


def run(argv: list[str] | None = None) -> int:
    """Run one ``learner`` command in this process and return its exit code (0 on success).

    Typer's standalone mode handles usage errors and ``typer.Exit`` codes itself (by exiting, which is
    caught here); anything else propagates, so only the toolkit's own user-facing errors become
    ``error: …`` lines.
    """
    _console_handler().setLevel(logging.WARNING)  # each command starts at the default verbosity
    _OPTIONS["debug"] = False
    try:
        app(args=argv, prog_name="learner")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except LearnerError as exc:
        if _OPTIONS["debug"]:
            traceback.print_exc(file=sys.stderr)
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except OSError as exc:  # the system refused: name the file and the reason in one line, not a traceback
        if _OPTIONS["debug"]:
            traceback.print_exc(file=sys.stderr)
        typer.echo(f"error: {os_error_line(exc)}", err=True)
        return LearnerError.exit_code
    return 0


def os_error_line(exc: OSError) -> str:
    """``<file>: <the system's reason>`` (e.g. ``runs/x: No space left on device``), or the reason alone."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    files = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
    return f"{' → '.join(files)}: {reason}" if files else reason


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: :func:`run`, then exit with its code. SIGTERM (what ``kill``, ``docker
    stop`` and SLURM send) is handled as Ctrl-C: a run folder without a checkpoint yet is removed, a
    checkpointed one is kept for ``--resume``."""
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(run(argv))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
