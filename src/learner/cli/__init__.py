"""The ``learner`` command line (typer). Each command group lives in its own module and registers itself.

Errors caused by the user's input are :class:`learner.errors.LearnerError` s: printed as one line
``error: …`` on stderr with a non-zero exit code, no traceback (``learner --debug …`` prints it first).
Usage errors (an unknown option, a missing argument, a bad value) are one such line too, with exit code 2.
"""

from __future__ import annotations

import errno
import importlib
import logging
import signal
import sys
import traceback
import warnings

import typer
from typer.exceptions import TyperException

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
    rich_markup_mode="markdown",
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

    Click's errors (usage errors, exit code 2), the toolkit's user-facing errors and OS errors become one
    ``error: …`` line; anything else propagates with its traceback. ``typer.Exit(code)`` gives ``code``.

    Python warnings raised by libraries while the command runs (a torch ``UserWarning``, ...) are held,
    not shown as they come, so that a failing command ends in its one error line and nothing above it.
    They are shown when the command succeeds (after its output, which is when a user reads them; ``-q``
    asks for errors only and drops them), and before the traceback with ``--debug``; a failing command
    without ``--debug`` drops them, as its error line is what the user must act on.
    """
    _console_handler().setLevel(logging.WARNING)  # each command starts at the default verbosity
    _OPTIONS["debug"] = False
    failure: LearnerError | OSError | None = None
    with warnings.catch_warnings(record=True) as held:
        try:
            code = _invoke(argv)
        except (LearnerError, OSError) as exc:
            failure = exc
        except RuntimeError as exc:  # pathlib (Python < 3.13) reports ELOOP as "Symlink loop from ..."
            loop = exc.__context__
            if not (isinstance(loop, OSError) and loop.errno == errno.ELOOP):
                raise
            failure = loop
    if failure is None:
        if code == 0 and _console_handler().level <= logging.WARNING:
            _show(held)
        return code
    if _OPTIONS["debug"]:
        _show(held)
        traceback.print_exception(failure, file=sys.stderr)
    if isinstance(failure, LearnerError):
        typer.echo(f"error: {failure}", err=True)
        return failure.exit_code
    # the system refused: name the file and the reason in one line, not a traceback
    typer.echo(f"error: {os_error_line(failure)}", err=True)
    return LearnerError.exit_code


def _invoke(argv: list[str] | None) -> int:
    """Run the command through click outside its standalone mode, which would print usage errors as a
    multi-line box: here they are one ``error:`` line naming the command's ``--help``."""
    try:
        result = app(args=argv, prog_name="learner", standalone_mode=False)
    except SystemExit as exc:  # shell completion exits by itself
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except TyperException as exc:  # typer's click exceptions: usage errors (exit code 2) and the like
        if type(exc).__name__ == "NoArgsIsHelpError":  # `learner` alone: typer has printed the help
            return exc.exit_code
        lines = [line.strip() for line in exc.format_message().splitlines() if line.strip()]
        context = getattr(exc, "ctx", None)
        see = f"; see '{context.command_path} --help'" if context is not None else ""
        typer.echo(f"error: {' '.join(lines).rstrip('.')}{see}", err=True)
        return exc.exit_code
    except typer.Abort:  # end of input at a prompt
        typer.echo("error: aborted", err=True)
        return 1
    # outside standalone mode click returns typer.Exit's code, or the command's own return value: none
    # returns one, so anything but an int is success
    return result if type(result) is int else 0


def _show(held: list[warnings.WarningMessage]) -> None:
    """Show held warnings as Python would have, once each."""
    seen = set()
    for message in held:
        key = (message.category, str(message.message), message.filename, message.lineno)
        if key not in seen:
            seen.add(key)
            warnings.showwarning(
                message.message,
                message.category,
                message.filename,
                message.lineno,
                message.file,
                message.line,
            )


OS_ERROR_HINTS: dict[int, str] = {
    errno.EBUSY: "the folder is in use: the current folder or a mount point cannot be renamed or replaced",
    errno.ELOOP: "a symbolic link that leads back to itself",
}
"""Errors whose system wording alone does not say what to look at: a hint in brackets after it."""


def os_error_line(exc: OSError) -> str:
    """``<file>: <the system's reason>`` (e.g. ``runs/x: No space left on device``), or the reason alone;
    a hint follows where the reason alone is cryptic (:data:`OS_ERROR_HINTS`)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in OS_ERROR_HINTS:
        reason = f"{reason} ({OS_ERROR_HINTS[exc.errno]})"
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
