"""Shared fixtures for the training tests: one tiny phantom LUS cohort per session and a tiny config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from learner.config import Config, apply_overrides

TINY: dict[str, Any] = {
    "data.frames": 2,
    "data.size": 32,
    "runtime.workers": 0,
    "model.size": "tiny",
    "model.head_hidden": 16,
    "model.dropout": 0.2,  # so that resuming must restore the global torch RNG exactly
    "loss.name": "mse+wcl",
    "optim.batch_size": 4,
    "optim.epochs": 2,
    "optim.max_steps_per_epoch": 2,
    "runtime.device": "cpu",
}
"""2 epochs × 2 steps of 4 clips (2 frames, 32 px) through the tiny TSM: a couple of seconds on CPU."""


@pytest.fixture(scope="session")
def lus_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6/3/3-patient phantom LUS cohort (4 frames, 32 px) with its split column: ~60 scans."""
    from learner.data.phantom.lus import generate_lus_cohort

    return generate_lus_cohort(
        tmp_path_factory.mktemp("lus"), patients=(6, 3, 3), frames=4, size=32, seed=0, workers=1
    )


@pytest.fixture(scope="session")
def tiny_config(lus_manifest: Path) -> Callable[..., Config]:
    """``tiny_config(**{"optim.epochs": 3})``: :data:`TINY` on the session cohort plus dotted overrides."""

    def make(**overrides: Any) -> Config:
        return apply_overrides(Config(), {"data.manifest": str(lus_manifest), **TINY, **overrides})

    return make
