"""Pretrainings side by side in one process (learner.training.side_by_side) on the tiny phantom cohort, on
one CPU thread: each run's metrics.csv, checkpoint weights and stored RNG states equal the same config
pretrained alone, bit for bit (the tiny config has dropout, which draws from the global RNG during
steps), and each run's log gets its own epoch lines; a resumed side-by-side extension equals a lone
resumed extension; runs that cannot go side by side are refused naming the key; runs with their step
graphed (a stand-in recorder) equal their eager runs alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from learner.config import Config, apply_overrides
from learner.errors import ConfigError
from learner.training import device_epoch
from learner.training import plan as plan_module
from learner.training.checkpoint import checkpoint_fingerprint, load_train_state
from learner.training.pretrain import pretrain
from learner.training.side_by_side import pretrain_side_by_side

pytestmark = pytest.mark.slow

RUNS: tuple[dict[str, Any], ...] = (
    {"seed": 0, "loss.name": "mse"},
    {"seed": 1, "loss.name": "mse+wcl", "loss.memory": 4},
    {"seed": 2, "loss.name": "mse+wcl", "runtime.checkpoint_every": 2},
)


def outputs(run_dir: Path) -> tuple[str, str, str, torch.Tensor]:
    """What must match: metrics.csv's text, both checkpoints' weight fingerprints, the stored torch RNG."""
    checkpoints = run_dir / "checkpoints"
    rng = load_train_state(checkpoints / "last")["rng"]["torch"]
    return (
        (run_dir / "metrics.csv").read_text(),
        checkpoint_fingerprint(checkpoints / "best"),
        checkpoint_fingerprint(checkpoints / "last"),
        rng,
    )


def assert_same(alone: Path, side: Path) -> None:
    *files, rng = outputs(alone)
    *side_files, side_rng = outputs(side)
    assert side_files == files, side
    assert torch.equal(side_rng, rng), side


def device_configs(make: Callable[..., Config], **overrides: Any) -> list[Config]:
    return [make(**{"data.device_data": True, **run, **overrides}) for run in RUNS]


@pytest.fixture
def configs(make_tiny_pretrain_config: Callable[..., Config]) -> list[Config]:
    return device_configs(make_tiny_pretrain_config)


def test_runs_side_by_side_equal_each_run_alone(
    configs: list[Config], tmp_path: Path, one_thread: None
) -> None:
    results = pretrain_side_by_side([(c, tmp_path / f"side{i}") for i, c in enumerate(configs)])
    for index, config in enumerate(configs):
        alone = pretrain(config, tmp_path / f"alone{index}")
        assert results[index].history == alone.history
        assert results[index].best == alone.best
        assert_same(tmp_path / f"alone{index}", tmp_path / f"side{index}")
        log = (tmp_path / f"side{index}" / "log.txt").read_text()
        assert [log.count(f"epoch {e}/2: loss") for e in (1, 2)] == [1, 1]  # its own epochs, once each


def test_a_resumed_side_by_side_extension_equals_a_lone_one(
    configs: list[Config],
    make_tiny_pretrain_config: Callable[..., Config],
    tmp_path: Path,
    one_thread: None,
) -> None:
    pair = configs[1:]
    pretrain_side_by_side([(c, tmp_path / f"side{i}") for i, c in enumerate(pair)])
    longer = device_configs(make_tiny_pretrain_config, **{"optim.epochs": 3})[1:]
    pretrain_side_by_side([(c, tmp_path / f"side{i}") for i, c in enumerate(longer)], resume=True)
    for index, (config, extended) in enumerate(zip(pair, longer, strict=True)):
        pretrain(config, tmp_path / f"alone{index}")
        pretrain(extended, tmp_path / f"alone{index}", resume=True)
        assert_same(tmp_path / f"alone{index}", tmp_path / f"side{index}")


def test_runs_that_cannot_go_side_by_side_are_refused(
    configs: list[Config], make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    loader_path = make_tiny_pretrain_config()
    with pytest.raises(ConfigError, match=r"data\.device_data=true"):
        pretrain_side_by_side([(configs[0], tmp_path / "a"), (loader_path, tmp_path / "b")])
    with pytest.raises(ConfigError, match="one run folder each"):
        pretrain_side_by_side([(configs[0], tmp_path / "a"), (configs[1], tmp_path / "a")])
    assert not (tmp_path / "a").exists()


def test_graphed_runs_side_by_side_equal_eager_runs_alone(
    make_tiny_pretrain_config: Callable[..., Config],
    tmp_path: Path,
    one_thread: None,
    monkeypatch: pytest.MonkeyPatch,
    replaying_recorders: Callable[[ModuleType], list[Any]],
) -> None:
    """``runtime.cuda_graph`` wired through the plan, ``start_device_run`` and the lanes: each run records
    its step once and writes what its eager run alone writes (the recorder stood in for). 2 epochs × 4
    steps: each epoch's first step measures the gradient share eagerly, then 3 warm-up steps, a recording
    and 2 replays."""
    configs = device_configs(make_tiny_pretrain_config, **{"optim.max_steps_per_epoch": 4})
    monkeypatch.setattr(plan_module, "runs_on_cuda", lambda requested: True)
    recorders = replaying_recorders(device_epoch)
    eager = [config for config in configs if config.loss.memory == 0]  # a memory is refused with graphs
    graphed = [apply_overrides(config, {"runtime.cuda_graph": True}) for config in eager]
    pretrain_side_by_side([(c, tmp_path / f"graphed{i}") for i, c in enumerate(graphed)])
    assert [len(recorder.recorded) for recorder in recorders] == [1] * len(eager) == [1, 1]
    for index, config in enumerate(eager):
        pretrain(config, tmp_path / f"eager{index}")
        assert_same(tmp_path / f"eager{index}", tmp_path / f"graphed{index}")
