"""``learner demo`` wiring (tiny cohorts, counting pretraining stand-in) and the experiment CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from learner.cli.experiment_cmd import parse_dataset
from learner.config import Config, Experiment, ExperimentConfig
from learner.data.splits import TABLE_1_PATIENTS
from learner.errors import ConfigError
from learner.experiments import demo
from learner.experiments.demo import DemoMode
from learner.report import write_report


@pytest.mark.slow  # 30 s end to end: the full suite (CI) runs it, the fast lane leaves it out
def test_demo_generates_runs_reports_and_continues(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_pretrain: Any,
    tiny_experiment_config: Config,
    tiny_mode: DemoMode,
) -> None:
    monkeypatch.setitem(demo.MODES, "demo", tiny_mode)
    one_seed = Experiment(tiny_experiment_config, ExperimentConfig(seeds=[0]))
    monkeypatch.setattr(demo, "demo_config", lambda mode: one_seed)
    result = demo.run_demo(tmp_path / "demo", dataset="both")
    assert (tmp_path / "demo" / "phantom-lus-demo" / "manifest.csv").is_file()
    mri = pd.read_csv(tmp_path / "demo" / "phantom-mri-demo" / "manifest.csv", dtype=str)
    patients = mri.groupby("split")["patient_id"].nunique()
    assert patients.to_dict() == {"test": 3, "train": 6, "val": 3}  # ADNI's 2:1:1 of 12 patients
    assert [d["name"] for d in result.experiment.results.to_json()["datasets"]] == ["LUS", "MRI"]
    assert len(fake_pretrain.calls) == 2 * 3  # 2 datasets × the default 3 losses × 1 seed
    assert "PHANTOM" in write_report(result.experiment.out_dir).read_text()
    stored = json.loads((result.experiment.out_dir / "results.json").read_text())["timing"]
    assert stored["calls"]["cohort"] == 1
    assert stored["total"] == result.seconds
    assert sum(stored["seconds"].values()) <= stored["total"]

    again = demo.run_demo(tmp_path / "demo", dataset="both")  # a second run continues: nothing recomputed
    assert len(fake_pretrain.calls) == 6
    assert again.experiment.results.to_json()["summary"] == result.experiment.results.to_json()["summary"]
    with pytest.raises(ConfigError, match="unknown demo dataset"):
        demo.run_demo(tmp_path / "demo", dataset="ct")


class _Planned(Exception):  # raised to stop the demo where Table 3 would start
    """The experiment the demo was about to run, and its folder."""


def test_the_longitudinal_demo_renders_its_own_cohort_into_its_own_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--longitudinal``: the LUS generator is asked for repeat visits of train and val patients, and
    neither the cohort nor the experiment is the paper-protocol demo's folder."""
    asked: list[tuple[Path, dict[str, Any]]] = []

    def generate(folder: Path, **options: Any) -> Path:
        asked.append((folder, options))
        return folder / "manifest.csv"

    def table3(experiment: Experiment, out: Path, **_: Any) -> None:
        raise _Planned(experiment.grid.datasets, out)

    monkeypatch.setattr(demo, "generate_lus_cohort", generate)
    monkeypatch.setattr(demo, "run_table3", table3)
    for longitudinal, suffix in ((False, ""), (True, "-longitudinal")):
        with pytest.raises(_Planned) as planned:
            demo.run_demo(tmp_path, longitudinal=longitudinal)
        datasets, out = planned.value.args
        assert out == tmp_path / f"table3-demo{suffix}"
        assert datasets[0].manifest == tmp_path / f"phantom-lus-demo{suffix}" / "manifest.csv"
        assert asked[-1][1].get("longitudinal", False) is longitudinal
        assert asked[-1][1]["patients"] == demo.MODES["demo"].lus["patients"]


def test_demo_config_is_valid_and_small() -> None:
    experiment = demo.demo_config("demo")
    assert experiment.grid.losses == ["mse", "mse+cl", "mse+wcl"]
    assert experiment.config.optim.epochs < demo.demo_config("full").config.optim.epochs == 100


def test_demo_cohort_keeps_table_1_training_patients() -> None:
    """The CPU demo may test on more patients than Table 1 (narrower Fig. 1 intervals), never train on
    other ones; ``--full`` is Table 1 exactly."""
    train, val, test = demo.MODES["demo"].lus["patients"]
    assert (train, val) == TABLE_1_PATIENTS[:2]
    assert test >= TABLE_1_PATIENTS[2]
    assert demo.MODES["full"].lus["patients"] == TABLE_1_PATIENTS


@pytest.mark.slow  # a Table 3 grid through the CLI
def test_experiment_cli_runs_table3(
    tmp_path: Path, fake_pretrain: Any, tiny_datasets: list, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    lus = tiny_datasets[0]
    argv = ["experiment", "table3", "--out", str(tmp_path / "t3"), "--dataset", f"lus={lus.manifest}@sf"]
    argv += ["--set", "experiment.losses=[mse]", "--set", "experiment.seeds=[0]", "--set", "data.frames=2"]
    argv += ["--set", "data.size=32", "--set", "classifier.epochs=5", "--set", "classifier.bootstrap=10"]
    code, output, _ = cli(argv)
    assert code == 0
    assert output.startswith("| Loss | lus Accuracy | lus macro-F1 | lus weighted-F1 |")
    assert (tmp_path / "t3" / "REPORT.md").is_file()
    assert len(fake_pretrain.calls) == 1
    timing = json.loads((tmp_path / "t3" / "results.json").read_text())["timing"]
    assert {"pretrain lus/mse/seed-0", "classification", "figures", "report"} <= set(timing["seconds"])
    assert sum(timing["seconds"].values()) <= timing["total"]
    assert "| report |" in output  # the per-stage table is printed


def test_parse_dataset() -> None:
    spec = parse_dataset("adni=data/m@x.csv@mmse", "sf")
    assert (spec.name, spec.manifest, spec.scale) == ("adni", Path("data/m@x.csv"), "mmse")
    assert parse_dataset("lus=m.csv", "sf").scale == "sf"
    with pytest.raises(ConfigError, match="NAME=MANIFEST"):
        parse_dataset("m.csv", "sf")
