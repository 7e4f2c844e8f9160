"""Non-finite gradients are caught at the step they appear; adversarial batches (all-equal scores, one clip
duplicated, batch size 2) train for 200 steps with finite losses and weights."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from learner.config import Config
from learner.errors import NonFiniteLossError
from learner.training import pretrain as pretrain_module
from learner.training.checkpoint import load_checkpoint
from learner.training.pretrain import pretrain

pytestmark = pytest.mark.slow


def _nan_gradient_at(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """The regressor's first parameter gets a NaN gradient in backward pass ``at`` (1-based), counted where
    a gradient is accumulated into ``.grad`` (an update's backward; measuring passes such as the gradient
    share's ``autograd.grad`` accumulate nothing)."""
    real = pretrain_module.build_regressor
    calls = [0]

    def poison(param: torch.Tensor) -> None:
        calls[0] += 1
        if calls[0] == at and param.grad is not None:
            param.grad.mul_(math.nan)

    def build(*args: object, **kwargs: object) -> nn.Module:
        model = real(*args, **kwargs)  # type: ignore[arg-type]
        next(model.parameters()).register_post_accumulate_grad_hook(poison)
        return model

    monkeypatch.setattr(pretrain_module, "build_regressor", build)


def test_a_non_finite_gradient_names_epoch_and_step_and_keeps_the_last_checkpoint(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_gradient_at(monkeypatch, at=3)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"^non-finite gradient at epoch 2, step 3; .*last is kept$"):
        pretrain(make_tiny_pretrain_config(), run)
    state, meta = load_checkpoint(run / "checkpoints" / "last")
    assert (meta.epoch, meta.step) == (1, 2)
    assert all(torch.isfinite(value).all() for value in state.values())


def test_a_non_finite_gradient_before_any_checkpoint_leaves_no_run_directory(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _nan_gradient_at(monkeypatch, at=1)
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, step 1; no checkpoint was saved yet"):
        pretrain(make_tiny_pretrain_config(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def constant_manifest(tiny_lus_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """404 train rows that are all one clip (a hard link per scan: one file may not serve two patients)
    with one score but for a single scan (all-equal train scores are refused), 4 val, 4 test: almost every
    batch of two has equal scores."""
    clip = sorted((tiny_lus_manifest.parent / "clips").glob("*.mp4"))[0].resolve()
    folder = tmp_path_factory.mktemp("constant")
    rows = []
    for split, patients in (("train", 101), ("val", 1), ("test", 1)):
        for p in range(patients):
            for s in range(1, 5):
                scan = f"{split}{p:03d}_L{s}"
                os.link(clip, folder / f"{scan}.mp4")
                rows.append(
                    {"patient_id": f"{split}{p:03d}", "scan_id": scan, "path": f"{scan}.mp4",
                     "visit": "2021-01-01", "score": 301.0 if scan == "train000_L1" else 300.0,
                     "split": split, "site": f"L{s}", "modality": "video"}
                )  # fmt: skip
    target = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(target, index=False)
    return target


@pytest.mark.parametrize("loss", ["mse+cl", "mse+wcl_scaled"])
def test_two_hundred_adversarial_steps_stay_finite(
    loss: str,
    constant_manifest: Path,
    make_tiny_pretrain_config: Callable[..., Config],
    tmp_path: Path,
    one_thread: None,
) -> None:
    config = make_tiny_pretrain_config(**{
        "data.manifest": str(constant_manifest), "data.size": 16, "loss.name": loss,
        "optim.batch_size": 2, "optim.epochs": 1, "optim.max_steps_per_epoch": 200,
    })  # fmt: skip
    result = pretrain(config, tmp_path / "run")  # every step's loss and gradients are checked in the loop
    assert result.last["step"] == 200
    assert math.isfinite(result.last["train_loss"])
    state, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert all(torch.isfinite(value).all() for value in state.values())
