"""Every entry of the bad-input catalogue (:mod:`bad_inputs`) is refused cleanly: exit code 2, one
``error:`` line that names the culprit, no traceback, and the folder exactly as it was before. Each runs
in its folder (``.`` is that folder), under its conditions (``during``)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytest
from bad_inputs import CATALOGUE, BadInput, assert_refused, cache, manifest_of

Cli = Callable[[list[str]], tuple[int, str, str]]


@pytest.mark.parametrize("case", CATALOGUE, ids=[case.name for case in CATALOGUE])
def test_a_bad_input_is_one_clean_error_and_leaves_nothing(
    case: BadInput,
    tmp_path: Path,
    cli: Cli,
    listing: Callable[[Path], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = case.build(tmp_path)
    before = listing(tmp_path)
    with case.during(tmp_path) if case.during is not None else nullcontext():
        code, out, err = cli(argv)
    line = assert_refused(code, out, err, case.culprit)
    assert case.shown in out, out
    assert not case.absent or case.absent not in line, line
    assert listing(tmp_path) == before


def test_debug_shows_the_traceback_above_the_same_line(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    argv = cache(manifest_of(tmp_path, "empty.mp4"))
    plain_code, _, plain_err = cli(argv)
    code, _, err = cli(["--debug", *argv])
    assert code == plain_code == 2
    assert "Traceback (most recent call last)" in err
    assert "learner.errors.ScanReadError" in err
    assert "Traceback" not in plain_err
    assert err.rstrip().splitlines()[-1] == plain_err.strip()
