"""Fixtures of the reliability tests: a deadline on every test (a hang fails instead of blocking the
suite) and the listing of a folder (to prove that a refused command left nothing behind)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from deadlines import deadline

TEST_DEADLINE_S = 120


@pytest.fixture(autouse=True)
def test_deadline() -> Iterator[None]:
    """Fail a test that runs past :data:`TEST_DEADLINE_S` seconds (the fuzz cases have their own, shorter
    deadlines nested inside; a nested deadline replaces this one, so the fuzz tests run without it)."""
    with deadline(TEST_DEADLINE_S):
        yield


@pytest.fixture
def listing() -> Callable[[Path], list[str]]:
    """``listing(folder)``: every path under ``folder`` (hidden ones included), relative and sorted."""

    def files(folder: Path) -> list[str]:
        return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))

    return files
