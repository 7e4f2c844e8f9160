"""Table 3: the grid's numbers against independent recomputation, and its resumability."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

from learner.experiments.results import ExperimentResult, load_results


def test_cells_summary_and_files_match_independent_recomputation(tiny_table3: ExperimentResult) -> None:
    results = tiny_table3.results.to_json()
    assert [(c["dataset"], c["loss"]) for c in results["cells"]] == [
        ("LUS", "mse"), ("LUS", "mse+wcl"), ("MRI", "mse"), ("MRI", "mse+wcl")
    ]  # fmt: skip
    for cell in results["cells"]:
        predictions = pd.read_csv(tiny_table3.out_dir / cell["dir"] / "classifier" / "predictions.csv")
        assert cell["accuracy"] == pytest.approx(
            accuracy_score(predictions["label"], predictions["predicted"])
        )
        assert cell["macro_f1"] == pytest.approx(
            f1_score(
                predictions["label"],
                predictions["predicted"],
                labels=np.unique(predictions["label"]),
                average="macro",
            )
        )
    on_disk = json.loads((tiny_table3.out_dir / "results.json").read_text())
    by_key = {(c["dataset"], c["loss"]): c for c in on_disk["cells"]}
    for row in on_disk["summary"]:
        cell = by_key[(row["dataset"], row["loss"])]
        assert row["accuracy"] == {"mean": pytest.approx(cell["accuracy"]), "std": 0.0}  # one seed
    for dataset in ("LUS", "MRI"):
        diff = on_disk["comparisons"][dataset]["mse+wcl"]["accuracy"]
        expected = by_key[(dataset, "mse+wcl")]["accuracy"] - by_key[(dataset, "mse")]["accuracy"]
        assert diff["mean"] == pytest.approx(expected)
        assert diff["n"] == 1
    csv = pd.read_csv(tiny_table3.out_dir / "table3.csv")
    assert set(csv["dataset"]) == {"LUS", "MRI"}
    row = csv[(csv["dataset"] == "LUS") & (csv["loss"] == "mse")].iloc[0]
    assert row["macro_f1_mean"] == pytest.approx(by_key[("LUS", "mse")]["macro_f1"])


def test_table_in_the_papers_layout(tiny_table3: ExperimentResult) -> None:
    lines = (tiny_table3.out_dir / "table3.md").read_text().splitlines()
    columns = " | ".join(f"{d} {m}" for d in ("LUS", "MRI") for m in ("Accuracy", "macro-F1", "weighted-F1"))
    assert lines[0] == f"| Loss | {columns} |"
    wcl = next(
        c for c in tiny_table3.results.to_json()["cells"] if (c["dataset"], c["loss"]) == ("MRI", "mse+wcl")
    )
    row = next(line for line in lines if line.startswith("| MSE + wCL |"))
    assert row.split(" | ")[4] == f"{100 * wcl['accuracy']:.2f} ± n/a"  # one seed: no spread
    assert "macro-F1" in lines[-1]


def test_fig1_panels_match_scipy_spearman(tiny_table3: ExperimentResult) -> None:
    from learner.evaluation.embed import EmbeddingTable

    out = tiny_table3.out_dir
    figures = tiny_table3.results.to_json()["figures"]
    assert set(figures["LUS"]) == {"score", "latent"}
    assert set(figures["MRI"]) == {"score", "latent"}
    for dataset in ("LUS", "MRI"):
        assert (out / figures[dataset]["score"]["png"]).read_bytes()[:4] == b"\x89PNG"
        folder = out / dataset / "mse" / "seed-0"
        pairs = pd.read_csv(
            folder / "classifier" / "pairs" / "test.csv", dtype={"first_scan_id": str, "second_scan_id": str}
        )
        table = EmbeddingTable.load(next((folder / "encoder" / "embeddings").glob("*.npz")))
        index = {s: i for i, s in enumerate(table.scan_ids)}
        a = table.embeddings[[index[s] for s in pairs["first_scan_id"]]].astype(np.float64)
        b = table.embeddings[[index[s] for s in pairs["second_scan_id"]]].astype(np.float64)
        cosine = np.einsum("pd,pd->p", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        change = (pairs["second_score"] - pairs["first_score"]).abs()
        rho = stats.spearmanr(change, 1 - cosine).statistic
        assert figures[dataset]["score"]["panels"]["mse"]["spearman_rho"] == pytest.approx(rho, nan_ok=True)


def test_results_record_the_wall_time_of_every_stage(tiny_table3: ExperimentResult) -> None:
    timing = load_results(tiny_table3.out_dir / "results.json").timing
    assert timing is not None
    pretrain = [name for name in timing.seconds if name.startswith("pretrain ")]
    assert sorted(pretrain) == sorted(f"pretrain {c.dir}" for c in tiny_table3.results.cells)
    expected = {"manifest", "cache", "validation", "checkpoints", "classification", "embedding", "classifier"}
    assert expected | {"bootstrap", "figures", "outputs"} <= set(timing.seconds)
    assert timing.calls["classifier"] == len(tiny_table3.results.cells)
    assert all(seconds >= 0 for seconds in timing.seconds.values())
    assert sum(timing.seconds.values()) <= timing.total
    for cell in tiny_table3.results.cells:  # a stage's time is at most its cell's measured pretraining
        assert timing.seconds[f"pretrain {cell.dir}"] <= cell.pretrain_seconds
