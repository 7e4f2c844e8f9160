"""Validation on the device (data.device_data: EvalClips, predict_clips) on the tiny phantom cohort, on
CPU: the val clips made once on the device are the val loader's clips, their predictions equal the loader
validation's bit for bit, a validation makes one host transfer whatever its number of batches, and a whole
device-data pretraining validates without the val loader and writes the same files as before."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from learner.config import Config
from learner.data.clip_store import ClipStore, EvalClips
from learner.layout import RunLayout
from learner.training import epoch as epoch_module
from learner.training import validation as validation_module
from learner.training.checkpoint import load_checkpoint, read_meta
from learner.training.distributed import DistInfo
from learner.training.epoch import Trainee, train_one_epoch
from learner.training.loaders import Loaders, Scans, build_loaders
from learner.training.plan import plan_pretraining
from learner.training.pretrain import build_model_and_objective, open_run, prepare_scans, pretrain
from learner.training.seeding import seed_everything
from learner.training.validation import predict_clips, predict_scores

pytestmark = pytest.mark.slow

BATCH = 4


@dataclass
class Parts:
    """A tiny pretraining's parts as :func:`pretrain` builds them, with the val clips on the "device"."""

    config: Config
    scans: Scans
    loaders: Loaders
    trainee: Trainee
    clips: EvalClips

    def loader_predictions(self) -> tuple[np.ndarray, np.ndarray]:
        trainee = self.trainee
        return predict_scores(trainee.model, self.loaders.val, trainee.standardiser, trainee.device, None)

    def device_predictions(self) -> tuple[np.ndarray, np.ndarray]:
        return predict_clips(self.trainee.model, self.clips, self.trainee.standardiser, None, BATCH)


@pytest.fixture
def make_parts(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, one_thread: None
) -> Callable[..., Parts]:
    def make(**overrides: Any) -> Parts:
        config = make_tiny_pretrain_config(
            **{"data.device_data": True, "optim.batch_size": BATCH, **overrides}
        )
        plan = plan_pretraining(config, tmp_path / f"run{len(list(tmp_path.iterdir()))}")
        seed_everything(config.seed, deterministic=True)
        info, cpu = DistInfo(), torch.device("cpu")
        scans = prepare_scans(plan, info, open_run(plan, info))
        loaders = build_loaders(config, scans, info, cpu)
        trainee = build_model_and_objective(config, scans.standardiser, cpu)
        store = ClipStore.from_cache(scans.val, scans.cache, device=cpu)
        clips = EvalClips.from_store(store, frames=config.data.frames, channels=config.data.channels)
        return Parts(config, scans, loaders, trainee, clips)

    return make


@pytest.mark.parametrize("channels", [1, 3])
def test_device_validation_predicts_exactly_what_the_loader_validation_predicts(
    make_parts: Callable[..., Parts], channels: int
) -> None:
    parts = make_parts(**{"data.channels": channels})
    val_scans = len(parts.scans.val)
    assert val_scans > 2 * BATCH  # several batches,
    assert val_scans % BATCH  # the last one short
    start = 0
    for clips, _, _ in parts.loaders.val:  # the same inputs: the loader's clips, batch by batch
        assert torch.equal(parts.clips.batch(start, start + len(clips)), clips)
        start += len(clips)
    assert start == len(parts.clips) == val_scans
    # trained a little first, so that BatchNorm's running statistics are not its initial ones
    train_one_epoch(parts.trainee, parts.loaders, 1, 0, lambda step: 1e-3, last_dir=Path("unused"))
    predicted, truth = parts.device_predictions()
    expected, expected_truth = parts.loader_predictions()
    assert predicted.dtype == truth.dtype == np.float64
    # identical inputs in identical batches through identical kernels: equal, not merely close
    torch.testing.assert_close(torch.from_numpy(predicted), torch.from_numpy(expected), rtol=0, atol=0)
    torch.testing.assert_close(torch.from_numpy(truth), torch.from_numpy(expected_truth), rtol=0, atol=0)
    assert len(set(predicted.tolist())) > 1  # the model tells the scans apart: a real comparison


def test_device_validation_makes_one_host_transfer_whatever_its_batches(
    make_parts: Callable[..., Parts],
    monkeypatch: pytest.MonkeyPatch,
    host_syncs_forbidden: Callable[[str], AbstractContextManager[None]],
) -> None:
    parts = make_parts()
    batches = math.ceil(len(parts.clips) / BATCH)
    assert batches >= 3
    expected = parts.device_predictions()
    transfers: list[torch.device] = []
    real_cpu, real_predicted = torch.Tensor.cpu, validation_module._predicted

    def counted_cpu(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        transfers.append(tensor.device)
        return real_cpu(tensor, *args, **kwargs)

    def predicted_without_syncs(*args: Any) -> torch.Tensor:
        with host_syncs_forbidden("a batch of the device validation"):
            return real_predicted(*args)

    with monkeypatch.context() as patched:
        patched.setattr(validation_module, "_predicted", predicted_without_syncs)
        patched.setattr(torch.Tensor, "cpu", counted_cpu)
        predicted, truth = parts.device_predictions()
    assert len(transfers) == 1  # at the end, not one per batch
    np.testing.assert_array_equal(predicted, expected[0])
    np.testing.assert_array_equal(truth, expected[1])


def test_a_device_data_run_validates_on_the_device_and_writes_what_a_loader_run_writes(
    make_tiny_pretrain_config: Callable[..., Config],
    make_parts: Callable[..., Parts],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_thread: None,
) -> None:
    loader_layout = RunLayout(pretrain(make_tiny_pretrain_config(), tmp_path / "loader").run_dir)

    def no_loader(*args: object, **kwargs: object) -> None:
        raise AssertionError("the device-data path validated through the val loader")

    with monkeypatch.context() as patched:
        patched.setattr(epoch_module, "predict_scores", no_loader)
        device_data = make_tiny_pretrain_config(**{"data.device_data": True})
        device_layout = RunLayout(pretrain(device_data, tmp_path / "device").run_dir)
    metrics = pd.read_csv(device_layout.epochs)
    assert list(metrics.columns) == list(pd.read_csv(loader_layout.epochs).columns)
    assert metrics["epoch"].tolist() == [1, 2]
    assert np.isfinite(metrics["val_mae"]).all()
    best = int(metrics["epoch"][metrics["val_mae"].idxmin()])  # the earliest epoch on ties
    assert read_meta(device_layout.checkpoint("best")).epoch == best  # still chosen every epoch

    written = pd.read_csv(device_layout.val_predictions)
    before = pd.read_csv(loader_layout.val_predictions)
    assert list(written.columns) == list(before.columns) == ["scan_id", "patient_id", "score", "predicted"]
    pd.testing.assert_frame_equal(written.drop(columns="predicted"), before.drop(columns="predicted"))
    # the best checkpoint, validated through the val loader, predicts what the device validation wrote
    parts = make_parts()
    load_checkpoint(device_layout.checkpoint("best"), parts.trainee.model)
    predicted, _ = parts.loader_predictions()
    np.testing.assert_array_equal(written["predicted"].to_numpy(), predicted)
    assert metrics.loc[metrics["epoch"] == best, "val_mae"].item() == pytest.approx(
        float(np.abs(predicted - written["score"].to_numpy()).mean()), rel=1e-12
    )
