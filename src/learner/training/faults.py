"""A test hook: kill this process at a named point, so that kill tests need no timing.

``LEARNER_FAULT=POINT:COUNT[:SIGNAL]`` (e.g. ``checkpoint-swap:2``) makes the COUNT-th arrival at fault
point POINT send SIGNAL (``KILL`` by default; ``TERM``, ``INT``) to the process itself: the same as ``kill``
from outside, at an exact place. Without the variable (always, outside tests) :func:`fault_point` does
nothing. The points:

* ``step``: after an optimiser update (mid-epoch);
* ``validation``: after the first validation batch;
* ``checkpoint-write``: a checkpoint's weights written to its staging folder, its metadata not yet;
* ``checkpoint-swap``: between the two renames that replace a checkpoint folder;
* ``checkpoint-saved``: after ``checkpoints/last`` is saved, before ``metrics.csv`` is rewritten;
* ``cell``: after an experiment grid cell (both its stages) is complete.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

FAULT_VARIABLE = "LEARNER_FAULT"
FAULT_POINTS = frozenset(
    {"step", "validation", "checkpoint-write", "checkpoint-swap", "checkpoint-saved", "cell"}
)

_arrivals: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Count an arrival at ``name``; signal this process when ``LEARNER_FAULT`` asks for this one."""
    assert name in FAULT_POINTS, name
    wanted = os.environ.get(FAULT_VARIABLE)
    if not wanted:
        return
    point, _, rest = wanted.partition(":")
    if point != name:
        return
    count, _, sent = rest.partition(":")
    _arrivals[name] += 1
    if _arrivals[name] == int(count or 1):
        os.kill(os.getpid(), getattr(signal, f"SIG{sent or 'KILL'}"))
