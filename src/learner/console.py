"""The one convention between the library's log records and the CLI's terminal handler.

A progress line that the library prints to the terminal itself (through rich, beside its progress bar) is
also logged, so that a run's ``log.txt`` holds it. It is logged with ``extra={ON_CONSOLE: True}``, and the
CLI's terminal handler skips such records, so that ``-v`` shows every line once.
"""

from __future__ import annotations

ON_CONSOLE = "on_console"
"""The log-record attribute that says: already printed to the terminal."""
