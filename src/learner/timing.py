"""Wall time per pipeline stage: the per-stage table every experiment run prints and stores in
``results.json`` (``timing``).

Code that does a stage's work wraps it in ``with stage("embedding"):``. Time is *exclusive*: while a
nested stage runs, the enclosing one is paused, so a pretraining's validation passes are counted under
``validation`` and not also under ``pretrain …``, and the stages of a run never add up to more than its wall
time. :data:`CLOCK` is the process's one clock; a run takes a :meth:`StageClock.mark` when it starts and
:meth:`StageClock.since` that mark when it ends, which gives the stages of that run alone (what the process
did before is not in it). Time spent outside every stage is the table's ``other`` row.

Only the calling process is timed: the work of loader or decoder worker processes shows up as the time the
main process spends waiting for it, under the stage that waits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Timing:
    """The wall time of one run (``total`` seconds) and its stages' exclusive seconds and call counts."""

    total: float
    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    @property
    def other(self) -> float:
        """Seconds outside every stage (never negative: rounding of the clock reads is clamped away)."""
        return max(0.0, self.total - sum(self.seconds.values()))

    def table(self) -> str:
        """A Markdown table: one row per stage in first-seen order, then ``other`` and ``total``, each with
        seconds, share of the total and calls."""
        rows = ["| stage | seconds | share | calls |", "|---|---:|---:|---:|"]
        total = self.total or float("nan")
        for name, seconds in [*self.seconds.items(), ("other", self.other)]:
            calls = str(self.calls[name]) if name in self.calls else ""
            rows.append(f"| {name} | {seconds:.1f} | {seconds / total:.1%} | {calls} |")
        rows.append(f"| **total** | {self.total:.1f} | 100% | |")
        return "\n".join(rows)


@dataclass(frozen=True)
class Mark:
    """A point on a :class:`StageClock`: the time and the per-stage totals then."""

    at: float
    seconds: dict[str, float]
    calls: dict[str, int]


class StageClock:
    """Exclusive wall time per stage name (see the module docstring); stages nest."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._calls: dict[str, int] = {}
        self._open: list[list[Any]] = []  # [name, time since which it is the innermost stage]

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the wall time of the ``with`` body under ``name``, minus the stages nested in it."""
        now = time.perf_counter()
        if self._open:  # pause the enclosing stage
            outer = self._open[-1]
            self._add(outer[0], now - outer[1])
        self._open.append([name, now])
        self._calls[name] = self._calls.get(name, 0) + 1
        try:
            yield
        finally:
            now = time.perf_counter()
            _, since = self._open.pop()
            self._add(name, now - since)
            if self._open:  # resume the enclosing stage
                self._open[-1][1] = now

    def mark(self) -> Mark:
        """The clock now, to measure a run from (:meth:`since`)."""
        now = time.perf_counter()
        return Mark(now, self._seconds_at(now), dict(self._calls))

    def since(self, mark: Mark) -> Timing:
        """The stages and wall time from ``mark`` to now (a stage still open counts up to now)."""
        now = time.perf_counter()
        seconds = {k: v - mark.seconds.get(k, 0.0) for k, v in self._seconds_at(now).items()}
        calls = {k: v - mark.calls.get(k, 0) for k, v in self._calls.items()}
        ran = [k for k in self._calls if calls[k] > 0 or seconds.get(k, 0.0) > 0]  # first-seen order
        return Timing(now - mark.at, {k: seconds.get(k, 0.0) for k in ran}, {k: calls[k] for k in ran})

    def _seconds_at(self, now: float) -> dict[str, float]:
        """Per-stage totals at ``now``, the innermost open stage's running time included."""
        seconds = dict(self._seconds)
        if self._open:
            name, since = self._open[-1]
            seconds[name] = seconds.get(name, 0.0) + now - since
        return seconds

    def _add(self, name: str, seconds: float) -> None:
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds


CLOCK = StageClock()
"""The process's clock."""

stage = CLOCK.stage
"""``with stage(name):`` on :data:`CLOCK`."""
