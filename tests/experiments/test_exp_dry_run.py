"""`--dry-run` (issue 13): the plan of pretrain, classify and the experiment grids, computed from the config
and the manifest alone; nothing is created."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from learner.config import DatasetSpec, apply_overrides, load_config
from learner.data.cache import build_cache
from learner.data.manifest import load_manifest
from learner.data.scales import CLASS_NAMES, get_scale
from learner.experiments.dry_run import (
    COMMAND_START_SECONDS,
    PRETRAIN_START_SECONDS,
    DataPlan,
    StepCost,
    measure_cost,
    pretrain_seconds,
)
from learner.experiments.results import ExperimentResult

TINY = [
    "--set",
    "data.size=32",
    "--set",
    "data.frames=2",
    "--set",
    "optim.epochs=3",
    "--set",
    "model.size=paper",
]


def test_pretrain_dry_run_counts_scans_pairs_and_estimates_time(
    cli, tiny_lus: DatasetSpec, tmp_path: Path
) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"  # an empty cache: every scan is still to decode
    dry_run = ["pretrain", "--manifest", str(tiny_lus.manifest), "--out", str(out), "--dry-run", *TINY]
    code, text, err = cli([*dry_run, "--set", f"runtime.cache_dir={cache}"])
    assert code == 0, err
    assert not out.exists()
    manifest = load_manifest(tiny_lus.manifest, get_scale("sf"))
    scans = {s: len(manifest.by_split(s)) for s in ("train", "val", "test")}
    assert f"scans train {scans['train']} (" in text
    assert f"val {scans['val']} (" in text
    assert "  # " not in text  # the plain resolved YAML
    assert "epochs: 3" in text
    # the estimate is the measured step scaled to the run: the cell's pretraining, the start, the decoding
    cell = re.search(r"pretrain ≈ (\d+) s", text)
    total = re.search(r"Time estimate .*: ≈ (\d+) s", text)
    assert cell is not None
    assert total is not None
    decoding = re.search(rf"decoding the {len(manifest.records)} scans not in the cache ≈ (\d+) s", text)
    assert decoding is not None  # measured on one of them: a few ms to a second per scan
    decode = int(decoding.group(1))
    assert abs(int(total.group(1)) - (int(cell.group(1)) + COMMAND_START_SECONDS + decode)) <= 2
    assert re.search(r"Measured: tsm_resnet18 \(paper\), batch 16 of 2 × 32² px clips on \d+ thread", text)
    assert "a training step" in text
    assert f"decoding the {len(manifest.records)} scans not in the cache" in text
    assert "nothing was created" in text
    # once the cache holds every scan, the estimate has no decoding left in it (issue 23 point 8)
    config = load_config(None, [f"runtime.cache_dir={cache}", "data.size=32", "data.frames=2"])
    build_cache(manifest, config.data, workers=0, cache_dir=cache)
    code, text, err = cli([*dry_run, "--set", f"runtime.cache_dir={cache}"])
    assert "decoding the 0 scans not in the cache" in text
    cached = re.search(r"Time estimate .*: ≈ (\d+) s", text)
    assert cached is not None
    assert abs(int(cached.group(1)) - (int(total.group(1)) - decode)) <= 2  # a second measurement


def test_the_estimate_scales_the_measured_step_to_the_run() -> None:
    """Hand-computed from a given measurement: start, then per epoch ⌊train / batch⌋ steps, the first step's
    extra (two-term objectives only), every val clip and the checkpoints; a self-supervised stage trains on
    train + val scans, two views each."""
    cost = StepCost("x", train_step=0.5, first_step_extra=0.2, eval_clip=0.01, checkpoint=0.3, build=1.0,
                    threads=1, threads_from="test", device="cpu")  # fmt: skip
    data = DataPlan("d", "o", {"train": 40, "val": 10, "test": 5}, {}, {})
    config = load_config(None, ["optim.epochs=3", "optim.batch_size=16", "loss.name=mse+wcl"])
    epoch = 2 * 0.5 + 0.2 + 10 * 0.01 + 0.3  # ⌊40 / 16⌋ = 2 steps
    assert pretrain_seconds(config, data, cost) == pytest.approx(PRETRAIN_START_SECONDS + 1.0 + 3 * epoch)
    vicreg = load_config(None, ["optim.epochs=3", "optim.batch_size=16", "loss.name=vicreg"])
    epoch = 3 * 0.5 + 2 * 10 * 0.01 + 0.3  # ⌊(40 + 10) / 16⌋ = 3 steps, two views of each val scan
    assert pretrain_seconds(vicreg, data, cost) == pytest.approx(PRETRAIN_START_SECONDS + 1.0 + 3 * epoch)
    capped = load_config(None, ["optim.epochs=1", "optim.max_steps_per_epoch=1", "loss.name=mse"])
    assert pretrain_seconds(capped, data, cost) == pytest.approx(PRETRAIN_START_SECONDS + 1.0 + 0.5 + 0.4)


def test_the_measurement_runs_the_configs_own_model_on_its_threads(one_thread: None) -> None:
    """A real measurement at tiny settings: positive step times, the thread count the command would use,
    the caller's thread count and RNG untouched, and one measurement per model and batch shape."""
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    config = load_config(
        None, ["model.size=tiny", "data.size=16", "data.frames=2", "optim.batch_size=4", "runtime.threads=2"]
    )
    cost = measure_cost(config)
    assert (cost.threads, cost.threads_from) == (2, "runtime.threads")
    assert min(cost.train_step, cost.eval_clip, cost.checkpoint) > 0
    assert torch.get_num_threads() == 1
    assert torch.rand(1) == expected  # the caller's RNG stream is where it was
    again = apply_overrides(config, {"loss.name": "mse+cl", "model.init": "elsewhere.safetensors"})
    assert measure_cost(again) is cost  # same model, batch and objective shape: measured once


def test_classify_dry_run_shows_the_pairs_the_classifier_would_get(
    cli, tiny_table3: ExperimentResult, tmp_path: Path
) -> None:
    encoder = tiny_table3.out_dir / "LUS" / "mse" / "seed-0" / "encoder"
    code, text, err = cli(["classify", str(encoder), "--out", str(tmp_path / "c"), "--dry-run"])
    assert code == 0, err
    assert not (tmp_path / "c").exists()
    stored = json.loads((encoder.parent / "classifier" / "metrics.json").read_text())["pair_counts"]
    for split, counts in stored.items():
        kind = "intra-patient" if split == "test" else "inter-patient"
        listed = ", ".join(f"{name} {counts[name]}" for name in CLASS_NAMES)
        assert f"{split} {kind} pairs: {listed} ({sum(counts.values())})" in text
    assert "split: the encoder run's splits.csv" in text


@pytest.mark.parametrize(
    ("kind", "extra", "cells", "pretrainings"),
    [
        ("table3", [], 4, 4),  # 2 datasets × 2 losses × 1 seed
        ("ablation", ["--set", "experiment.backbones=[tsm_resnet18]"], 16, 4),  # × 2 combines × 2 heads
    ],
)
def test_experiment_dry_run_lists_every_cell_and_creates_nothing(
    cli, tiny_lus: DatasetSpec, tiny_mri: DatasetSpec, tmp_path: Path, kind: str, extra: list[str],
    cells: int, pretrainings: int,
) -> None:  # fmt: skip
    out = tmp_path / "exp"
    datasets = ["--dataset", f"LUS={tiny_lus.manifest}@sf", "--dataset", f"MRI={tiny_mri.manifest}@mmse"]
    grid = ["--set", "experiment.losses=[mse,mse+wcl]", "--set", "experiment.seeds=[0]"]
    small = ["--set", "data.size=32", "--set", "data.frames=2"]  # the estimate measures a step at this size
    code, text, err = cli(
        ["experiment", kind, "--out", str(out), "--dry-run", *datasets, *grid, *small, *extra]
    )
    assert code == 0, err
    assert not out.exists()
    assert f"Cells ({cells}):" in text
    assert f"cell {cells}/{cells}: MRI/" in text
    assert text.count("pretrain ≈") == pretrainings
    assert "experiment:" in text  # the resolved grid is shown


def test_a_bad_loss_fails_the_dry_run_too(cli, tiny_lus: DatasetSpec) -> None:
    code, _, err = cli(["pretrain", "--manifest", str(tiny_lus.manifest), "--loss", "foo", "--dry-run"])
    assert code == 2
    assert "foo" in err


def test_dry_run_with_resume_marks_the_finished_cells(cli, tiny_table3: ExperimentResult) -> None:
    out = tiny_table3.out_dir  # complete; a dry run writes nothing, so the shared run is safe to plan on
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    argv = ["experiment", "table3", "--out", str(out), "--config", str(out / "config.yaml"), "--dry-run"]
    code, text, err = cli([*argv, "--resume"])
    assert code == 0, err
    assert text.count("done (reused by --resume)") == 4
    assert "pretrain ≈" not in text
    code, fresh, err = cli(argv)  # without --resume every cell is planned as new work
    assert code == 0, err
    assert "done (reused" not in fresh
    assert fresh.count("pretrain ≈") == 4
    code, _, err = cli([*argv, "--resume", "--set", "optim.epochs=5"])  # the run itself would refuse this
    assert code == 2
    assert "computed with another config" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
