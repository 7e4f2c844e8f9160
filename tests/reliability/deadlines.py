"""A deadline for code that might hang (a FIFO opened for reading blocks forever): SIGALRM interrupts even a
blocking system call, and :class:`Hang` is a BaseException, so no ``except Exception`` swallows it."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Hang(BaseException):
    """Raised in code that ran past its deadline."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the block once it has run ``seconds`` (main thread only)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"ran past its {seconds} s deadline: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
