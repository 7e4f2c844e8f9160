"""kill -9 of a Table 3 grid right after its first cell (the ``LEARNER_FAULT`` test hook), then ``--resume``:
the finished cell is reused untouched, and every cell equals the one of an uninterrupted grid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig
from learner.experiments.results import ExperimentResult, load_results
from learner.training.faults import FAULT_VARIABLE

pytestmark = pytest.mark.slow


def test_a_grid_killed_after_a_cell_resumes_reusing_it(
    tiny_table3: ExperimentResult,
    tiny_lus: DatasetSpec,
    tiny_experiment_config: Config,
    tmp_path: Path,
    cli: Callable[[list[str]], tuple[int, str, str]],
    one_thread: None,
) -> None:
    out, config_file = tmp_path / "table3", tmp_path / "experiment.yaml"
    losses = tiny_table3.results.losses  # the same cells as the uninterrupted grid's LUS column
    grid = ExperimentConfig(datasets=[tiny_lus], losses=losses, seeds=[0])
    config_file.write_text(Experiment(tiny_experiment_config, grid).to_yaml())
    argv = ["experiment", "table3", "--out", str(out), "--config", str(config_file)]
    child = subprocess.run(
        [sys.executable, "-m", "learner", *argv],
        env=os.environ | {FAULT_VARIABLE: "cell:1", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    first, second = (out / "LUS" / loss / "seed-0" for loss in losses)
    assert (first / "classifier" / "complete.json").is_file()
    assert not (second / "encoder").exists()
    kept = [first / stage / "complete.json" for stage in ("encoder", "classifier")]
    kept += list((first / "encoder" / "checkpoints").rglob("*.*"))
    stamps = {path: path.stat().st_mtime_ns for path in kept}

    code, _, err = cli([*argv, "--resume"])  # one thread, as the killed child and the tiny_table3 fixture
    assert code == 0, err
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps  # reused, never rewritten
    resumed = load_results(out / "results.json").cells
    expected = [c for c in tiny_table3.results.cells if c.key.dataset == "LUS"]
    assert [(c.key, c.seed) for c in resumed] == [(c.key, c.seed) for c in expected]
    for got, want in zip(resumed, expected, strict=True):
        assert got.encoder_fingerprint == want.encoder_fingerprint  # bit-identical weights
        assert (got.accuracy, got.macro_f1, got.weighted_f1) == (
            want.accuracy,
            want.macro_f1,
            want.weighted_f1,
        )
    assert sorted(str(p.relative_to(out)) for p in out.rglob(".*")) == []
