"""The stage clock: exclusive (nested stages pause the enclosing one), marks, and the table."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from learner import timing
from learner.timing import StageClock, Timing


class FakeTime:
    """``time.perf_counter`` that returns what the test sets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_nested_stages_are_exclusive_and_marks_give_one_run(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, fake = StageClock(), FakeTime()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    with clock.stage("before"):  # not part of the measured run
        fake.now = 5.0
    fake.now = 6.0
    started = clock.mark()
    with clock.stage("pretrain a"):
        fake.now = 8.0  # 2 s of pretrain a
        with clock.stage("validation"):
            fake.now = 9.5  # 1.5 s of validation, not also pretrain a
        fake.now = 10.0  # 0.5 s more of pretrain a
        with clock.stage("validation"):
            fake.now = 11.0
    fake.now = 12.0  # outside every stage: other
    with clock.stage("bootstrap"):
        fake.now = 12.25
        got = clock.since(started)  # an open stage counts up to now
    assert got.total == 6.25
    assert got.seconds == {"pretrain a": 2.5, "validation": 2.5, "bootstrap": 0.25}
    assert got.calls == {"pretrain a": 1, "validation": 2, "bootstrap": 1}
    assert got.other == pytest.approx(1.0)
    fake.now = 13.0  # the closed stage stopped counting at 12.25
    later = clock.since(started)
    assert (later.seconds["bootstrap"], later.total, later.other) == (0.25, 7.0, 1.75)


def test_timing_round_trips_and_renders_a_table() -> None:
    seconds = {"pretrain LUS/mse/seed-0": 6.0, "bootstrap": 1.0}
    run = Timing(total=10.0, seconds=seconds, calls={"bootstrap": 2})
    as_stored = TypeAdapter(Timing)  # as results.json holds it (pydantic validates the dataclass)
    assert as_stored.validate_json(as_stored.dump_json(run)) == run
    table = run.table().splitlines()
    assert table[2] == "| pretrain LUS/mse/seed-0 | 6.0 | 60.0% |  |"
    assert table[3] == "| bootstrap | 1.0 | 10.0% | 2 |"
    assert table[4] == "| other | 3.0 | 30.0% |  |"
    assert table[5] == "| **total** | 10.0 | 100% | |"
