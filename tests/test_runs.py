"""Run directories and atomic writes."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from learner import atomic, runs
from learner.config import Config, apply_overrides
from learner.errors import RunDirError
from learner.runs import (
    check_inputs_outside,
    check_run_dir,
    load_run_config,
    open_run_dir,
    removed_unless_started,
)


def test_new_run_records_config_seed_and_versions(tmp_path: Path) -> None:
    cfg = apply_overrides(Config(), {"seed": 7, "optim.epochs": 3})
    run = open_run_dir(tmp_path / "run", cfg)
    assert load_run_config(run.path) == cfg
    record = json.loads((run.path / "run.json").read_text())
    assert record["seed"] == 7
    assert record["packages"]["torch"] is not None
    assert record["packages"]["learner"] is not None
    assert (run.path / "log.txt").exists()


def test_non_empty_dir_is_refused_without_resume_or_force(tmp_path: Path) -> None:
    root = tmp_path / "run"
    run = open_run_dir(root, Config())
    run.write_metrics({"mae": 1.0})
    with pytest.raises(RunDirError, match=r"--resume.*--force"):
        open_run_dir(root, Config())
    resumed = open_run_dir(root, Config(), resume=True)
    assert json.loads((resumed.path / "metrics.json").read_text()) == {"mae": 1.0}  # kept
    open_run_dir(root, Config(), force=True)
    assert not (root / "metrics.json").exists()  # wiped


def test_force_replaces_the_previous_run_only_once_the_new_one_has_started(tmp_path: Path) -> None:
    root = tmp_path / "run"
    old = open_run_dir(root, Config())
    old.write_metrics({"mae": 1.0})
    set_aside: list[bool] = []

    def failing_start() -> None:  # a decode fails, say, before the new run saved anything
        with removed_unless_started(root, new=True):
            open_run_dir(root, apply_overrides(Config(), {"seed": 5}), force=True)
            set_aside.append(not (root / "metrics.json").exists())
            raise RuntimeError("the new run failed")

    with pytest.raises(RuntimeError, match="the new run failed"):
        failing_start()
    assert set_aside == [True]  # the previous run was out of the way while the new one started
    assert json.loads((root / "metrics.json").read_text()) == {"mae": 1.0}  # the previous run is back
    assert load_run_config(root).seed == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # and no sibling is left

    with removed_unless_started(root, new=True):
        open_run_dir(root, apply_overrides(Config(), {"seed": 5}), force=True)
    assert not (root / "metrics.json").exists()  # replaced for good
    assert load_run_config(root).seed == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_resume_needs_an_existing_run(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="nothing to resume"):
        open_run_dir(tmp_path / "empty", Config(), resume=True)
    with pytest.raises(RunDirError, match="exclude"):
        open_run_dir(tmp_path / "x", Config(), resume=True, force=True)


def test_force_never_wipes_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    root = tmp_path / "thesis"
    root.mkdir()
    (root / "thesis.tex").write_text("years of work")
    with pytest.raises(RunDirError, match="no learner run"):
        open_run_dir(root, Config(), force=True)
    assert (root / "thesis.tex").read_text() == "years of work"


def _no_flock(descriptor: int, operation: int) -> None:
    """``fcntl.flock`` on a file system without locks (NFS, Lustre without flock)."""
    raise OSError(errno.ENOLCK, "No locks available")


def test_resume_removes_what_a_killed_atomic_write_left_at_the_top_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A process killed inside :func:`atomic.atomic_path` leaves its hidden temporary: the next ``--resume``
    (holding the folder's lock) deletes it and says so; what is not such a temporary stays, and so does
    everything where the folder cannot be locked."""
    root = tmp_path / "run"
    open_run_dir(root, Config()).write_metrics({"mae": 1.0})
    left = root / ".metrics.csv.k3v_x9ab.tmp"
    kept = [
        root / "notes.tmp",
        root / "checkpoints" / ".metrics.csv.k3v_x9ab.tmp",
        root / ".folder.tmp" / "f",
    ]
    for path in [left, *kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("half")
    runs._unlock(root)  # as a new process would find it
    with caplog.at_level(logging.INFO, logger="learner.runs"):
        open_run_dir(root, Config(), resume=True)
    assert not left.exists()
    assert f"removed {left.name}, left by an interrupted write" in caplog.text
    assert all(path.read_text() == "half" for path in kept)

    runs._unlock(root)
    left.write_text("half")
    monkeypatch.setattr(runs.fcntl, "flock", _no_flock)
    open_run_dir(root, Config(), resume=True)
    assert left.read_text() == "half"  # unguarded: another process may be writing it


def test_resume_keeps_the_original_start_record(tmp_path: Path) -> None:
    root = tmp_path / "run"
    open_run_dir(root, Config())
    first = (root / "run.json").read_text()
    assert not list(root.glob("resume-*.json"))  # recorded only once a resume passed its checks
    open_run_dir(root, Config(), resume=True).record_resume()
    open_run_dir(root, Config(), resume=True).record_resume()
    assert (root / "run.json").read_text() == first
    assert sorted(p.name for p in root.glob("resume-*.json")) == ["resume-1.json", "resume-2.json"]


def test_json_is_strict_nan_becomes_null(tmp_path: Path) -> None:
    import numpy as np

    target = atomic.write_json(tmp_path / "m.json", {"r": float("nan"), "v": np.array([1.0, np.inf]), "n": 2})
    assert json.loads(target.read_text()) == {"r": None, "v": [1.0, None], "n": 2}


def test_atomic_write_leaves_nothing_behind_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    atomic.write_text(target, "old")

    def interrupted_write() -> None:
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        interrupted_write()
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_follows_the_umask(tmp_path: Path) -> None:
    target = atomic.write_text(tmp_path / "out.txt", "x")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert (target.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


def test_cell_logs_go_to_the_cell_and_its_experiment_never_to_a_sibling(tmp_path: Path) -> None:
    import logging

    log = logging.getLogger("learner.test")
    open_run_dir(tmp_path / "grid", Config())
    log.info("grid starts")
    open_run_dir(tmp_path / "grid" / "cell1", Config())
    log.info("cell one")
    open_run_dir(tmp_path / "grid" / "cell2", Config())
    log.info("cell two")
    grid = (tmp_path / "grid" / "log.txt").read_text()
    one = (tmp_path / "grid" / "cell1" / "log.txt").read_text()
    two = (tmp_path / "grid" / "cell2" / "log.txt").read_text()
    assert all(m in grid for m in ("grid starts", "cell one", "cell two"))
    assert "cell one" in one
    assert "cell two" not in one
    assert "cell two" in two
    assert "cell one" not in two


# ---- a run folder is owned (issue 21: data loss) ----


@contextmanager
def _held_by_another_process(root: Path) -> Iterator[None]:
    """Another process holds ``root``'s lock (as a learner run writing there does) for the block."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait(timeout=30)


HOLD_LOCK = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
    "print('locked', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_second_writer_is_refused_and_deletes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with removed_unless_started(root, new=True):  # a finished run: its lock ended with it
        open_run_dir(root, Config()).write_metrics({"mae": 1.0})
    before = sorted(p.name for p in root.iterdir())
    with _held_by_another_process(root):
        with pytest.raises(RunDirError, match="another learner process") as refused:
            open_run_dir(root, Config(), force=True)
        assert "\n" not in str(refused.value)
        # the refused command's clean-up (a new run that failed before it started) must not touch the other's
        with pytest.raises(RuntimeError), removed_unless_started(root, new=True):
            raise RuntimeError("the refused run fails")
        assert sorted(p.name for p in root.iterdir()) == before
    open_run_dir(root, Config(), force=True)  # free again once the other process is gone


def test_a_failed_new_run_of_this_process_is_still_removed(tmp_path: Path) -> None:
    root = tmp_path / "run"

    def start_then_fail() -> None:
        with removed_unless_started(root, new=True):
            open_run_dir(root, Config())
            raise RuntimeError("fails before its first checkpoint")

    with pytest.raises(RuntimeError):
        start_then_fail()
    assert not root.exists()


def test_force_refuses_when_an_input_lies_inside_the_run_folder(tmp_path: Path) -> None:
    root = tmp_path / "run"
    open_run_dir(root, Config())
    manifest = root / "manifest.csv"
    manifest.write_text("patient_id,scan_id,path,visit,score\n")
    with pytest.raises(RunDirError, match=r"--force would delete .*manifest\.csv"):
        check_inputs_outside(root, [tmp_path / "elsewhere.csv", manifest])
    check_inputs_outside(root, [tmp_path / "elsewhere.csv"])  # inputs outside: nothing to refuse
    assert manifest.is_file()


def test_resume_of_another_kind_of_run_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cls"
    open_run_dir(root, Config(), kind="classification").write_metrics({"kind": "classification"})
    with pytest.raises(RunDirError, match="holds a classification run; --resume here continues only a pretr"):
        check_run_dir(root, resume=True, kind="pretraining")
    check_run_dir(root, resume=True, kind="classification")
    assert json.loads((root / "run.json").read_text())["kind"] == "classification"


def test_a_file_system_without_flock_runs_unguarded_and_still_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Some network mounts (NFS, Lustre without flock) answer ENOLCK: the run goes on, says so, and a failed
    new run of this process is still removed."""

    monkeypatch.setattr(runs.fcntl, "flock", _no_flock)
    root = tmp_path / "run"

    def start_then_fail() -> None:
        with removed_unless_started(root, new=True):
            open_run_dir(root, Config())
            raise RuntimeError("fails before its first checkpoint")

    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError):
        start_then_fail()
    assert "cannot lock the folder" in caplog.text
    assert not root.exists()


# ---- --force never deletes what a run did not write; a failed start removes only its own (issue 25) ----


def test_force_refuses_while_the_folder_holds_what_no_run_writes(tmp_path: Path) -> None:
    """``--force`` replaces a run, never the user's notes or folders kept beside it (they were set aside
    and deleted with the previous run)."""
    root = tmp_path / "run"
    open_run_dir(root, Config()).write_metrics({"mae": 1.0})
    (root / "figures").mkdir()
    (root / "figures" / "mine.png").write_bytes(b"drawn by hand")
    (root / "notes.txt").write_text("years of work")
    for entry in ("figures", "notes.txt"):
        with pytest.raises(RunDirError, match=rf"--force would delete .*{entry}, which no learner run") as no:
            open_run_dir(root, Config(), force=True)
        assert "\n" not in str(no.value)
        assert (root / "notes.txt").read_text() == "years of work"
        assert (root / "metrics.json").is_file()  # nothing was set aside
        (root / entry).rename(tmp_path / entry)  # the user moves it out, as the message says
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "notes.txt", "run"]
    with removed_unless_started(root, new=True):
        open_run_dir(root, Config(), force=True)
    assert not (root / "metrics.json").exists()  # what the run wrote is replaced


def test_force_replaces_a_grid_with_the_dataset_folders_its_config_names(tmp_path: Path) -> None:
    from learner.config import DatasetSpec, Experiment, ExperimentConfig

    root = tmp_path / "grid"
    open_run_dir(root, Config(), kind="experiment")
    grid = ExperimentConfig(datasets=[DatasetSpec(name="LUS", manifest=Path("m.csv"))])
    (root / "config.yaml").write_text(Experiment(Config(), grid).to_yaml())
    for entry in ("LUS", "fig1_LUS_score.png", "table3.md", "REPORT.md", "results.json", "resume-1.json"):
        (root / entry).mkdir() if entry == "LUS" else (root / entry).write_text("")
    check_run_dir(root, force=True)  # all the grid's own
    (root / "MRI").mkdir()  # a dataset folder its config does not name: the user's
    with pytest.raises(RunDirError, match=r"--force would delete .*MRI"):
        check_run_dir(root, force=True)


def test_the_names_force_may_replace_are_the_ones_runs_write() -> None:
    from learner.evaluation.embedding_analysis import FIGURE_FORMATS
    from learner.layout import written_by_runs
    from learner.report import REPORT_FILE
    from learner.training.curves import CURVE_FORMATS, CURVES_FILE
    from learner.training.tracker import STORES

    written = [REPORT_FILE, *STORES.values(), "submitit", "resume-12.json", ".metrics.json.k3j2.tmp"]
    written += [Path(CURVES_FILE).with_suffix(f".{fmt}").name for fmt in CURVE_FORMATS]
    written += [f"fig1_LUS_score.{fmt}" for fmt in FIGURE_FORMATS] + ["fig1_distance.png"]
    assert [name for name in written if not written_by_runs(name)] == []
    assert [n for n in ("notes.txt", "my.yaml", "data", "LUS", "table3.xlsx") if written_by_runs(n)] == []
    assert written_by_runs("LUS", {"LUS"})


def test_a_failed_start_removes_only_what_it_wrote(tmp_path: Path) -> None:
    """A folder the user made (empty) stays; a link to a folder is never followed to delete it, only what
    the run wrote through it goes; folders the run made for itself go."""
    mine = tmp_path / "mine"
    mine.mkdir()
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    deep = tmp_path / "new" / "deeper" / "run"

    def start_then_fail(root: Path) -> None:
        with removed_unless_started(root, new=True):
            open_run_dir(root, Config())
            raise RuntimeError("fails before its first checkpoint")

    for root in (mine, link, deep):
        with pytest.raises(RuntimeError):
            start_then_fail(root)
    assert list(mine.iterdir()) == []
    assert link.is_symlink()
    assert list(real.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "mine", "real"]


def test_force_refuses_the_runs_own_config_file_inside_out(
    tmp_path: Path, cli, make_tiny_pretrain_config, tiny_lus, tiny_experiment_config
) -> None:
    """``--config OUT/...`` is an input of the run: ``--force`` is refused before anything moves, even for
    a file named as a run's own ``config.yaml`` (it was set aside with the previous run, then deleted)."""
    from learner.config import Experiment, ExperimentConfig

    pq = tmp_path / "pq"
    open_run_dir(pq, Config())
    mine = pq / "config.yaml"
    mine.write_text(make_tiny_pretrain_config().to_yaml())
    code, _, err = cli(["pretrain", "--out", str(pq), "--config", str(mine), "--force"])
    assert code == 2, err
    expected = f"error: --force would delete {mine}, an input of this run inside {pq}; move it out or choose"
    assert err.strip().splitlines() == [f"{expected} another --out"]
    assert mine.read_text() == make_tiny_pretrain_config().to_yaml()
    gq = tmp_path / "gq"
    open_run_dir(gq, Config(), kind="experiment")
    grid = ExperimentConfig(datasets=[tiny_lus], losses=["mse"], seeds=[0])
    (gq / "myconf.yaml").write_text(Experiment(tiny_experiment_config, grid).to_yaml())
    code, _, err = cli(
        ["experiment", "table3", "--out", str(gq), "--config", str(gq / "myconf.yaml"), "--force"]
    )
    assert code == 2, err
    refused = f"error: --force would delete {gq / 'myconf.yaml'}, an input of this run inside {gq}"
    assert err.strip().splitlines() == [f"{refused}; move it out or choose another --out"]
    assert (gq / "myconf.yaml").is_file()
