"""Resume-extend (issue 13): `learner pretrain --resume RUN --set optim.epochs=N` with N larger continues a
finished run; the schedule's change is recorded in run.json and config.yaml."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from learner.config import Config
from learner.errors import ConfigError
from learner.training.pretrain import pretrain

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A finished 2-epoch run (2 steps per epoch, cosine schedule, LR 1e-3)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    pretrain(make_tiny_pretrain_config(), run_dir)
    return run_dir


def test_extending_continues_and_records_the_new_schedule(
    finished: Path, make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    result = pretrain(make_tiny_pretrain_config(**{"optim.epochs": 3}), run_dir, resume=True)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    history = pd.read_csv(run_dir / "metrics.csv")
    assert history["step"].tolist() == [2, 4, 6]
    # epoch 3's last update is step index 5 of 6 under the recomputed cosine schedule
    assert history["lr"].iloc[-1] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 5 / 6)))
    (extension,) = json.loads((run_dir / "run.json").read_text())["extensions"]
    assert extension["from_epochs"] == 2
    assert extension["to_epochs"] == 3
    assert extension["at_step"] == 4
    assert extension["next_lr_old_schedule"] == pytest.approx(0.0, abs=1e-12)  # the old schedule had ended
    assert extension["next_lr_new_schedule"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 4 / 6)))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["epochs"] == 3
    assert "extended from 2 to 3 epochs at step 4" in (run_dir / "log.txt").read_text()
    # every pretraining writes its training curves at its end (issue 13); the tiny config: PNG alone
    assert (run_dir / "training_curves.png").read_bytes().startswith(b"\x89PNG")
    assert not (run_dir / "training_curves.svg").exists()  # runtime.vector_figures=false
    assert json.loads((run_dir / "metrics.json").read_text())["kind"] == "pretraining"


def test_fewer_epochs_or_other_changes_are_refused(
    finished: Path, make_tiny_pretrain_config: Callable[..., Config]
) -> None:
    with pytest.raises(ConfigError, match=r"optim\.epochs"):
        pretrain(make_tiny_pretrain_config(**{"optim.epochs": 1}), finished, resume=True)
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        pretrain(make_tiny_pretrain_config(**{"optim.epochs": 3, "optim.lr": 0.1}), finished, resume=True)


def test_the_cli_extends_with_set_and_refuses_other_keys(finished: Path, tmp_path: Path, cli) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    code, _, err = cli(["pretrain", "--resume", str(run_dir), "--set", "loss.lam=0.5"])
    assert code == 2
    assert "drop --set" in err
    code, _, err = cli(["pretrain", "--resume", str(run_dir), "--set", "optim.epochs=3", "--device", "cpu"])
    assert code == 0, err
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 3
