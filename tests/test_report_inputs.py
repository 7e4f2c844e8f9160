"""`learner report` on results files it cannot read (one line naming the file, exit 2), on the folder `.`,
and sentences that agree with the numbers printed beside them (ties, rounding, undefined losses)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from learner.evaluation.baselines import ReferenceRow
from learner.experiments.results import (
    Cell,
    DatasetSummary,
    GridKey,
    MeanStd,
    SummaryRow,
    Table3Results,
)
from learner.report import write_report
from learner.report.prose import majority_statement
from learner.report.sections import regression_section

TEST_COUNTS = {"deteriorated": 1, "stable": 4, "improved": 1}
MAJORITY_ACC, MAJORITY_F1 = 4 / 6, 2 * 4 / (4 + 6) / 3  # always "stable": its F1 over the 3 classes


def _answer(accuracy: float, macro_f1: float) -> dict[str, Any]:
    return {
        "n": 6, "n_patients": 3, "accuracy": accuracy, "macro_f1": macro_f1, "weighted_f1": 0.5,
        "ci": {"accuracy": [0.2, 0.9], "macro_f1": [0.1, 0.8]},
    }  # fmt: skip


def _classification_metrics(encoder: str) -> dict[str, Any]:
    per_class = {n: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for n in TEST_COUNTS}
    return {
        "kind": "classification", "encoder_run": encoder, "manifest": "m.csv", "data_source": "real",
        "combine": "difference", "head": "mlp",
        "test": _answer(0.5, 0.4) | {"per_class": per_class, "confusion": [[0, 1, 0], [1, 2, 1], [0, 1, 0]]},
        "pair_counts": {"test": TEST_COUNTS},
    }  # fmt: skip


def _ssl_run(folder: Path, epochs: str) -> Path:
    """A self-supervised pretraining run: no val MAE, its reading comes from metrics.csv."""
    folder.mkdir()
    best = {"epoch": 2, "val_loss": 1.5}
    metrics = {"kind": "pretraining", "data_source": "real", "best": best, "last": best}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text("data:\n  manifest: m.csv\n")
    (folder / "metrics.csv").write_text(
        "epoch,train_loss,val_loss,val_effective_rank,val_embedding_std\n" + epochs
    )
    return folder


BAD_FILES = {
    "not json": (
        "results.json",
        "{not json",
        r"results\.json: not a run's results file of this version \(not JSON",
    ),
    "not an object": (
        "results.json",
        "[1, 2]",
        r"results\.json: not a run's results file .*\(a list, not a JSON",
    ),
    "older classification": (
        "metrics.json",
        json.dumps({k: v for k, v in _classification_metrics("enc").items() if k != "head"}),
        r"metrics\.json: not a classification results file of this version \(no 'head'\)",
    ),
    "classification answer lacks a key": (
        "metrics.json",
        json.dumps(_classification_metrics("enc") | {"answers": {"classifier_em": {"accuracy": 0.5}}}),
        r"metrics\.json: not a classification results file .*\(no 'answers\.classifier_em\.macro_f1'\)",
    ),
    "older ceiling": (
        "metrics.json",
        json.dumps({"kind": "ceiling", "rows": [{"label": "oracle"}]}),
        r"metrics\.json: not a ceiling results file of this version \(",
    ),
}


@pytest.mark.parametrize("form", list(BAD_FILES))
def test_a_results_file_this_version_cannot_read_is_one_line_naming_it(
    tmp_path: Path, cli, form: str
) -> None:
    name, text, message = BAD_FILES[form]
    (tmp_path / name).write_text(text)
    code, _, err = cli(["report", str(tmp_path)])
    assert code == 2
    assert err.startswith("error: "), err
    assert err.strip().count("\n") == 0, err
    assert str(tmp_path / name) in err
    assert re.search(message, err), err
    assert not (tmp_path / "REPORT.md").exists()


def test_an_empty_metrics_csv_cell_is_one_line_naming_the_line_and_column(tmp_path: Path, cli) -> None:
    run = _ssl_run(tmp_path / "ssl", "1,2.0,2.0,5.0,1.0\n2,1.5,,4.0,0.9\n")
    code, _, err = cli(["report", str(run)])
    assert code == 2
    assert err.strip() == (
        f"error: {run / 'metrics.csv'}: not a pretraining results file of this version (line 3, column "
        "'val_loss': '' is not a number)"
    )


def test_report_of_the_current_folder_is_titled_with_its_name(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "enc"
    run.mkdir()
    best = {"epoch": 2, "val_mae": 10.0, "baseline_mae": 20.0, "val_r": 0.7}
    metrics = {"kind": "pretraining", "data_source": "real", "best": best, "last": best}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.yaml").write_text("data:\n  manifest: m.csv\n")
    (run / "val_predictions.csv").write_text(
        "scan_id,patient_id,score,predicted\na,P1,25,15\nb,P2,25,35\nc,P3,25,15\nd,P4,25,35\n"
    )
    monkeypatch.chdir(run)
    code, _, err = cli(["report", "."])
    assert code == 0, err
    text = (run / "REPORT.md").read_text()
    assert text.startswith("# LEARNER report: enc\n")
    assert "\n| enc | 2 / " in text  # the regression row names the run, not ""


def test_the_majority_sentence_says_which_answers_tie_it(tmp_path: Path) -> None:
    """The transductive answers often collapse onto the majority class: the table shows them equal to it,
    and so must the sentence under it."""
    run = tmp_path / "cls"
    run.mkdir()
    metrics = _classification_metrics(str(tmp_path / "no-encoder"))
    metrics["answers"] = {
        "classifier_em": _answer(MAJORITY_ACC, MAJORITY_F1),
        "delta_score": _answer(0.3, 0.35),
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = write_report(run).read_text()
    assert "| *always-majority (stable)* | 66.67 | 26.67 |" in text
    assert (
        "| *classifier + EM test prior (transductive)* | 66.67 [20.00, 90.00] | 26.67 [10.00, 80.00]" in text
    )
    assert (
        "Answering 'stable' for every pair scores 66.67% accuracy, above every model. Accuracy rewards "
        "answering the commonest class; macro-F1 weighs each class equally, and there the constant answer "
        "scores 26.67%, below every model. Of the 2 other answers to these pairs (not counted among the "
        "models), on accuracy 1 scores below it (Δ predicted score) and 1 equals it (classifier + EM test "
        "prior (transductive)); on macro-F1 1 equals it (classifier + EM test prior (transductive)) and 1 "
        "scores above it (Δ predicted score)." in text
    )


def test_the_grid_sentence_names_the_answer_rows_that_tie_the_majority(tmp_path: Path) -> None:
    key = GridKey(dataset="LUS", loss="mse")
    cell = Cell(
        key=key, seed=0, dir="LUS/mse/seed-0", clips_per_scan=1, accuracy=0.5, macro_f1=0.4, weighted_f1=0.5,
        ci={"accuracy": (0.2, 0.9), "macro_f1": (0.1, 0.8)}, n_test_pairs=6, encoder_fingerprint="",
        pair_counts={"test": TEST_COUNTS}, regression={"val_mae": 10.0, "baseline_mae": 20.0},
    )  # fmt: skip
    tie = {"accuracy": MeanStd(mean=MAJORITY_ACC, std=0.0), "macro_f1": MeanStd(mean=MAJORITY_F1, std=0.0)}
    row = SummaryRow(
        key=key, n_seeds=1, accuracy=MeanStd(mean=0.5, std=0.0), macro_f1=MeanStd(mean=0.4, std=0.0),
        weighted_f1=MeanStd(mean=0.5, std=0.0), answers={"classifier_bbse": tie},
    )  # fmt: skip
    dataset = DatasetSummary(
        name="LUS", manifest="m.csv", scale="sf", scans=0, patients=0, data_source="real", phantom=None
    )
    results = Table3Results(
        datasets=[dataset], losses=["mse"], seeds=[0], cells=[cell], summary=[row], figures={},
        baseline_loss="mse", comparisons={},
    )  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(results.to_json()))
    text = write_report(tmp_path).read_text()
    assert "| *classifier + BBSE test prior (transductive), MSE* | 66.67 ± n/a | 26.67 ± n/a |" in text
    assert (
        "Of the other answer to these pairs (not counted among the models), on accuracy 1 equals it "
        "(classifier + BBSE test prior (transductive), MSE); on macro-F1 1 equals it (classifier + BBSE test "
        "prior (transductive), MSE)." in text
    )


def test_ties_are_judged_as_the_table_prints_them() -> None:
    share = 0.85030  # always "stable": its weighted-F1 is share · 2·share / (share + 1) (baselines)
    majority = ReferenceRow(share, 0.30640, share * 2 * share / (share + 1), "always stable")
    text = majority_statement({"MSE": (0.70, 0.306401)}, majority)  # 30.64 both, as the table prints them
    assert text.endswith("and there the constant answer scores 30.64%, equal to MSE.")
    others = majority_statement({"MSE": (0.70, 0.5)}, majority, {"EM": (0.850301, 0.5)})
    assert others.endswith("on accuracy 1 equals it (EM); on macro-F1 1 scores above it (EM).")


def test_clearly_is_decided_on_the_reduction_the_row_prints() -> None:
    """1 − 45.02/50 = 9.96%, printed 10.0%: the row's verdict and the sentence follow the printed value."""
    quality = {"val_mae": 45.02, "baseline_mae": 50.0, "mae_gain_low": 1.0, "mae_gain_high": 9.0}
    text = regression_section([(["LUS"], quality)], ["dataset"])
    assert "| 10.0% | [1.000, 9.000] | n/a | clearly |" in text
    assert text.startswith("The encoder clearly beats the predict-the-train-mean baseline")


def test_the_self_supervised_reading_says_whole_epochs_and_never_nan_percent(tmp_path: Path, cli) -> None:
    run = _ssl_run(tmp_path / "ssl", "1,2.0,2.0,5.0,1.0\n2,1.6,1.5,4.0,0.8\n3,1.4,nan,3.0,0.5\n")
    code, _, err = cli(["report", str(run)])
    assert code == 0, err
    text = (run / "REPORT.md").read_text()
    assert "The std fell from 1.000 at epoch 1: the embeddings are drifting towards collapse." in text
    assert "epoch 1.0" not in text
    assert "nan%" not in text
    assert (
        "The val loss went from 2 at epoch 1 to nan at epoch 3: whether it levelled off cannot be told."
        in text
    )
