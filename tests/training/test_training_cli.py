"""``learner pretrain``: flags and --set reach the config, the result line, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from learner.cli import run
from learner.config import Config

pytestmark = pytest.mark.slow


def test_pretrain_command_trains_and_reports_mae_against_the_baseline(
    tiny_config: Callable[..., Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file, out = tmp_path / "tiny.yaml", tmp_path / "run"
    config_file.write_text(tiny_config(**{"data.manifest": None}).to_yaml())
    manifest = str(tiny_config().data.manifest)
    sets = ["--set", "optim.epochs=5", "--set", "loss.name=mse+cl", "--set", "optim.lr=0.002"]
    argv = ["pretrain", "--config", str(config_file), *sets, "--manifest", manifest, "--out", str(out)]
    assert run([*argv, "--loss", "mse", "--epochs", "1", "--seed", "3", "--device", "cpu"]) == 0
    stored = yaml.safe_load((out / "config.yaml").read_text())
    assert stored["loss"]["name"] == "mse"  # an explicit flag beats --set, which beats the file
    assert (stored["optim"]["epochs"], stored["seed"], stored["optim"]["lr"]) == (1, 3, 0.002)
    assert (stored["model"]["size"], stored["data"]["manifest"]) == ("tiny", manifest)
    final = json.loads((out / "metrics.json").read_text())
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith(f"best val MAE {final['best']['val_mae']:.3f} (epoch 1)")
    assert f"vs {final['last']['baseline_mae']:.3f} predicting the train mean" in printed


def test_resume_refuses_config_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    argv = ["pretrain", "--resume", str(tmp_path / "run"), "--loss", "mse", "--set", "seed=1"]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --resume continues {tmp_path / 'run'} with its stored config; drop --loss, --set"


def test_unknown_set_key_is_a_one_line_error(
    lus_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["pretrain", "--manifest", str(lus_manifest), "--out", str(tmp_path), "--set", "optim.lrr=1"]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key 'optim.lrr'")
    assert "\n" not in err


def test_run_directory_comes_from_out_or_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["pretrain", "--loss", "mse"]) == 2
    assert "give --out RUN_DIR for a new run, or --resume RUN_DIR" in capsys.readouterr().err
    argv = ["pretrain", "--resume", str(tmp_path / "a"), "--out", str(tmp_path / "b")]
    assert run(argv) == 2
    assert f"--resume {tmp_path / 'a'} continues that run; drop --out" in capsys.readouterr().err
    assert run(["pretrain", "--resume", str(tmp_path / "none")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
