"""Shared tiny phantom cohorts and ONE session-scoped Table 3 run (real pretraining, 1 epoch) for the
experiment, embedding, classification, report and predict tests; plus a fast stand-in for pretraining
that copies that run, for the grid-bookkeeping tests that count pretrainings.

Under pytest-xdist the cohorts and the run are built once, by whichever worker gets there first, in a
folder all workers of the session share (guarded by a file lock), and read by the others.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from learner import atomic
from learner.config import Config, DatasetSpec, load_config
from learner.experiments import grid, table3
from learner.experiments.demo import DemoMode, prepare_lus, prepare_mri
from learner.experiments.results import ExperimentResult, Results

TINY_SETTINGS = [
    "data.frames=2",
    "data.size=32",
    "runtime.workers=0",
    "optim.epochs=1",
    "optim.batch_size=8",
    "optim.max_steps_per_epoch=2",
    "classifier.epochs=15",
    "classifier.patience=5",
    "classifier.bootstrap=30",
]
TINY_MODE = DemoMode(
    "demo.yaml", lus={"patients": (6, 3, 3), "frames": 4, "size": 32}, mri={"patients": (6, 3, 3), "size": 32}
)
LOSSES = ["mse", "mse+wcl"]


@pytest.fixture(scope="session")
def tiny_mode() -> DemoMode:
    """Demo cohort sizes for tests: 6/3/3 patients, 4 frames of 32 px (MRI: 32³ volumes)."""
    return TINY_MODE


@pytest.fixture(scope="session")
def tiny_config() -> Config:
    return load_config(None, TINY_SETTINGS)


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock`` (one xdist worker at a time builds the shared data)."""
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every xdist worker of this session (the per-worker base folder's parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_datasets(shared_root: Path) -> list[DatasetSpec]:
    """The phantom LUS cohort and the phantom MRI cohort (through the ADNI adapter), 12 patients each."""
    root = shared_root / "tiny-cohorts"
    with _exclusive(shared_root / "tiny-cohorts.lock"):
        return [
            prepare_lus(root / "lus", TINY_MODE, workers=0),
            prepare_mri(root / "mri", TINY_MODE, workers=0),
        ]


@pytest.fixture(scope="session")
def tiny_table3(shared_root: Path, tiny_config: Config, tiny_datasets: list[DatasetSpec]) -> ExperimentResult:
    """Table 3 on both tiny cohorts: 2 datasets × (MSE, MSE+wCL) × seed 0, every stage real."""
    out = shared_root / "tiny-table3"
    with _exclusive(shared_root / "tiny-table3.lock"):
        if (out / "results.json").is_file():  # built by another worker of this session
            results = json.loads((out / "results.json").read_text())
            return ExperimentResult(out, Results.from_json(results), (out / "table3.md").read_text())
        return table3.run_table3(tiny_config, out, datasets=tiny_datasets, losses=LOSSES, seeds=[0])


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
        skipped = [grid.COMPLETE] + ([] if self.keep_embeddings else ["embeddings"])
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
    monkeypatch.setattr(grid, "pretrain", fake)
    return fake
