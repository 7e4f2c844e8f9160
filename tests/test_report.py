"""Report and table rendering from hand-made results: table layouts, verdicts, banners, a full report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from learner.data.phantom.lus import TABLE_1_PATIENTS
from learner.errors import RunDirError
from learner.experiments.results import (
    AblationResults,
    Cell,
    DatasetSummary,
    GridKey,
    MeanStd,
    SummaryRow,
    Table3Results,
)
from learner.losses.registry import loss_label
from learner.report import write_report
from learner.report.sections import (
    Source,
    phantom_cohort,
    regression_section,
    regression_summary,
    source_banner,
)
from learner.report.tables import render_ablation, render_table3


def _stats(values: list[float]) -> MeanStd:
    return MeanStd(mean=float(np.mean(values)), std=float(np.std(values, ddof=1)))


def _dataset(name: str) -> DatasetSummary:
    return DatasetSummary(
        name=name, manifest="m.csv", scale="sf", scans=0, patients=0, data_source="real", phantom=None
    )


def _cell(dataset: str, loss: str, seed: int, regression: dict[str, Any]) -> Cell:
    return Cell(
        key=GridKey(dataset=dataset, loss=loss), seed=seed, dir="", clips_per_scan=1, accuracy=0.5,
        macro_f1=0.5, weighted_f1=0.5, ci={}, n_test_pairs=0, regression=regression, pair_counts={},
        encoder_fingerprint="",
    )  # fmt: skip


def test_table3_layout_with_mean_and_std_in_percent() -> None:
    acc = {"mse": [0.50, 0.55], "mse+wcl": [0.70, 0.75]}
    f1 = {"mse": [0.40, 0.44], "mse+wcl": [0.60, 0.62]}
    results = Table3Results(
        datasets=[_dataset("LUS"), _dataset("ADNI")],
        losses=["mse", "mse+wcl"],
        seeds=[0, 1],
        cells=[],
        summary=[
            SummaryRow(
                key=GridKey(dataset=d, loss=loss),
                n_seeds=2,
                accuracy=_stats(acc[loss]),
                macro_f1=_stats(f1[loss]),
                weighted_f1=_stats(f1[loss]),
            )
            for d in ("LUS", "ADNI")
            for loss in ("mse", "mse+wcl")
        ],
        baseline_loss="mse",
        comparisons={},
        figures={},
    )
    lines = render_table3(results).splitlines()
    columns = " | ".join(f"{d} {m}" for d in ("LUS", "ADNI") for m in ("Accuracy", "macro-F1", "weighted-F1"))
    assert lines[0] == f"| Loss | {columns} |"
    mse = "52.50 ± 3.54 | 42.00 ± 2.83 | 42.00 ± 2.83"  # the same F1 values given as macro and weighted
    assert lines[2] == f"| MSE | {mse} | {mse} |"
    assert lines[3].startswith("| MSE + wCL | 72.50 ± 3.54 | 61.00 ± 1.41 |")
    assert "macro-F1" in lines[-1]
    assert "2 seeds" in lines[-1]


def test_ablation_layout() -> None:
    key = GridKey(
        dataset="LUS", backbone="tsm_resnet18", combine="difference", loss="mse+cl", classifier="mlp"
    )
    accuracy, f1 = MeanStd(mean=0.5805, std=0.0), MeanStd(mean=0.5754, std=0.0)
    row = SummaryRow(key=key, n_seeds=1, accuracy=accuracy, macro_f1=f1, weighted_f1=f1)
    results = AblationResults(
        datasets=[_dataset("LUS")], losses=["mse+cl"], seeds=[0], cells=[], summary=[row],
        backbones=["tsm_resnet18"], combines=["difference"], classifiers=["mlp"],
    )  # fmt: skip
    text = render_ablation(results)
    assert "| Backbone | Combine | Loss | Classifier | Accuracy | macro-F1 | weighted-F1 |" in text
    assert "| tsm_resnet18 | difference | MSE + CL | mlp | 58.05 ± n/a | 57.54 ± n/a |"  # one seed in text


def test_regression_verdict_needs_the_gain_interval_above_zero() -> None:
    base = {"epoch": 3, "last_epoch": 5, "last_val_mae": 33.0, "val_mae": 30.0, "baseline_mae": 60.0}
    good = base | {"mae_gain_low": 20.0, "mae_gain_high": 40.0, "val_r": 0.8}
    noisy = base | {"mae_gain_low": -5.0, "mae_gain_high": 45.0, "val_r": 0.2}  # 50% lower, but noise
    worse = base | {"val_mae": 61.0, "mae_gain_low": -3.0, "mae_gain_high": -0.5, "val_r": None}
    unknown = {"val_mae": 30.0, "baseline_mae": 60.0}  # no val predictions to bootstrap
    rows = [(["LUS", "mse"], good), (["LUS", "cl"], noisy), (["LUS", "wcl"], worse), (["LUS", "x"], unknown)]
    text = regression_section(rows, ["dataset", "loss"])
    assert (
        "| LUS | mse | 3 / 5 | 30.000 | 33.000 | 60.000 | 50.0% | [20.000, 40.000] | 0.800 | clearly |"
        in text
    )
    assert text.count("| **not shown** |") == 1
    assert (
        "| LUS | wcl | 3 / 5 | 61.000 | 33.000 | 60.000 | -1.7% | [-3.000, -0.500] | n/a | **worse** |"
        in text
    )
    assert "| LUS | x | n/a / n/a | 30.000 | n/a | 60.000 | 50.0% | n/a | n/a | n/a |" in text
    assert text.startswith("1 of 4 encoders beat")
    assert "1 recorded no val predictions" in text
    cells = [_cell("LUS", "mse", s, good) for s in (0, 1)]
    cells.append(cells[0].model_copy(update={"regression": good}))  # a second classifier on the same encoder
    assert regression_summary(cells).startswith("All 2 encoders clearly beat")
    assert regression_summary([_cell("LUS", "mse", 0, noisy)]).startswith("0 of 1 encoders beat")


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        (["phantom"], "Data source: PHANTOM"),
        (["real", "real"], "Data source: REAL"),
        (["phantom", "real"], "Data source: MIXED"),
    ],
)
def test_source_banner(sources: list[str], expected: str) -> None:
    banner = source_banner([Source(f"d{i}", "m.csv", s) for i, s in enumerate(sources)])
    assert banner.startswith(f"> **{expected}")


def test_loss_labels() -> None:
    assert [loss_label(n) for n in ("mse", "mse+cl", "mse+wcl", "mse+rnc")] == [
        "MSE",
        "MSE + CL",
        "MSE + wCL",
        "MSE + rnc",
    ]


def _classification_run(tmp_path: Path) -> Path:
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    best = {"val_mae": 12.5, "baseline_mae": 25.0, "val_rmse": 15.0, "baseline_rmse": 30.0, "val_r": 0.9}
    (encoder / "metrics.json").write_text(json.dumps({"best": best, "train_mean": 5.0}))
    (encoder / "val_predictions.csv").write_text(  # MAE 12.5 against the mean's 25, for each of 3 patients
        "scan_id,patient_id,score,predicted\na,P1,30,17.5\nb,P2,30,42.5\nc,P3,30,17.5\n"
    )
    per_class = {
        n: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
        for n in ("stable", "improved", "deteriorated")
    }
    metrics: dict[str, Any] = {
        "kind": "classification",
        "encoder_run": str(encoder),
        "manifest": "/data/real.csv",
        "data_source": "real",
        "combine": "difference",
        "head": "mlp",
        "test": {
            "n": 6, "n_patients": 2, "accuracy": 0.5, "macro_f1": 0.5, "weighted_f1": 0.5,
            "ci": {"accuracy": [0.25, 0.75], "macro_f1": [0.2, 0.7]},
            "per_class": per_class, "confusion": [[1, 1, 0], [0, 1, 1], [1, 0, 1]],
        },
        "pair_counts": {
            "test": {"deteriorated": 2, "stable": 2, "improved": 2},
            "train": {"deteriorated": 5, "stable": 1, "improved": 4},
        },
    }  # fmt: skip
    run = tmp_path / "cls"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics, sort_keys=True))
    (run / "config.yaml").write_text("seed: 3\noptim:\n  epochs: 7\n")
    return run


def test_report_of_a_classification_run(tmp_path: Path) -> None:
    text = write_report(_classification_run(tmp_path)).read_text()
    assert text.startswith("# LEARNER report: cls\n\n> **Data source: REAL**")
    assert "- pretraining epochs (`optim.epochs`): 7" in text
    assert "| classifier | 50.00 [25.00, 75.00] | 50.00 [20.00, 70.00] | 50.00 | 6 | 2 |" in text
    classes = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| deteriorated |")]
    assert classes == ["| deteriorated", "| deteriorated"]  # per-class row and confusion row
    per_class_rows = [
        line
        for line in text.splitlines()
        if line.startswith(("| deteriorated | 50", "| stable | 50", "| improved | 50"))
    ]
    assert [row.split(" | ")[0] for row in per_class_rows] == ["| deteriorated", "| stable", "| improved"]
    assert "| stable | 0 | 1 | 1 |" in text  # confusion row: true stable
    # both intervals include chance (1/3 accuracy, 1/3 macro-F1 for 2/2/2 pairs): said in words (issue 23)
    assert "test pairs: every 95% interval of accuracy and of macro-F1 includes chance" in text
    assert "The encoder clearly beats" in text
    assert text.index("| train | 5 | 1 | 4 | 10 |") < text.index(
        "| test | 2 | 2 | 2 | 6 |"
    )  # train, val, test order
    assert "Δ predicted score" not in text  # a run written before the regressor's own answer was recorded


def test_classification_report_shows_the_regressors_own_answer(tmp_path: Path) -> None:
    run = _classification_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    ci = {"accuracy": [0.5, 1.0], "macro_f1": [0.3, 0.9]}
    delta = {"accuracy": 2 / 3, "macro_f1": 0.6, "weighted_f1": 0.62, "ci": ci}
    metrics["answers"] = {"delta_score": metrics["test"] | delta}
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = write_report(run).read_text()
    lines = text.splitlines()
    classifier = lines.index("| classifier | 50.00 [25.00, 75.00] | 50.00 [20.00, 70.00] | 50.00 | 6 | 2 |")
    assert (
        lines[classifier + 1]
        == "| *Δ predicted score* | 66.67 [50.00, 100.00] | 60.00 [30.00, 90.00] | 62.00 | 6 | 2 |"
    )
    assert "a pair classifier on that encoder should beat it" in text


def test_report_of_something_else_is_refused(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps({"rows": {}}))  # no run learner writes
    with pytest.raises(RunDirError, match=r"no results\.json or metrics\.json"):
        write_report(tmp_path)


def test_undefined_numbers_read_n_a() -> None:
    from learner.report.tables import interval, interval_plain, percent, plain

    assert [plain(0.12345), plain(None), plain(float("nan"))] == ["0.123", "n/a", "n/a"]
    assert [interval_plain(-0.5, 0.25), interval_plain(None, 0.2)] == ["[-0.500, 0.250]", "n/a"]
    assert [percent(0.7246), percent(None), interval(0.1, float("inf"))] == ["72.46", "n/a", "n/a"]


def test_phantom_cohort_is_described_against_table_1() -> None:
    """The report says, from the cohort's own record, how its LUS split compares with the paper's."""
    record = {"kind": "lus", "version": 3, "patients": [160, 44, 50], "seed": 0, "size": 32, "table": "m.csv"}
    described = phantom_cohort(record)
    paper = "/".join(map(str, TABLE_1_PATIENTS))
    assert described.startswith(f"160/44/50 train/val/test patients (the paper's Table 1: {paper}; 50 test ")
    assert "narrower Fig. 1 intervals" in described
    assert "m.csv" not in described
    assert "more test" not in phantom_cohort(record | {"patients": list(TABLE_1_PATIENTS)})
    assert phantom_cohort(record | {"patients": [8, 4, 2]}).startswith("8/4/2 train/val/test patients")
    mri = {"kind": "mri", "version": 1, "patients": [80, 40, 40], "seed": 0}
    assert phantom_cohort(mri) == "kind mri, version 1, patients [80, 40, 40], seed 0"


def _pretraining_run(tmp_path: Path, *, kind: bool) -> Path:
    run = tmp_path / "enc"
    run.mkdir()
    best = {
        "epoch": 2,
        "val_mae": 10.0,
        "baseline_mae": 20.0,
        "val_rmse": 12.0,
        "baseline_rmse": 24.0,
        "val_r": 0.7,
    }
    metrics = {"best": best, "last": best, "train_mean": 5.0, "scans": {"train": 8, "val": 4, "skipped": 0}}
    (run / "metrics.json").write_text(
        json.dumps(metrics | ({"kind": "pretraining", "data_source": "phantom"} if kind else {}))
    )
    (run / "metrics.csv").write_text(
        "epoch,step,lr,train_loss,val_mae,baseline_mae\n1,2,0.0005,1.5,15.0,20.0\n2,4,0.0,1.2,10.0,20.0\n"
    )
    (run / "config.yaml").write_text("data:\n  manifest: m.csv\noptim:\n  epochs: 2\n")
    # four val patients, train mean 5: every one predicted 10 closer than the mean, so the gain is 10
    (run / "val_predictions.csv").write_text(
        "scan_id,patient_id,score,predicted\na,P1,25,15\nb,P2,25,35\nc,P3,25,15\nd,P4,25,35\n"
    )
    return run


def test_report_of_a_pretraining_run(tmp_path: Path, cli) -> None:
    run = _pretraining_run(tmp_path, kind=True)
    code, _, err = cli(["report", str(run)])
    assert code == 0, err
    text = (run / "REPORT.md").read_text()
    assert "Data source: PHANTOM" in text
    assert "| enc | 2 / 2 | 10.000 | 10.000 | 20.000 | 50.0% | [10.000, 10.000] | 0.700 | clearly |" in text
    assert "![training curves](training_curves.png)" in text
    assert "| 2 | 0 | 1.2 | 10 | 20 |" in text  # epoch, lr, train loss, val MAE, baseline
    assert (run / "training_curves.png").read_bytes().startswith(b"\x89PNG")


def test_a_run_from_before_0_1_gets_a_one_line_error(tmp_path: Path, cli) -> None:
    run = _pretraining_run(tmp_path, kind=False)  # metrics.json without its kind: no guessing (issue 19)
    code, _, err = cli(["report", str(run)])
    assert code != 0
    assert err.strip().count("\n") == 0
    assert "no results.json or metrics.json of a reportable run" in err


def test_training_curves_write_an_svg_beside_the_png_unless_vector_figures_is_off(tmp_path: Path) -> None:
    from learner.training.curves import plot_training_curves

    history = [{"epoch": e, "train_loss": 1.0 / e, "val_mae": 2.0, "baseline_mae": 3.0} for e in (1, 2)]
    for folder, vector, names in (("both", True, ["c.png", "c.svg"]), ("png", False, ["c.png"])):
        (tmp_path / folder).mkdir()
        plot_training_curves(history, tmp_path / folder / "c.png", vector=vector)
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == names
    assert (tmp_path / "both" / "c.svg").read_text().lstrip().startswith("<?xml")
