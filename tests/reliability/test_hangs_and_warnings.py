"""Cases of issue 21 that are not a refusal (so not entries of the bad-input catalogue): a named pipe where a
cache entry belongs is rebuilt, never waited on; the decoding workers of a killed ``data cache`` die with it;
``data check`` of scores that are all equal says so. (tests/reliability/COVERAGE.md maps every defect of the
issue to its test.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bad_inputs import cache, good_rows, manifest_of, still, write_manifest
from deadlines import deadline

Cli = Callable[[list[str]], tuple[int, str, str]]


def test_a_named_pipe_at_a_cache_entry_is_rebuilt_not_waited_on(tmp_path: Path, cli: Cli) -> None:
    """Opening a FIFO for reading blocks until a writer comes: ``data cache`` once waited forever."""
    argv = cache(manifest_of(tmp_path, still(tmp_path / "a.png").name))
    assert cli(argv)[0] == 0
    (entry,) = (tmp_path / ".learner-cache").iterdir()
    entry.unlink()
    os.mkfifo(entry)
    with deadline(30):
        code, out, err = cli(argv)
    assert (code, "Traceback" in err) == (0, False), err
    assert "cache: 0 built, 0 reused, 0 skipped, 1 rebuilt (corrupt)" in out
    assert entry.is_file()  # the pipe replaced by the entry
    assert "cache: 0 built, 1 reused" in cli(argv)[1]


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is gone for our purposes


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """78 phantom clips of 32 frames at 96 px: a few seconds of decoding for two workers (made by the command,
    whose flags an older revision has too, for ``compare.sh``)."""
    out = tmp_path_factory.mktemp("cohort") / "lus"
    argv = [sys.executable, "-m", "learner", "phantom", "lus", str(out), "--patients", "8,4,4", "--seed", "5",
            "--frames", "32", "--size", "96"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    subprocess.run(argv, env=env, capture_output=True, timeout=300, check=True)
    return out / "manifest.csv"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill -9"])
@pytest.mark.parametrize("decoding", [False, True], ids=["as the workers start", "mid-decode"])
@pytest.mark.slow
def test_the_workers_of_a_killed_data_cache_die_with_it(
    cohort: Path, tmp_path: Path, sig: int, decoding: bool
) -> None:
    """``data cache --workers 2`` once left its pool workers and resource tracker alive after SIGTERM or
    kill -9 of the parent, still writing entries; and a worker still starting (importing) when its parent
    died once waited forever."""
    entries = tmp_path / "cache"
    argv = [sys.executable, "-m", "learner", "data", "cache", str(cohort), "--workers", "2",
            "--set", f"runtime.cache_dir={entries}"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list[int] = []
    try:
        started = time.monotonic() + 60
        while time.monotonic() < started and not (
            len(children) >= 2 and (not decoding or any(entries.rglob("*.lcache")))
        ):
            assert parent.poll() is None, "data cache ended before it could be killed"
            children = sorted(set(children) | set(_children(parent.pid)))
            time.sleep(0.05)
        assert len(children) >= 2, children  # the pool's workers (and its resource tracker) run
        parent.send_signal(sig)
        parent.wait(timeout=60)
        gone = time.monotonic() + 15
        while any(map(_alive, children)) and time.monotonic() < gone:
            time.sleep(0.1)
        assert [pid for pid in children if _alive(pid)] == []
        written = sorted(entries.rglob("*"))
        time.sleep(1)
        assert sorted(entries.rglob("*")) == written  # nothing writes entries any more
    finally:
        for pid in [parent.pid, *children]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait(timeout=30)


def test_data_check_says_when_every_score_is_equal(tmp_path: Path, cli: Cli) -> None:
    """Scores that are all equal once passed ``data check`` without a word, and a pretraining on them
    reported MAE 0 (it is refused now: the catalogue's entry)."""
    manifest = write_manifest(tmp_path / "m.csv", [[*row[:4], "200"] for row in good_rows(tmp_path)])
    code, out, err = cli(["data", "check", str(manifest)])
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: every score is 200: there is nothing to regress and no pair changes (a pretraining "
        "refuses it unless --loss vicreg); check the score column"
    ]
