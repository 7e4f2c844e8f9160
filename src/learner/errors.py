"""The one exception family users see.

Every error caused by the user's input (a manifest row, a config key, a file that will not decode) is a
``LearnerError`` whose message is one line naming the file, row or key. The CLI prints it as
``error: <message>`` and exits with ``exit_code``; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LearnerError(Exception):
    """Base class: a one-line, user-facing message; ``exit_code`` is what the CLI returns."""

    exit_code: int = 2


class ConfigError(LearnerError):
    """An unknown config key or an invalid value (the message names the key and the allowed values)."""


class ManifestError(LearnerError):
    """A manifest that failed validation; ``problems`` lists every problem found, each naming its row."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ScanReadError(LearnerError):
    """A scan file that cannot be read (missing, truncated, corrupt, unsupported, wrong dimensionality)."""


class RunDirError(LearnerError):
    """A run directory that cannot be used as asked (non-empty without --resume/--force, missing files)."""


class OutputError(LearnerError):
    """A file or folder that cannot be written: a file where a folder is needed, a path under a file,
    no permission, a read-only file system, no space left. The message names the path."""


class CheckpointError(LearnerError):
    """A checkpoint that is missing, malformed, or does not match the model or the encoder it claims."""


class NonFiniteLossError(LearnerError):
    """Training produced a NaN/inf loss; the message names the epoch and step."""
