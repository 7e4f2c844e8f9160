"""Run directories and atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from learner import atomic
from learner.config import Config, apply_overrides
from learner.errors import RunDirError
from learner.runs import load_run_config, open_run_dir


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


def test_resume_keeps_the_original_start_record(tmp_path: Path) -> None:
    root = tmp_path / "run"
    open_run_dir(root, Config())
    first = (root / "run.json").read_text()
    open_run_dir(root, Config(), resume=True)
    open_run_dir(root, Config(), resume=True)
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
