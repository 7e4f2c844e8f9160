"""``learner experiment sweep``: named settings × losses × seeds on the grid engine. Pretraining is the
copying stand-in of conftest (the sweep's own numbers are what is checked), recomputed independently from
the files the cells leave behind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats
from sklearn.metrics import f1_score

from learner.cli.experiment_cmd import parse_setting
from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig, load_experiment
from learner.errors import ConfigError, RunDirError
from learner.evaluation.embed import EmbeddingTable
from learner.experiments import stages
from learner.experiments.results import Cell, Correlation, GridKey, SweepCell, load_results
from learner.experiments.sweep import run_sweep, sweep_rows
from learner.report import write_report

SETTINGS = {"narrow": {"classifier.hidden": 16}, "long": {"optim.epochs": 2, "classifier.hidden": 32}}
_IDS = {"first_scan_id": str, "second_scan_id": str}


def _rho(folder: Path, change: pd.Series, pairs: pd.DataFrame) -> float:
    """Spearman ρ of cosine distance vs ``change``, from the cell's saved embeddings and test pairs."""
    table = EmbeddingTable.load(next((folder / "encoder" / "embeddings").glob("*.npz")))
    index = {s: i for i, s in enumerate(table.scan_ids)}
    a = table.embeddings[[index[s] for s in pairs["first_scan_id"]]].astype(np.float64)
    b = table.embeddings[[index[s] for s in pairs["second_scan_id"]]].astype(np.float64)
    cosine = np.einsum("pd,pd->p", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(stats.spearmanr(change, 1 - cosine).statistic)


def test_sweep_numbers_match_independent_recomputation(
    tmp_path: Path, fake_pretrain: Any, tiny_experiment_config: Config, tiny_datasets: list[DatasetSpec]
) -> None:
    lus = tiny_datasets[0]
    grid = ExperimentConfig(datasets=[lus], settings=SETTINGS, losses=["mse"], seeds=[0])
    result = run_sweep(Experiment(tiny_experiment_config, grid), tmp_path / "sweep")
    out = result.out_dir
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["kind"] == "sweep"
    assert load_results(out / "results.json").to_json() == on_disk  # typed end to end
    rows = {r["setting"]: r for r in on_disk["sweep"]["rows"]}
    assert list(rows) == ["narrow", "long"]
    truth = pd.read_csv(Path(lus.manifest).parent / "ground_truth.csv", dtype={"scan_id": str})
    latent = dict(zip(truth["scan_id"], truth["severity_zone"], strict=True))
    for name, overrides in SETTINGS.items():
        folder = out / "LUS" / name / "mse" / "seed-0"
        stored = yaml.safe_load((folder / "encoder" / "config.yaml").read_text())
        assert stored["classifier"]["hidden"] == overrides["classifier.hidden"]  # the setting reached it
        assert stored["optim"]["epochs"] == overrides.get("optim.epochs", tiny_experiment_config.optim.epochs)
        row = rows[name]
        pairs = pd.read_csv(folder / "classifier" / "pairs" / "test.csv", dtype=_IDS)
        by_score = _rho(folder, (pairs["second_score"] - pairs["first_score"]).abs(), pairs)
        severity = pairs[["first_scan_id", "second_scan_id"]].apply(lambda ids: ids.map(latent))
        by_latent = _rho(folder, (severity["second_scan_id"] - severity["first_scan_id"]).abs(), pairs)
        assert row["rho"]["score"]["mean"] == pytest.approx(by_score)
        assert row["rho"]["latent"]["mean"] == pytest.approx(by_latent)
        low, high = row["rho_ci"]["latent"]
        assert -1 <= low <= high <= 1
        assert row["ci_seed"] == 0
        predictions = pd.read_csv(folder / "classifier" / "predictions.csv")
        macro = f1_score(
            predictions["label"],
            predictions["predicted"],
            labels=np.unique(predictions["label"]),
            average="macro",
        )
        assert row["macro_f1"] == {"mean": pytest.approx(macro), "std": 0.0}
        best = json.loads((folder / "encoder" / "metrics.json").read_text())["best"]
        assert row["val_mae"]["mean"] == pytest.approx(best["val_mae"])
        assert row["baseline_mae"]["mean"] == pytest.approx(best["baseline_mae"])
        assert row["mae_reduction"] == pytest.approx(1 - best["val_mae"] / best["baseline_mae"])
        record = json.loads((folder / "encoder" / "complete.json").read_text())
        assert record["seconds"] > 0  # measured around the pretraining call
        assert record["resumed"] is False
        assert row["pretrain_seconds"]["mean"] == pytest.approx(record["seconds"])
    csv = pd.read_csv(out / "sweep.csv")
    assert list(csv["setting"]) == ["narrow", "long"]
    assert csv.loc[1, "overrides"] == "optim.epochs=2, classifier.hidden=32"
    assert csv.loc[0, "rho_latent_mean"] == pytest.approx(rows["narrow"]["rho"]["latent"]["mean"])
    write_report(out)  # writes sweep.md beside REPORT.md
    table = (out / "sweep.md").read_text()
    assert r"| Setting | Loss | ρ vs \|Δ latent\| | ρ vs \|Δ score\| |" in table.splitlines()[2]
    # the regressor's own answer beside the classifier, from every seed's cell
    assert "| macro-F1 (%) | Δ predicted score F1 (%) |" in table.splitlines()[2]
    cells = result.results.cells
    narrow = [c.answers["delta_score"].macro_f1 for c in cells if c.key.setting == "narrow" and c.answers]
    assert len(narrow) == len([c for c in cells if c.key.setting == "narrow"])
    assert rows["narrow"]["delta_macro_f1"]["mean"] == pytest.approx(sum(narrow) / len(narrow))
    assert csv.loc[0, "delta_macro_f1_mean"] == pytest.approx(rows["narrow"]["delta_macro_f1"]["mean"])
    assert "phantom, generator version" in table
    assert "- `long`: `optim.epochs=2`" in table


@pytest.mark.slow  # end to end; the full suite (CI) runs it, the fast lane leaves it out
def test_resume_reuses_finished_cells_and_computes_new_settings(
    tmp_path: Path, fake_pretrain: Any, tiny_experiment_config: Config, tiny_datasets: list[DatasetSpec]
) -> None:
    grid = {"datasets": tiny_datasets[:1], "losses": ["mse"], "seeds": [0]}
    first = ExperimentConfig(settings={"a": {"classifier.hidden": 16}}, **grid)
    run_sweep(Experiment(tiny_experiment_config, first), tmp_path / "s")
    done = tmp_path / "s" / "LUS" / "a" / "mse" / "seed-0" / "classifier" / "complete.json"
    stamp = done.stat().st_mtime_ns
    grown = {"a": {"classifier.hidden": 16}, "b": {"optim.lr": 3e-4}}
    result = run_sweep(
        Experiment(tiny_experiment_config, ExperimentConfig(settings=grown, **grid)),
        tmp_path / "s",
        resume=True,
    )
    assert len(fake_pretrain.calls) == 2  # only b's encoder was pretrained on resume
    assert done.stat().st_mtime_ns == stamp
    assert [r.key.setting for r in result.results.sweep.rows] == ["a", "b"]
    changed = {"a": {"classifier.hidden": 17}}
    edited = Experiment(tiny_experiment_config, ExperimentConfig(settings=changed, **grid))
    with pytest.raises(RunDirError, match="another config"):  # a finished cell's setting was edited
        run_sweep(edited, tmp_path / "s", resume=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ok": {}, "bad": {"optim.epoch": 3}}, r"setting 'bad': unknown config key 'optim.epoch'"),
        ({"bad": {"data.size": 4}}, r"setting 'bad': invalid config value for 'data.size'"),
        ({"bad": {"model.backbone": "resnet9000"}}, r"setting 'bad': unknown model.backbone"),
        ({"bad": {"loss.name": "mse"}}, r"setting 'bad': loss.name is set by the sweep's own axes"),
        ({"a/b": {}}, r"setting name 'a/b'"),
        ({}, r"experiment.settings is empty"),
    ],
)
def test_a_bad_setting_fails_before_any_work(
    tmp_path: Path,
    fake_pretrain: Any,
    tiny_experiment_config: Config,
    tiny_datasets: list[DatasetSpec],
    settings: dict[str, Any],
    message: str,
) -> None:
    grid = ExperimentConfig(datasets=tiny_datasets, settings=settings, seeds=[0])
    with pytest.raises(ConfigError, match=message):
        run_sweep(Experiment(tiny_experiment_config, grid), tmp_path / "s")
    assert fake_pretrain.calls == []
    assert not (tmp_path / "s").exists()


def test_rows_average_seeds_and_show_the_lowest_seeds_interval() -> None:
    key = GridKey(dataset="LUS", loss="mse", setting="a")

    def cell(seed: int, f1: float, mae: float, seconds: float | None) -> Cell:
        regression = {"val_mae": mae, "baseline_mae": 2.0}
        return Cell(
            key=key, seed=seed, dir="x", clips_per_scan=1, accuracy=0.5, macro_f1=f1, weighted_f1=0.5, ci={},
            n_test_pairs=10, regression=regression, pair_counts={}, encoder_fingerprint="f",
            pretrain_seconds=seconds,
        )  # fmt: skip

    cells = [cell(1, 0.4, 1.0, 10.0), cell(0, 0.6, 1.5, 20.0)]
    extras = [
        SweepCell(
            key=key,
            seed=1,
            correlations={"latent": Correlation(rho=0.2, ci_low=0.0, ci_high=0.4, n_pairs=10)},
        ),
        SweepCell(
            key=key,
            seed=0,
            correlations={"latent": Correlation(rho=0.4, ci_low=0.1, ci_high=0.7, n_pairs=10)},
        ),
    ]
    (row,) = sweep_rows(cells, extras)
    assert (row.n_seeds, row.ci_seed, row.rho_ci["latent"]) == (2, 0, (0.1, 0.7))
    assert row.rho["latent"].mean == pytest.approx(0.3)
    assert row.rho["latent"].std == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert row.macro_f1.mean == pytest.approx(0.5)
    assert row.val_mae.mean == pytest.approx(1.25)
    assert row.mae_reduction == pytest.approx(1 - 1.25 / 2.0)
    assert row.pretrain_seconds is not None
    assert (row.pretrain_seconds.mean, row.pretrain_seconds.std) == (
        15.0,
        pytest.approx(np.std([10.0, 20.0], ddof=1)),
    )
    (unmeasured,) = sweep_rows([cell(0, 0.5, 1.0, None)], extras[1:])
    assert unmeasured.pretrain_seconds is None


def test_setting_flags_and_the_yaml_axis(tmp_path: Path) -> None:
    assert parse_setting("small:data.size=32,data.frames=4") == ("small", {"data.size": 32, "data.frames": 4})
    assert parse_setting("c:data.split.counts=[3,2,1],optim.lr=0.0003") == (
        "c", {"data.split.counts": [3, 2, 1], "optim.lr": 0.0003}
    )  # fmt: skip
    assert parse_setting("base:") == ("base", {})
    with pytest.raises(ConfigError, match="NAME:key=value"):
        parse_setting("data.size=32")
    config = tmp_path / "sweep.yaml"
    config.write_text("experiment:\n  settings:\n    small: {data.size: 32, data.frames: 4}\n")
    assert load_experiment(config).grid.settings == {"small": {"data.size": 32, "data.frames": 4}}


@pytest.mark.slow  # a sweep through the CLI
def test_cli_runs_a_sweep_and_refuses_a_bad_setting(
    tmp_path: Path,
    fake_pretrain: Any,
    tiny_datasets: list[DatasetSpec],
    cli: Callable[[list[str]], tuple[int, str, str]],
) -> None:
    lus = tiny_datasets[0]
    argv = ["experiment", "sweep", "--out", str(tmp_path / "s"), "--dataset", f"LUS={lus.manifest}@sf"]
    argv += ["--set", "experiment.losses=[mse]", "--set", "experiment.seeds=[0]", "--set", "data.frames=2"]
    argv += ["--set", "data.size=32", "--set", "classifier.epochs=5", "--set", "classifier.bootstrap=10"]
    bad = [*argv, "--setting", "a:classifier.hidden=16", "--setting", "b:optim.epoch=3"]
    code, _, err = cli(bad)
    assert code == 2
    assert "error: setting 'b': unknown config key 'optim.epoch'" in err
    assert fake_pretrain.calls == []
    code, output, _ = cli([*argv, "--setting", "a:classifier.hidden=16"])
    assert code == 0
    assert "| Setting | Loss |" in output
    assert "REPORT.md" in output
    assert "## Sweep" in (tmp_path / "s" / "REPORT.md").read_text()


@pytest.mark.slow  # end to end; the full suite (CI) runs it, the fast lane leaves it out
def test_a_classifier_only_setting_reuses_the_encoder_instead_of_pretraining_again(
    tmp_path: Path, fake_pretrain: Any, tiny_experiment_config: Config, tiny_datasets: list[DatasetSpec]
) -> None:
    settings = {"base": {}, "wide": {"classifier.hidden": 24}, "pairs": {"data.pairs.per_scan": 2.0}}
    settings |= {"lr": {"optim.lr": 3e-4}, "lr-wide": {"optim.lr": 3e-4, "classifier.hidden": 24}}
    grid = ExperimentConfig(datasets=tiny_datasets[:1], settings=settings, losses=["mse"], seeds=[0])
    result = run_sweep(Experiment(tiny_experiment_config, grid), tmp_path / "s")
    assert [c["loss"] for c in fake_pretrain.calls] == ["mse", "mse"]  # base and lr; the rest reuse theirs
    out = tmp_path / "s" / "LUS"
    owners = {"base": None, "wide": "base", "pairs": "base", "lr": None, "lr-wide": "lr"}
    cells = {c.key.setting: c for c in result.results.cells}
    for name, owner in owners.items():
        folder = out / name / "mse" / "seed-0"
        assert (folder / "encoder").exists() == (owner is None), name
        expected = f"LUS/{owner or name}/mse/seed-0/encoder"
        assert cells[name].encoder_folder == expected
        fitted_on = json.loads((folder / "classifier" / "metrics.json").read_text())["encoder_fingerprint"]
        assert fitted_on == cells[name].encoder_fingerprint == cells[owner or name].encoder_fingerprint
    rows = {r.key.setting: r for r in result.results.sweep.rows}
    assert {name: row.encoders_of for name, row in rows.items()} == owners
    # same embeddings and the same test pairs (data.pairs.per_scan shapes only the train/val pairs): same ρ
    assert rows["wide"].rho == rows["pairs"].rho == rows["base"].rho
    assert rows["lr-wide"].rho == rows["lr"].rho
    assert load_results(tmp_path / "s" / "results.json").sweep == result.results.sweep
    write_report(tmp_path / "s")
    table = (tmp_path / "s" / "sweep.md").read_text()
    assert "| wide | MSE |" in table
    assert "`base`'s |" in table.split("| wide | MSE |")[1].splitlines()[0]
    assert pd.read_csv(tmp_path / "s" / "sweep.csv").fillna("")["encoders_of"].tolist() == [
        "", "base", "base", "", "lr"
    ]  # fmt: skip


def test_a_classification_fitted_on_other_encoder_weights_is_redone(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_experiment_config: Config,
    tiny_datasets: list[DatasetSpec],
) -> None:
    config = stages.cell_config(tiny_experiment_config, tiny_datasets[0])
    stage = tmp_path / "classifier"
    stage.mkdir()
    test = {"accuracy": 0.5, "macro_f1": 0.5, "weighted_f1": 0.5, "ci": {}, "n": 4}  # what a cell reads
    old = {"encoder_fingerprint": "old", "test": test, "pair_counts": {}}
    record = stages.StageIdentity.of(config, stage).to_json() | {"metrics": old}
    (stage / "complete.json").write_text(json.dumps(record))
    calls: list[Path] = []

    def classify(encoder_dir: Path, *args: Any, **kwargs: Any) -> Any:
        calls.append(encoder_dir)
        return type("Result", (), {"metrics": {"encoder_fingerprint": "new"}})()

    monkeypatch.setattr(stages, "run_classification", classify)
    manifest: Any = None  # passed through to the classification, which is replaced here
    kept = stages.ensure_classification(tmp_path / "e", manifest, config, stage, "cpu", "old")
    assert (kept.metrics, calls) == (old, [])
    redone = stages.ensure_classification(tmp_path / "e", manifest, config, stage, "cpu", "new")
    assert (redone.metrics, calls) == ({"encoder_fingerprint": "new"}, [tmp_path / "e"])
    assert json.loads((stage / "complete.json").read_text())["metrics"] == {"encoder_fingerprint": "new"}
