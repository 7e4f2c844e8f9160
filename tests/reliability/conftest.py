"""Fixtures of the reliability tests: a deadline on every test (a hang fails instead of blocking the
suite) and the listing of a folder (to prove that a refused command left nothing behind)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

DEADLINE_S = 60


class Hang(BaseException):
    """Raised in a test that ran past its deadline (a BaseException: no ``except Exception`` swallows it)."""


@pytest.fixture(autouse=True)
def deadline() -> Iterator[None]:
    """Fail the test after :data:`DEADLINE_S` seconds (SIGALRM interrupts even a blocking ``open``)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"the test ran past its {DEADLINE_S} s deadline: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, DEADLINE_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def listing() -> Callable[[Path], list[str]]:
    """``listing(folder)``: every path under ``folder`` (hidden ones included), relative and sorted."""

    def files(folder: Path) -> list[str]:
        return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))

    return files
