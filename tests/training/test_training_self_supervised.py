"""The self-supervised stage (loss.name=vicreg) and --init RUN_DIR chaining, end to end on the tiny cohort."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from learner.config import Config, ModelConfig
from learner.data.datasets import TwoViews
from learner.data.manifest import load_manifest
from learner.data.scales import get_scale
from learner.errors import CheckpointError
from learner.models.registry import build_encoder, build_regressor
from learner.training import loaders as loaders_module
from learner.training.checkpoint import checkpoint_fingerprint, load_checkpoint, load_train_state
from learner.training.pretrain import pretrain

pytestmark = pytest.mark.slow

SSL = {"loss.name": "vicreg"}


@pytest.fixture(scope="module")
def ssl_run(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[list[str]]]:
    """A 2-epoch VICReg run, and the scan ids of every TwoViews dataset it built (train first, then val)."""
    seen: list[list[str]] = []

    class Recording(TwoViews):
        def __init__(self, dataset: loaders_module.ScanDataset) -> None:
            seen.append([record.scan_id for record in dataset.records])
            super().__init__(dataset)

    run_dir = tmp_path_factory.mktemp("ssl") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loaders_module, "TwoViews", Recording)
        pretrain(make_tiny_pretrain_config(**SSL), run_dir)
    return run_dir, seen


def test_the_ssl_stage_sees_train_and_val_scans_and_never_a_test_scan(
    ssl_run: tuple[Path, list[list[str]]], make_tiny_pretrain_config: Callable[..., Config]
) -> None:
    run_dir, (train_ids, val_ids) = ssl_run
    manifest = load_manifest(make_tiny_pretrain_config().data.manifest, get_scale("sf"))
    by_split = {split: {r.scan_id for r in manifest.by_split(split)} for split in ("train", "val", "test")}
    assert by_split["test"]  # the cohort has test scans, and none of them reaches the stage
    assert set(train_ids) == by_split["train"] | by_split["val"]
    assert set(val_ids) == by_split["val"]
    assert not (set(train_ids) | set(val_ids)) & by_split["test"]
    scans = json.loads((run_dir / "metrics.json").read_text())["scans"]
    assert scans["train"] == len(by_split["train"]) + len(by_split["val"])


def test_ssl_metrics_and_an_untouched_head(ssl_run: tuple[Path, list[list[str]]]) -> None:
    run_dir, _ = ssl_run
    metrics = pd.read_csv(run_dir / "metrics.csv")
    terms = ["invariance", "variance", "covariance"]
    expected = ["epoch", "step", "lr", "train_loss", *(f"train_{t}" for t in terms), "val_loss"]
    diagnostics = ["val_embedding_std", "val_effective_rank"]  # collapse, per epoch (issue 23 point 9)
    assert list(metrics.columns) == [*expected, *(f"val_{t}" for t in terms), *diagnostics]
    assert (metrics["val_embedding_std"] > 0).all()
    assert (metrics["val_effective_rank"] >= 1).all()
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["best"]["val_loss"] == metrics["val_loss"].min()
    assert "val_mae" not in final["best"]
    # The head never gets a gradient, so Adam keeps no state for it: its weights are those it was built with.
    state, _ = load_checkpoint(run_dir / "checkpoints" / "last")
    model = build_regressor(ModelConfig(size="tiny", head_hidden=16, dropout=0.2), 1, 32)
    names = [name for name, _ in model.named_parameters()]
    with_state = {names[i] for i in load_train_state(run_dir / "checkpoints" / "last")["optimizer"]["state"]}
    assert with_state == {name for name in names if name.startswith("encoder.")}
    assert set(state) == set(model.state_dict())


def test_the_ssl_stage_fits_the_score_standardisation_on_the_train_split_only(
    ssl_run: tuple[Path, list[list[str]]], make_tiny_pretrain_config: Callable[..., Config]
) -> None:
    run_dir, _ = ssl_run
    manifest = load_manifest(make_tiny_pretrain_config().data.manifest, get_scale("sf"))
    train = np.array([r.score for r in manifest.by_split("train")])
    with_val = np.concatenate([train, [r.score for r in manifest.by_split("val")]])
    assert with_val.mean() != pytest.approx(train.mean())  # the cohort tells the two fits apart
    for which in ("best", "last"):
        _, meta = load_checkpoint(run_dir / "checkpoints" / which)
        stored = meta.score_standardisation
        assert (stored.mean, stored.std) == pytest.approx((train.mean(), train.std()))
    assert json.loads((run_dir / "metrics.json").read_text())["train_mean"] == pytest.approx(train.mean())


def test_init_from_the_ssl_run_starts_from_its_best_encoder_and_is_recorded(
    ssl_run: tuple[Path, list[list[str]]], make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    ssl_dir, _ = ssl_run
    config = make_tiny_pretrain_config(
        **{"model.init": str(ssl_dir), "optim.epochs": 1, "loss.name": "mse+wcl"}
    )
    pretrain(config, tmp_path / "fine")
    record = json.loads((tmp_path / "fine" / "run.json").read_text())["init"]
    assert record["path"] == str(ssl_dir.resolve())
    assert record["fingerprint"] == checkpoint_fingerprint(ssl_dir / "checkpoints" / "best")
    encoder = build_encoder(config.model, 1, img_size=32)
    best, _ = load_checkpoint(ssl_dir / "checkpoints" / "best")
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, best[f"encoder.{key}"], rtol=0, atol=0)


def test_init_from_a_run_of_another_backbone_names_the_run(ssl_run: tuple[Path, list[list[str]]]) -> None:
    ssl_dir, _ = ssl_run
    with pytest.raises(CheckpointError, match="its encoder is 'tsm_resnet18', not 'vit'") as caught:
        build_encoder(ModelConfig(backbone="vit", size="tiny", init=ssl_dir), 1, img_size=32)
    assert str(ssl_dir / "checkpoints" / "best") in str(caught.value)


def test_pretrain_command_runs_the_ssl_stage_and_chains_it(
    make_tiny_pretrain_config: Callable[..., Config],
    tmp_path: Path,
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(make_tiny_pretrain_config(**{"optim.epochs": 1}).to_yaml())
    base = ["pretrain", "--config", str(config_file), "--device", "cpu"]
    code, out, _ = cli([*base, "--loss", "vicreg", "--out", str(tmp_path / "ssl")])
    assert code == 0
    printed = out.strip().splitlines()[-1]
    assert printed.startswith("best val loss ")
    assert printed.endswith(f"chain with --init {tmp_path / 'ssl'}")
    argv = [*base, "--loss", "mse", "--init", str(tmp_path / "ssl"), "--out", str(tmp_path / "fine")]
    assert cli(argv)[0] == 0
    assert "init" in json.loads((tmp_path / "fine" / "run.json").read_text())


def test_collapse_diagnostics_by_hand() -> None:
    from learner.training.validation import collapse_diagnostics

    spread = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # two equal directions
    found = collapse_diagnostics(spread)
    assert found["val_effective_rank"] == pytest.approx(2.0)
    assert found["val_embedding_std"] == pytest.approx(float(np.sqrt(2 / 3)))  # each dim: values ±1, 0, 0
    line = torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])  # collapsed onto one line
    assert collapse_diagnostics(line)["val_effective_rank"] == pytest.approx(1.0)


def test_the_ssl_report_says_whether_it_collapsed_and_levelled_off(
    ssl_run: tuple[Path, list[list[str]]],
) -> None:
    from learner.report.pretraining import self_supervised_reading

    run_dir, _ = ssl_run
    history = pd.read_csv(run_dir / "metrics.csv").to_dict("records")
    best = json.loads((run_dir / "metrics.json").read_text())["best"]
    text = self_supervised_reading(best, history)
    assert f"effective rank {history[-1]['val_effective_rank']:.1f}" in text
    falling = [dict(row, epoch=i + 1, val_loss=10.0 - i) for i, row in enumerate(history * 2)]  # falling fast
    assert "still falling" in self_supervised_reading(best, falling)
    flat = [dict(row, val_loss=1.0) for row in falling]
    assert "levelled off" in self_supervised_reading(best, flat)
    drifting = [dict(row, val_embedding_std=1.0 / row["epoch"]) for row in flat]
    assert "towards collapse" in self_supervised_reading(best, drifting)
