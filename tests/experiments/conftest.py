"""ONE session-scoped Table 3 run (real pretraining, 1 epoch) on both tiny phantom cohorts for the
experiment, embedding, classification, report and predict tests; plus a fast stand-in for pretraining
that copies that run, for the grid-bookkeeping tests that count pretrainings.

The cohorts, the tiny experiment config and the shared folder come from ``tests/conftest.py``. Under
pytest-xdist the run is built once, by whichever worker gets there first, in the folder all workers of the
session share (guarded by a file lock), and read by the others.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import torch

from learner import atomic
from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig
from learner.experiments import stages, table3
from learner.experiments.results import ExperimentResult, load_results
from learner.report import write_report

LOSSES = ["mse", "mse+wcl"]


@pytest.fixture(scope="session")
def tiny_datasets(tiny_lus: DatasetSpec, tiny_mri: DatasetSpec) -> list[DatasetSpec]:
    """The phantom LUS cohort and the phantom MRI cohort (through the ADNI adapter), 12 patients each."""
    return [tiny_lus, tiny_mri]


@pytest.fixture(scope="session")
def run_tiny_table3(
    tiny_experiment_config: Config, tiny_datasets: list[DatasetSpec]
) -> Callable[[Path], ExperimentResult]:
    """``run_tiny_table3(out)``: Table 3 on both tiny cohorts, 2 datasets × (MSE, MSE+wCL) × seed 0, every
    stage real, written to ``out``; on one thread, so that its numbers do not depend on the machine's cores
    (with two threads the float reduction order differs)."""

    def run(out: Path) -> ExperimentResult:
        grid = ExperimentConfig(datasets=tiny_datasets, losses=LOSSES, seeds=[0])
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            result = table3.run_table3(Experiment(tiny_experiment_config, grid), out)
        finally:
            torch.set_num_threads(threads)
        write_report(out)  # table3.md and REPORT.md, as `learner experiment table3` writes them
        return result

    return run


@pytest.fixture(scope="session")
def tiny_table3(
    shared_root: Path,
    shared_lock: Callable[[str], AbstractContextManager[None]],
    run_tiny_table3: Callable[[Path], ExperimentResult],
) -> ExperimentResult:
    """The session's one :func:`run_tiny_table3`, shared by every xdist worker."""
    out = shared_root / "tiny-table3"
    with shared_lock("tiny-table3"):
        if (out / "results.json").is_file():  # built by another worker of this session
            return ExperimentResult(out, load_results(out / "results.json"))
        return run_tiny_table3(out)


class FakePretrain:
    """Stands in for :func:`learner.training.pretrain.pretrain`: copies the finished MSE encoder run of the
    config's score scale (the tiny LUS or MRI cohort: regenerated cohorts with the same parameters are the
    same cohort) into the run dir, with or without its embedding cache, and records every call."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources
        self.calls: list[dict[str, Any]] = []
        self.keep_embeddings = True

    def __call__(self, config: Config, run_dir: Path, *, resume: bool = False, force: bool = False) -> None:
        self.calls.append({"backbone": config.model.backbone, "loss": config.loss.name, "seed": config.seed,
                           "resume": resume, "force": force})  # fmt: skip
        if force:
            shutil.rmtree(run_dir, ignore_errors=True)
        skipped = ["complete.json"] + ([] if self.keep_embeddings else ["embeddings"])
        source = self.sources[config.data.scale]
        shutil.copytree(source, run_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*skipped))
        atomic.write_text(Path(run_dir) / "config.yaml", config.to_yaml())


@pytest.fixture
def fake_pretrain(
    monkeypatch: pytest.MonkeyPatch, tiny_table3: ExperimentResult, tiny_datasets: list[DatasetSpec]
) -> FakePretrain:
    """Pretraining replaced by a copy of the shared encoder run (see :class:`FakePretrain`)."""
    out = tiny_table3.out_dir
    fake = FakePretrain({d.scale: out / d.name / "mse" / "seed-0" / "encoder" for d in tiny_datasets})
    monkeypatch.setattr(stages, "pretrain", fake)
    return fake
