"""loss.within_patient end to end: a pretraining on a longitudinal cohort (the tiny MRI phantom, whose
train patients have several visits) logs the term; a cohort without such patients is refused before any
work."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from learner.config import Config, DatasetSpec
from learner.errors import ConfigError
from learner.training.pretrain import pretrain

pytestmark = pytest.mark.slow


def test_a_longitudinal_cohort_trains_with_the_term(
    make_tiny_pretrain_config: Callable[..., Config], tiny_mri: DatasetSpec, tmp_path: Path
) -> None:
    config = make_tiny_pretrain_config(
        **{"data.manifest": str(tiny_mri.manifest), "data.scale": tiny_mri.scale, "loss.within_patient": 1.0}
    )
    pretrain(config, tmp_path / "run")
    epochs = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert "train_within_patient" in epochs
    assert all(math.isfinite(v) and v >= 0 for v in epochs["train_within_patient"])


def test_a_cohort_without_repeat_visits_is_refused_before_any_work(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_tiny_pretrain_config(
        **{"loss.within_patient": 1.0}
    )  # tiny LUS: one visit per train patient
    with pytest.raises(ConfigError, match="longitudinal cohort"):
        pretrain(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
