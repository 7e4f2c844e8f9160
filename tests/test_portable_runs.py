"""Portable run directories (issue 13): paths in config.yaml are relative to the run directory, the
originals are recorded, and a run works from any working directory and after being moved with its data."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from learner.config import Config, apply_overrides, load_config
from learner.runs import load_run_config, open_run_dir


def _project(root: Path) -> Config:
    (root / "data").mkdir(parents=True)
    (root / "data" / "m.csv").write_text("patient_id\n")
    (root / "weights.safetensors").write_bytes(b"")
    return load_config(None, ["data.manifest=data/m.csv", "model.init=weights.safetensors"])


def _work_and_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Two new folders under ``tmp_path``, the first the working directory: where a user ran the command,
    and another they read its run from."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(work)
    return work, elsewhere


def test_paths_are_stored_relative_to_the_run_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _project(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    open_run_dir("runs/a", config)
    stored = yaml.safe_load(Path("runs/a/config.yaml").read_text())
    assert stored["data"]["manifest"] == os.path.join("..", "..", "data", "m.csv")
    recorded = json.loads(Path("runs/a/run.json").read_text())["paths"]["data.manifest"]
    assert recorded == {"as_given": "data/m.csv", "absolute": str(tmp_path / "project" / "data" / "m.csv")}
    monkeypatch.chdir(tmp_path)  # another working directory
    assert load_run_config("project/runs/a").data.manifest == tmp_path / "project" / "data" / "m.csv"
    assert load_run_config("project/runs/a").model.init == tmp_path / "project" / "weights.safetensors"


def test_a_run_moved_with_its_data_follows_it_and_a_run_moved_alone_keeps_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _project(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    open_run_dir("runs/a", config)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tmp_path / "project", tmp_path / "moved")  # run and data together
    assert load_run_config("moved/runs/a").data.manifest == tmp_path / "moved" / "data" / "m.csv"
    shutil.copytree(tmp_path / "project" / "runs" / "a", tmp_path / "alone")  # the run without its data
    assert load_run_config("alone").data.manifest == tmp_path / "project" / "data" / "m.csv"


def test_a_runs_config_file_reads_its_paths_against_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--config RUN_DIR/config.yaml`` once read the stored ``../../data/m.csv`` against the working folder
    ("manifest not found"); it now reads it as :func:`load_run_config` does. runtime.data_root is one of
    those paths (it was stored as typed, so a resume elsewhere read it against the new working folder)."""
    monkeypatch.chdir(tmp_path)
    config = apply_overrides(_project(tmp_path / "project"), {"runtime.data_root": "data"})
    monkeypatch.chdir(tmp_path / "project")
    open_run_dir("runs/a", config)
    assert yaml.safe_load(Path("runs/a/config.yaml").read_text())["runtime"]["data_root"] == os.path.join(
        "..", "..", "data"
    )
    monkeypatch.chdir(tmp_path)  # another working directory
    reread = load_config("project/runs/a/config.yaml")
    assert reread == load_run_config("project/runs/a")
    assert reread.data.manifest == tmp_path / "project" / "data" / "m.csv"
    assert reread.runtime.data_root == tmp_path / "project" / "data"
    (tmp_path / "old").mkdir()  # a run of an earlier version: data_root stored as typed, not recorded
    (tmp_path / "old" / "config.yaml").write_text("runtime:\n  data_root: data\n")
    (tmp_path / "old" / "run.json").write_text('{"paths": {}}')
    assert load_run_config(tmp_path / "old").runtime.data_root == Path("data")


@pytest.mark.slow
def test_a_runs_config_reruns_the_run_from_another_folder(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    work, elsewhere = _work_and_elsewhere(tmp_path, monkeypatch)
    manifest = os.path.relpath(
        make_tiny_pretrain_config().data.manifest, work
    )  # as a user in `work` types it
    Path("tiny.yaml").write_text(make_tiny_pretrain_config(**{"data.manifest": manifest}).to_yaml())
    code, _, err = cli(["pretrain", "--config", "tiny.yaml", "--out", "runs/a"])
    assert code == 0, err
    monkeypatch.chdir(elsewhere)
    code, _, err = cli(["pretrain", "--config", "../work/runs/a/config.yaml", "--out", "b"])
    assert code == 0, err
    assert Path("b/metrics.csv").read_text() == (work / "runs" / "a" / "metrics.csv").read_text()


def test_a_run_written_before_the_rule_keeps_its_paths(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("data:\n  manifest: somewhere/m.csv\n")
    (tmp_path / "run.json").write_text("{}")
    assert load_run_config(tmp_path).data.manifest == Path("somewhere/m.csv")


@pytest.mark.slow
def test_classify_and_report_work_from_another_folder(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    from learner.training.pretrain import pretrain

    work, elsewhere = _work_and_elsewhere(tmp_path, monkeypatch)
    base = make_tiny_pretrain_config()
    relative = os.path.relpath(base.data.manifest, work)  # the manifest as a user in `work` types it
    pretrain(make_tiny_pretrain_config(**{"data.manifest": relative}), Path("runs/enc"))
    monkeypatch.chdir(elsewhere)
    settings = ["--set", "classifier.epochs=2", "--set", "classifier.bootstrap=5"]
    code, out, err = cli(["classify", "../work/runs/enc", "--out", "cls", *settings])
    assert code == 0, err
    assert "reference, always-majority" in out
    assert "  Δ predicted score: accuracy " in out  # the encoder's own answer beside the classifier's
    assert "classifier + EM test prior (transductive): accuracy " in out
    assert "fewer than 5" in err  # the tiny cohort's 3 test patients: a warning in the terminal
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["report", "elsewhere/cls"])
    assert code == 0, err
    assert "Regression quality of the encoder" in (elsewhere / "cls" / "REPORT.md").read_text()
