"""The study scripts that docs/recipe.md quotes, on the session's tiny Table 3: ``paired_tables.py --answers``
(every answer against always-majority, paired by seed), ``seed_ensemble.py`` (the calibrated answer on
predicted scores averaged over seeds) and ``foreign_scans.py`` (a file's embedding distance to the train
scans), each checked against an independent computation."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from learner.config import DatasetSpec
from learner.data.scales import ChangeLabel
from learner.experiments.results import ExperimentResult

STUDIES = Path(__file__).resolve().parents[2] / "examples" / "studies"


def study(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"study_{name}", STUDIES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dataset", ["LUS", "MRI"])
def test_answers_against_majority_equal_sklearn_on_the_test_pairs(
    tiny_table3: ExperimentResult, dataset: str
) -> None:
    tables = study("paired_tables")
    cells = tables.read_arm("tiny", [tiny_table3.out_dir], dataset)
    rows = tables.answers_table(cells).splitlines()[2:]
    assert {cell["dataset"] for cell in cells.values()} == {dataset}
    for (_, _, loss, _), cell in cells.items():
        test = pd.read_csv(tiny_table3.out_dir / cell["dir"] / "classifier" / "pairs" / "test.csv")
        labels = test["label"].to_numpy()
        stable = np.full_like(labels, int(ChangeLabel.STABLE))
        majority_accuracy = 100 * accuracy_score(labels, stable)
        majority_f1 = 100 * f1_score(labels, stable, average="macro", labels=np.unique(labels))
        row = next(r for r in rows if f"| {loss} | pair classifier |" in r)
        accuracy_gap = 100 * cell["accuracy"] - majority_accuracy
        f1_gap = 100 * cell["macro_f1"] - majority_f1
        assert row.endswith(f"| {accuracy_gap:+.1f} | {f1_gap:+.1f} |"), row
        answered = {r.split(" | ")[3] for r in rows if f"| {loss} |" in r}
        assert set(cell["answers"]) <= answered


def test_cells_of_two_datasets_need_a_choice(tiny_table3: ExperimentResult) -> None:
    with pytest.raises(SystemExit, match="several datasets"):
        study("paired_tables").read_arm("tiny", [tiny_table3.out_dir])


def test_averaged_scores_and_the_mean_correlation() -> None:
    ensemble = study("seed_ensemble")
    from learner.evaluation.embed import EmbeddingTable

    def table(scores: list[float]) -> EmbeddingTable:
        return EmbeddingTable(["a", "b", "c"], np.zeros((3, 2), np.float32), np.array(scores), "f", 1)

    mean = ensemble.averaged([table([1.0, 2.0, 3.0]), table([3.0, 2.0, 7.0])])
    np.testing.assert_allclose(mean.scores, [2.0, 2.0, 5.0])
    rows = np.array([[1.0, 2.0, 3.0, 5.0], [2.0, 1.0, 4.0, 4.0], [0.0, 3.0, 1.0, 2.0]])
    by_hand = np.mean([np.corrcoef(rows[i], rows[j])[0, 1] for i in range(3) for j in range(3) if i != j])
    assert ensemble.mean_correlation(rows) == pytest.approx(by_hand)


def test_seed_ensemble_runs_on_a_table3_folder(
    tiny_table3: ExperimentResult,
    tiny_mri: DatasetSpec,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ensemble = study("seed_ensemble")
    argv = [str(tiny_table3.out_dir), "--manifest", str(tiny_mri.manifest), "--dataset", "MRI"]
    monkeypatch.setattr(sys, "argv", ["seed_ensemble.py", *argv, "--scale", tiny_mri.scale])
    ensemble.main()
    out = capsys.readouterr().out
    assert out.startswith("always-majority: ")
    for loss in ("mse", "mse+wcl"):
        assert f"{loss}: mean of 1 seed(s), 1 subsets: calibrated answer" in out
        assert f"{loss}: one seed, no correlation between seeds" in out
    monkeypatch.setattr(sys, "argv", ["seed_ensemble.py", *argv[:-1], "nope", "--scale", tiny_mri.scale])
    with pytest.raises(SystemExit, match="no cell of dataset 'nope'"):
        ensemble.main()


@pytest.mark.slow  # a study's whole run on the tiny Table 3 (embeddings, grid searches)
def test_seed_ensemble_reads_the_table_of_each_cells_clips_per_scan(
    tiny_table3: ExperimentResult, tiny_mri: DatasetSpec, tmp_path: Path
) -> None:
    """A cell classified with K = 2 clips per scan is averaged from its K = 2 table, not the K = 1 one."""
    from learner.data.manifest import load_manifest
    from learner.data.scales import get_scale
    from learner.evaluation.embed import embed_scans

    folder = tmp_path / "t3"
    shutil.copytree(tiny_table3.out_dir, folder)
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    cells = [cell for cell in results["cells"] if cell["dataset"] == "MRI"]
    manifest = load_manifest(tiny_mri.manifest, get_scale(tiny_mri.scale))
    for cell in cells:
        cell["clips_per_scan"] = 2
        embed_scans(folder / cell["dir"] / "encoder", manifest, clips_per_scan=2)
    (folder / "results.json").write_text(json.dumps(results), encoding="utf-8")
    tables = study("seed_ensemble").seed_scores([folder], manifest, "MRI")
    assert {table.clips_per_scan for by_seed in tables.values() for table in by_seed.values()} == {2}


@pytest.mark.slow  # a study's whole run on the tiny Table 3 (embeddings, grid searches)
def test_val_offsets_reads_the_table_its_classifier_was_fitted_on(
    tiny_table3: ExperimentResult,
    tiny_mri: DatasetSpec,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another table beside it (here: the same scans' embeddings reversed, written last) changes nothing."""
    offsets = study("val_offsets")
    folder = tmp_path / "t3"
    shutil.copytree(tiny_table3.out_dir / "MRI", folder / "MRI")
    argv = ["val_offsets.py", str(folder), "--manifest", str(tiny_mri.manifest), "--scale", tiny_mri.scale]
    monkeypatch.setattr(sys, "argv", argv)
    offsets.main()
    alone = capsys.readouterr().out
    for table in list(folder.glob("**/encoder/embeddings/*.npz")):
        arrays = dict(np.load(table))
        arrays["embeddings"] = arrays["embeddings"][::-1].copy()
        np.savez(table.parent / "0-other.npz", **arrays)
    offsets.main()
    assert capsys.readouterr().out == alone
    assert "| mse |" in alone


@pytest.mark.parametrize(
    ("arm", "why"),
    [
        ("tiny", "--arm 'tiny' must look like NAME=DIR[,DIR...]"),
        ("tiny=", "--arm 'tiny=' must look like NAME=DIR[,DIR...]"),
        ("tiny=nowhere", "--arm tiny=nowhere: nowhere/results.json not found (a sweep or table3 folder)"),
    ],
)
def test_paired_tables_refuses_an_arm_in_one_line(
    arm: str, why: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["paired_tables.py", "--arm", arm])
    with pytest.raises(SystemExit) as stopped:
        study("paired_tables").main()
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"paired_tables.py: error: {why}"


@pytest.mark.slow  # a study's whole run on the tiny Table 3 (embeddings, grid searches)
def test_foreign_scans_measures_each_file_as_predict_embeds_it_against_the_val_scans(
    tiny_table3: ExperimentResult,
    tiny_lus: DatasetSpec,
    tiny_mri: DatasetSpec,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A volume given to the LUS encoder gets a row with its kind, and a train scan of the encoder itself
    sits at distance 0 from the train scans (k = 1), so no val scan is closer: p = 1."""
    from learner.data.manifest import load_manifest
    from learner.data.scales import get_scale

    encoder = tiny_table3.out_dir / "LUS" / "mse" / "seed-0" / "encoder"
    train = next(
        r for r in load_manifest(tiny_lus.manifest, get_scale(tiny_lus.scale)).records if r.split == "train"
    )
    volume = next(r for r in load_manifest(tiny_mri.manifest, get_scale(tiny_mri.scale)).records).path
    monkeypatch.setattr(
        sys, "argv", ["foreign_scans.py", str(encoder), str(volume), str(train.path), "-k", "1"]
    )
    study("foreign_scans").main()
    out = capsys.readouterr().out
    assert "trained on video" in out.splitlines()[0]
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [(row[0], row[1]) for row in rows] == [
        (f"| {volume.name}", "volume"),
        (f"| {train.path.name}", "video"),
    ]
    assert float(rows[1][3]) == pytest.approx(0.0, abs=1e-4)
    assert float(rows[1][4].rstrip(" |")) == 1.0
