"""``learner pretrain``: flags and --set reach the config, the result line, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from learner.config import Config
from learner.runs import load_run_config

pytestmark = pytest.mark.slow


def test_pretrain_command_trains_and_reports_mae_against_the_baseline(
    make_tiny_pretrain_config: Callable[..., Config],
    tmp_path: Path,
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    config_file, out = tmp_path / "tiny.yaml", tmp_path / "run"
    config_file.write_text(make_tiny_pretrain_config(**{"data.manifest": None}).to_yaml())
    manifest = str(make_tiny_pretrain_config().data.manifest)
    sets = ["--set", "optim.epochs=5", "--set", "loss.name=mse+cl", "--set", "optim.lr=0.002"]
    argv = ["pretrain", "--config", str(config_file), *sets, "--manifest", manifest, "--out", str(out)]
    code, stdout, _ = cli([*argv, "--loss", "mse", "--epochs", "1", "--seed", "3", "--device", "cpu"])
    assert code == 0
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["loss"]["name"] == "mse"  # an explicit flag beats --set, which beats the file
    assert (stored["optim"]["epochs"], stored["seed"], stored["optim"]["lr"]) == (1, 3, 0.002)
    assert stored["model"]["size"] == "tiny"
    assert (out / stored["data"]["manifest"]).resolve() == Path(manifest).resolve()  # relative to the run
    assert load_run_config(out).data.manifest == Path(manifest).resolve()
    final = json.loads((out / "metrics.json").read_text())
    printed = stdout.strip().splitlines()[-1]
    assert printed.startswith(f"best val MAE {final['best']['val_mae']:.3f} (epoch 1)")
    assert f"vs {final['last']['baseline_mae']:.3f} predicting the train mean" in printed


def test_resume_refuses_config_changes(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    argv = ["pretrain", "--resume", str(tmp_path / "run"), "--loss", "mse", "--set", "seed=1"]
    code, _, err = cli(argv)
    assert code == 2
    err = err.strip()
    assert err == (
        f"error: --resume continues {tmp_path / 'run'} with its stored config; drop --loss, --set "
        "(only --epochs / --set optim.epochs=N may extend it)"
    )


def test_resume_with_epochs_0_is_refused_as_without_resume(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    """``--resume RUN --epochs 0`` exited 0 having done nothing (0 was taken as "not given")."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    refused = "error: invalid config value for 'optim.epochs': Input should be greater than or equal to 1"
    for argv in (["--resume", str(tmp_path / "run")], ["--out", str(tmp_path / "new")]):
        code, _, err = cli(["pretrain", *argv, "--epochs", "0"])
        assert code == 2
        assert err.startswith(refused)
    assert not (tmp_path / "new").exists()


def test_a_custom_scale_beside_another_scale_is_refused(
    tiny_lus_manifest: Path, tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    """data.custom_scale is read only with data.scale: custom: a pretraining on sf ignored it without a
    word; refused before anything is written, with or without --dry-run."""
    scale = ["--set", "data.custom_scale={low: 0, high: 3, threshold: 1, higher_is_better: false}"]
    argv = ["pretrain", "--manifest", str(tiny_lus_manifest), *scale]
    for extra in (["--dry-run"], ["--out", str(tmp_path / "run")]):
        code, _, err = cli([*argv, *extra])
        assert code == 2
        assert err.startswith("error: data.custom_scale is set but data.scale is 'sf', which ignores it")
        assert "\n" not in err.strip()
    assert not (tmp_path / "run").exists()


def test_unknown_set_key_is_a_one_line_error(
    tiny_lus_manifest: Path, tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    argv = ["pretrain", "--manifest", str(tiny_lus_manifest), "--out", str(tmp_path), "--set", "optim.lrr=1"]
    code, _, err = cli(argv)
    assert code == 2
    err = err.strip()
    assert err.startswith("error: unknown config key 'optim.lrr'")
    assert "\n" not in err


def test_run_directory_comes_from_out_or_resume(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    code, _, err = cli(["pretrain", "--loss", "mse"])
    assert code == 2
    assert "give --out RUN_DIR for a new run, or --resume RUN_DIR" in err
    code, _, err = cli(["pretrain", "--resume", str(tmp_path / "a"), "--out", str(tmp_path / "b")])
    assert code == 2
    assert f"--resume {tmp_path / 'a'} continues that run; drop --out" in err
    code, _, err = cli(["pretrain", "--resume", str(tmp_path / "none")])
    assert code == 2
    assert "is not a run directory" in err
