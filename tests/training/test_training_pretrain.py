"""Algorithm 1 end to end on the tiny phantom cohort: outputs, determinism, resume, non-finite losses."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import mean_absolute_error, mean_squared_error

from learner.config import Config
from learner.data.cache import ScanCache, default_cache_root
from learner.data.datasets import ScanDataset
from learner.data.manifest import load_manifest
from learner.data.preprocess import Preprocessor
from learner.data.scales import get_scale
from learner.errors import CheckpointError, ConfigError, NonFiniteLossError, ScanReadError
from learner.losses.registry import LossOutput, Objective
from learner.losses.regression import ScoreStandardiser
from learner.training import pretrain as pretrain_module
from learner.training.checkpoint import checkpoint_fingerprint, load_checkpoint, load_regressor
from learner.training.pretrain import cosine_lr, pretrain, scheduled_lr
from learner.training.validation import regression_metrics

pytestmark = pytest.mark.slow

COLUMNS = [
    "epoch", "step", "lr", "train_loss", "train_mse", "train_wcl", "grad_share_contrastive",
    "val_mae", "val_rmse", "val_r", "baseline_mae", "baseline_rmse",
]  # fmt: skip


class _Sabotaged:
    """Wraps the real objective; at call ``at`` (1-based) raises KeyboardInterrupt or returns a NaN total."""

    def __init__(self, objective: Objective, at: int, action: str) -> None:
        self.objective, self.at, self.action, self.calls = objective, at, action, 0
        self.names = objective.names

    def __call__(self, *args: torch.Tensor) -> LossOutput:
        self.calls += 1
        out = self.objective(*args)
        if self.calls == self.at and self.action == "interrupt":
            raise KeyboardInterrupt
        if self.calls == self.at:
            return LossOutput(total=out.total * math.nan, terms=out.terms)
        return out


def _sabotage(monkeypatch: pytest.MonkeyPatch, at: int, action: str) -> None:
    real = pretrain_module.build_objective
    monkeypatch.setattr(pretrain_module, "build_objective", lambda *args: _Sabotaged(real(*args), at, action))


@pytest.fixture(scope="module")
def reference(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One uninterrupted 2-epoch run (2 steps per epoch) that the other tests compare against."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    pretrain(make_tiny_pretrain_config(), run_dir)
    return run_dir


def _weights(run_dir: Path, which: str = "last") -> dict[str, torch.Tensor]:
    state, _ = load_checkpoint(run_dir / "checkpoints" / which)
    return state


def test_same_seed_on_cpu_gives_identical_metrics_and_weights(
    reference: Path, make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    pretrain(make_tiny_pretrain_config(), tmp_path / "again")
    first, second = pd.read_csv(reference / "metrics.csv"), pd.read_csv(tmp_path / "again" / "metrics.csv")
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    assert checkpoint_fingerprint(reference / "checkpoints" / "last") == checkpoint_fingerprint(
        tmp_path / "again" / "checkpoints" / "last"
    )


@pytest.mark.parametrize(
    ("backbone", "weight"), [("tsm_resnet18", "conv1.weight"), ("resnet18_3d", "resnet.conv1.weight")]
)
def test_channels_last_converts_a_frame_and_a_volume_encoder(
    make_tiny_pretrain_config: Callable[..., Config], backbone: str, weight: str
) -> None:
    """runtime.channels_last is on by default on a GPU: a 3-D encoder's Conv3d weights take NDHWC, which
    its kernels accept, where NHWC raised 'required rank 4 tensor to use channels_last format'."""
    config = make_tiny_pretrain_config(**{"runtime.cpu_channels_last": True, "model.backbone": backbone})
    trainee = pretrain_module.build_model_and_objective(
        config, ScoreStandardiser(0.0, 1.0), torch.device("cpu")
    )
    encoder = trainee.model.encoder
    kernel = dict(encoder.named_parameters())[weight]
    assert kernel.is_contiguous(memory_format=encoder.channels_last)


def test_cpu_channels_last_matches_the_default_layout_within_float_tolerance(
    reference: Path, make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    pretrain(make_tiny_pretrain_config(**{"runtime.cpu_channels_last": True}), tmp_path / "nhwc")
    first, second = pd.read_csv(reference / "metrics.csv"), pd.read_csv(tmp_path / "nhwc" / "metrics.csv")
    pd.testing.assert_frame_equal(first, second, check_exact=False, rtol=1e-4, atol=1e-5)
    nhwc, nchw = _weights(tmp_path / "nhwc"), _weights(reference)
    # Adam moves a weight by about lr per step whatever its gradient's size, so a near-zero gradient
    # that rounds differently in the other layout may move a few weights by up to lr (1e-3) each step;
    # the weights as a whole stay equal to float precision.
    difference = torch.cat([(nhwc[name] - value).abs().flatten() for name, value in nchw.items()])
    assert difference.max() < 4 * 1e-3  # 4 steps of lr
    assert difference.mean() < 1e-6


def test_resume_after_an_interruption_ends_with_the_same_weights(
    reference: Path,
    make_tiny_pretrain_config: Callable[..., Config],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_dir = tmp_path / "run"
    _sabotage(monkeypatch, at=4, action="interrupt")  # epoch 2, its second step: mid-epoch
    with pytest.raises(KeyboardInterrupt):
        pretrain(make_tiny_pretrain_config(), run_dir)
    assert json.loads((run_dir / "checkpoints" / "last" / "meta.json").read_text())["epoch"] == 1
    monkeypatch.undo()

    result = pretrain(make_tiny_pretrain_config(), run_dir, resume=True)
    assert result.last["epoch"] == 2
    expected, resumed = _weights(reference), _weights(run_dir)
    assert expected.keys() == resumed.keys()
    for key, value in expected.items():
        assert torch.equal(value, resumed[key]), key
    pd.testing.assert_frame_equal(
        pd.read_csv(reference / "metrics.csv"), pd.read_csv(run_dir / "metrics.csv"), check_exact=True
    )


def test_non_finite_loss_names_epoch_and_step_and_keeps_the_last_checkpoint(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sabotage(monkeypatch, at=3, action="nan")
    with pytest.raises(NonFiniteLossError, match=r"at epoch 2, step 3;.*checkpoints/last is kept"):
        pretrain(make_tiny_pretrain_config(), tmp_path / "run")
    model_state, meta = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert (meta.epoch, meta.step) == (1, 2)
    assert all(torch.isfinite(value).all() for value in model_state.values())
    assert len(pd.read_csv(tmp_path / "run" / "metrics.csv")) == 1


def test_metrics_checkpoints_and_splits_agree_with_an_independent_recomputation(
    reference: Path, tiny_lus_manifest: Path, make_tiny_pretrain_config: Callable[..., Config]
) -> None:
    metrics = pd.read_csv(reference / "metrics.csv")
    assert list(metrics.columns) == COLUMNS
    assert metrics["step"].tolist() == [2, 4]
    assert metrics["lr"].tolist() == pytest.approx([cosine_lr(1, 4, 1e-3), cosine_lr(3, 4, 1e-3)], abs=0)

    table = pd.read_csv(tiny_lus_manifest)
    train_mean = table.loc[table["split"] == "train", "score"].mean()
    val_scores = table.loc[table["split"] == "val", "score"].to_numpy()
    assert metrics["baseline_mae"].tolist() == pytest.approx([np.abs(val_scores - train_mean).mean()] * 2)
    splits = pd.read_csv(reference / "splits.csv", dtype=str)
    assert dict(zip(splits["patient_id"], splits["split"], strict=True)) == dict(
        zip(table["patient_id"].astype(str), table["split"], strict=True)
    )

    best_epoch = int(metrics.loc[metrics["val_mae"].idxmin(), "epoch"])
    model, meta = load_regressor(reference, "best")
    assert meta.epoch == best_epoch
    assert asdict(meta.encoder) == {
        "name": "tsm_resnet18",
        "embed_dim": 128,
        "in_channels": 1,
        "img_size": 32,
    }
    assert meta.score_standardisation.mean == pytest.approx(train_mean)
    standardiser = meta.score_standardisation
    config = make_tiny_pretrain_config()
    manifest = load_manifest(tiny_lus_manifest, get_scale("sf"))
    cache = ScanCache(
        default_cache_root(manifest, config.runtime.cache_dir), Preprocessor.from_config(config.data)
    )
    val_set = ScanDataset(manifest.by_split("val"), cache, frames=2, channels=1, train=False, augment=None)
    with torch.no_grad():
        clips = torch.stack([val_set[i][0] for i in range(len(val_set))])  # (N, T, C, H, W)
        predicted = standardiser.destandardise(model(clips)[1].double()).numpy()
    row = metrics.loc[metrics["epoch"] == best_epoch].iloc[0]
    assert row["val_mae"] == pytest.approx(mean_absolute_error(val_scores, predicted), rel=1e-5)
    assert row["val_rmse"] == pytest.approx(math.sqrt(mean_squared_error(val_scores, predicted)), rel=1e-5)
    assert row["val_r"] == pytest.approx(pearsonr(val_scores, predicted).statistic, rel=1e-4)

    final = json.loads((reference / "metrics.json").read_text())
    assert final["best"]["epoch"] == best_epoch
    assert final["last"]["val_mae"] == pytest.approx(metrics["val_mae"].iloc[-1])
    assert final["scans"] == {
        "train": int((table["split"] == "train").sum()),
        "val": len(val_scores),
        "skipped": 0,
    }
    state = torch.load(reference / "checkpoints" / "last" / "train_state.pt", weights_only=True)
    assert state["step"] == 4
    assert "train_state.pt" not in {p.name for p in (reference / "checkpoints" / "best").iterdir()}


def test_resume_refuses_a_changed_config_and_accepts_a_new_runtime(
    reference: Path, make_tiny_pretrain_config: Callable[..., Config]
) -> None:
    with pytest.raises(ConfigError, match=r"differs from .*config\.yaml in loss\.lam, optim\.lr"):
        pretrain(make_tiny_pretrain_config(**{"loss.lam": 0.5, "optim.lr": 0.1}), reference, resume=True)
    before = checkpoint_fingerprint(reference / "checkpoints" / "last")
    runtime = {"runtime.device": "auto", "runtime.amp": False, "runtime.channels_last": False}
    result = pretrain(make_tiny_pretrain_config(**runtime), reference, resume=True)  # already complete
    assert result.last["epoch"] == 2
    assert checkpoint_fingerprint(reference / "checkpoints" / "last") == before


def test_load_regressor_refuses_metadata_that_disagrees_with_the_weights(
    reference: Path, tmp_path: Path
) -> None:
    shutil.copytree(reference / "checkpoints" / "best", tmp_path / "checkpoints" / "best")
    meta_path = tmp_path / "checkpoints" / "best" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "encoder": {**meta["encoder"], "embed_dim": 64}}))
    with pytest.raises(CheckpointError, match="embed_dim 64 but tsm_resnet18 builds 128"):
        load_regressor(tmp_path)
    meta["config"]["model"]["head_hidden"] = 8  # the head the config describes no longer fits the weights
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"shape mismatches \(head\.mlp\.0\.bias \(16,\) vs \(8,\)"):
        load_regressor(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_regressor(tmp_path, which="last")


def test_bad_inputs_are_one_line_config_errors(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"data\.manifest is not set"):
        pretrain(make_tiny_pretrain_config(**{"data.manifest": None}), tmp_path / "a")
    with pytest.raises(ConfigError) as raised:  # what to do, with the number the split allows
        pretrain(make_tiny_pretrain_config(**{"optim.batch_size": 64}), tmp_path / "b")
    scans = re.fullmatch(r"optim\.batch_size=64 exceeds the (\d+) train scans; (.*)", str(raised.value))
    assert scans is not None
    assert scans[2] == f"set --set optim.batch_size=N with N ≤ {scans[1]} (or more train patients)"


def test_a_bad_scan_that_stops_pretraining_says_how_to_skip_it(
    make_tiny_pretrain_config: Callable[..., Config],
    tiny_lus_with_a_bad_scan: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """pretrain has no --skip-bad flag: the one line names the file and the --set that skips it."""
    path, broken = tiny_lus_with_a_bad_scan
    with pytest.raises(ScanReadError) as raised:
        pretrain(make_tiny_pretrain_config(**{"data.manifest": str(path)}), tmp_path / "run")
    assert str(raised.value).startswith(f"{broken}: ")
    assert str(raised.value).endswith(
        "; fix or drop that manifest row, or skip bad scans with --set data.skip_bad_scans=true"
    )


def test_regression_metrics_match_scikit_learn_and_scipy() -> None:
    rng = np.random.default_rng(0)
    target, pred = rng.normal(300, 80, 50), rng.normal(300, 60, 50)
    metrics = regression_metrics(pred, target, train_mean=280.0)
    assert metrics["val_mae"] == pytest.approx(mean_absolute_error(target, pred))
    assert metrics["val_rmse"] == pytest.approx(math.sqrt(mean_squared_error(target, pred)))
    assert metrics["val_r"] == pytest.approx(pearsonr(pred, target).statistic)
    assert metrics["baseline_mae"] == pytest.approx(mean_absolute_error(target, np.full(50, 280.0)))
    assert metrics["baseline_rmse"] == pytest.approx(
        math.sqrt(mean_squared_error(target, np.full(50, 280.0)))
    )
    assert math.isnan(regression_metrics(np.full(50, 3.0), target, 0.0)["val_r"])  # constant predictions


def test_cosine_lr_matches_torch_cosine_annealing() -> None:
    total, base = 7, 1e-3
    optimiser = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=total, eta_min=0.0)
    for step in range(total + 1):
        assert cosine_lr(step, total, base) == pytest.approx(scheduler.get_last_lr()[0], abs=1e-15)
        optimiser.step()
        scheduler.step()
    assert cosine_lr(0, total, base) == base
    assert cosine_lr(total, total, base) == pytest.approx(0.0, abs=1e-18)


def test_warmup_rises_linearly_then_runs_the_schedule_over_the_remaining_steps() -> None:
    base = 1e-3  # 6 steps, 2 of warm-up: 1e-3·1/2, 1e-3·2/2, then cosine over 4 steps, ½(1 + cos(πk/4))
    hand = [0.5e-3, 1e-3, 1e-3, 0.5e-3 * (1 + math.sqrt(0.5)), 0.5e-3, 0.5e-3 * (1 - math.sqrt(0.5))]
    assert [scheduled_lr("cosine", s, 6, base, warmup=2) for s in range(6)] == pytest.approx(hand, abs=1e-18)
    assert [scheduled_lr("constant", s, 6, base, warmup=4) for s in range(6)] == pytest.approx(
        [0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3], abs=1e-18
    )
    assert [scheduled_lr("cosine", s, 6, base) for s in range(6)] == [cosine_lr(s, 6, base) for s in range(6)]


def test_pretraining_uses_the_warmup_lr(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    used: list[float] = []
    step = torch.optim.Adam.step

    def record(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    pretrain(make_tiny_pretrain_config(**{"optim.warmup_epochs": 1}), tmp_path / "run")
    # 2 epochs of 2 steps (the tiny config), 1 epoch of warm-up: 1e-3·1/2, 1e-3, then cosine over 2 steps
    assert used == pytest.approx([0.5e-3, 1e-3, 1e-3, 0.5e-3], abs=1e-18)
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["lr"].tolist() == pytest.approx(
        [1e-3, 0.5e-3], abs=1e-18
    )
