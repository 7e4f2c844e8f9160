"""Honest small-sample output (issue 13): reference rows, degenerate intervals, warnings, generated prose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score

from learner.data.scales import CLASS_NAMES
from learner.evaluation.baselines import chance_row, majority_row
from learner.evaluation.metrics import PairedDifference, classification_metrics, small_sample_warnings
from learner.experiments.grid import summarise
from learner.experiments.results import (
    METRICS,
    Cell,
    DatasetSummary,
    GridKey,
    MeanStd,
    PairAnswer,
    SummaryRow,
    Sweep,
    SweepResults,
    Table3Results,
)
from learner.report import write_report
from learner.report.prose import class_mix, comparison_verdict, majority_statement
from learner.report.tables import format_mean_std, interval, render_table3

COUNTS = {"deteriorated": 5, "stable": 42, "improved": 10}  # the demo's 57 test pairs
REGRESSION: dict[str, Any] = {
    "val_mae": 1.0, "baseline_mae": 2.0, "val_rmse": 1.0, "baseline_rmse": 2.0, "val_r": 0.5
}  # fmt: skip


def _labels(counts: dict[str, int]) -> np.ndarray:
    return np.repeat([CLASS_NAMES.index(n) for n in counts], list(counts.values()))


@pytest.mark.parametrize("counts", [COUNTS, {"deteriorated": 0, "stable": 3, "improved": 1}])
def test_majority_row_equals_scikit_learn_on_a_constant_answer(counts: dict[str, int]) -> None:
    truth = _labels(counts)
    answer = np.full_like(truth, CLASS_NAMES.index("stable"))
    row = majority_row(counts)
    assert row.answer == "always stable"
    assert row.accuracy == pytest.approx(accuracy_score(truth, answer))
    assert row.macro_f1 == pytest.approx(f1_score(truth, answer, average="macro", zero_division=0))
    assert row.macro_f1 == pytest.approx(classification_metrics(truth, answer)["macro_f1"])
    assert row.weighted_f1 == pytest.approx(f1_score(truth, answer, average="weighted", zero_division=0))


@pytest.mark.parametrize("counts", [COUNTS, {"deteriorated": 0, "stable": 3, "improved": 1}])
def test_chance_row_is_the_f1_of_the_expected_confusion_matrix(counts: dict[str, int]) -> None:
    """Each pair answered once with every class is the expected confusion matrix of a uniform guess (×3);
    macro-F1 averages the classes of the truth, as every model's does."""
    truth = np.repeat(_labels(counts), 3)
    answer = np.tile([0, 1, 2], len(truth) // 3)
    row = chance_row(counts)
    assert row.accuracy == pytest.approx(1 / 3)
    assert row.macro_f1 == pytest.approx(classification_metrics(truth, answer)["macro_f1"])
    labels = np.unique(truth)
    assert row.macro_f1 == pytest.approx(f1_score(truth, answer, labels=labels, average="macro"))
    assert row.weighted_f1 == pytest.approx(f1_score(truth, answer, average="weighted"))


def test_degenerate_spreads_and_intervals_read_n_a() -> None:
    assert format_mean_std(MeanStd(mean=0.6364, std=0.0), 1) == "63.64 ± n/a"  # one seed
    assert format_mean_std(MeanStd(mean=0.6364, std=0.0), 3) == "63.64 ± n/a"  # zero variance
    assert format_mean_std(MeanStd(mean=0.6364, std=0.013), 3) == "63.64 ± 1.30"
    assert interval(0.5, 0.5) == "n/a"  # one patient
    assert interval(0.25, 0.75) == "[25.00, 75.00]"


NAN = float("nan")


@pytest.mark.parametrize(
    ("diff", "expected"),
    [
        (
            PairedDifference(-0.047, -0.09, 0.01, 0.02, 3),
            "CL did not beat MSE on macro-F1: Δ −4.70 points, 95% CI [−9.00, +1.00] includes 0",
        ),
        (
            PairedDifference(0.05, 0.01, 0.09, 0.02, 3),
            "CL beat MSE on macro-F1: Δ +5.00 points, 95% CI [+1.00, +9.00] excludes 0",
        ),
        (
            PairedDifference(-0.05, -0.09, -0.01, 0.02, 3),
            "CL was worse than MSE on macro-F1: Δ −5.00 points, 95% CI [−9.00, −1.00] excludes 0",
        ),
        (
            PairedDifference(0.05, NAN, NAN, NAN, 1),
            "CL vs MSE on macro-F1: Δ +5.00 points from 1 seed(s), no interval: cannot tell",
        ),
    ],
)
def test_comparison_verdicts_follow_the_interval(diff: PairedDifference, expected: str) -> None:
    assert comparison_verdict("CL", "MSE", "macro-F1", diff) == expected


def test_small_sample_warnings() -> None:
    assert small_sample_warnings({"n_patients": 5}, COUNTS) == []
    assert (
        small_sample_warnings({"n_patients": 5, "n_boot": 100, "ci_resamples": {"macro_f1": 100}}, COUNTS)
        == []
    )
    few, missing = small_sample_warnings({"n_patients": 2}, {"deteriorated": 0, "stable": 3, "improved": 1})
    assert "2 patient(s), fewer than 5" in few
    assert missing.startswith("no test pair is deteriorated")
    (short,) = small_sample_warnings(
        {"n_patients": 9, "n_boot": 100, "ci_resamples": {"macro_f1": 61}}, COUNTS
    )
    assert short.startswith("macro-F1's interval rests on 61 of 100 patient resamples")


def test_majority_statement_says_when_the_constant_answer_wins_accuracy() -> None:
    majority = majority_row(COUNTS)
    text = majority_statement({"MSE": (0.70, 0.45), "MSE + CL": (0.75, 0.50)}, majority)
    assert text.startswith(
        "Answering 'stable' for every pair scores 73.68% accuracy, above 1 of 2 models (MSE)"
    )
    assert "macro-F1 weighs each class equally" in text
    assert "28.28%, below every model" in text
    assert majority_statement({"MSE": (0.80, 0.5)}, majority).endswith("matches or beats that on accuracy.")
    assert class_mix(COUNTS) == "42 of 57 test pairs (73.7%) are stable, 10 improved, 5 deteriorated"


def _cell(loss: str, seed: int, accuracy: float, macro_f1: float) -> Cell:
    return Cell(
        key=GridKey(dataset="LUS", loss=loss), seed=seed, dir=f"LUS/{loss}/seed-{seed}", clips_per_scan=1,
        accuracy=accuracy, macro_f1=macro_f1, weighted_f1=0.5,
        ci={"accuracy": (accuracy, accuracy), "macro_f1": (0.1, 0.9)},
        n_test_pairs=57, regression=REGRESSION, pair_counts={"test": COUNTS}, encoder_fingerprint="",
    )  # fmt: skip


def _results(tmp_path: Path) -> Table3Results:
    cells = [_cell("mse", 0, 0.70, 0.45), _cell("mse+cl", 0, 0.65, 0.40)]
    for cell in cells:
        folder = tmp_path / cell.dir / "classifier"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"test": {"n_patients": 3}}))
    summary = [
        SummaryRow(
            key=c.key,
            n_seeds=1,
            **{m: MeanStd(mean=c.metric(m), std=0.0) for m in METRICS},
        )
        for c in cells
    ]
    dataset = DatasetSummary(
        name="LUS", manifest="m.csv", scale="sf", scans=0, patients=0, data_source="real", phantom=None
    )
    diff = PairedDifference(-0.05, float("nan"), float("nan"), float("nan"), 1)
    return Table3Results(
        datasets=[dataset], losses=["mse", "mse+cl"], seeds=[0], cells=cells, summary=summary, figures={},
        baseline_loss="mse", comparisons={"LUS": {"mse+cl": {"accuracy": diff, "macro_f1": diff}}},
    )  # fmt: skip


def test_table3_has_reference_rows_and_one_seed_reads_n_a(tmp_path: Path) -> None:
    lines = render_table3(_results(tmp_path)).splitlines()
    assert lines[2] == "| MSE | 70.00 ± n/a | 45.00 ± n/a | 50.00 ± n/a |"
    assert lines[4] == "| *always-majority (stable)* | 73.68 ± n/a | 28.28 ± n/a | 62.52 ± n/a |"
    assert lines[5].startswith("| *chance (uniform)* | 33.33 ± n/a |")


def test_experiment_report_words_come_from_the_numbers(tmp_path: Path) -> None:
    results = _results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps(results.to_json()))
    text = write_report(tmp_path).read_text()
    assert "± 0.00" not in text
    assert "[70.00, 70.00]" not in text
    assert "LUS, seed 0: the test set has 3 patient(s), fewer than 5" in text
    assert "42 of 57 test pairs (73.7%) are stable" in text
    assert "above every model (MSE, MSE + CL)" not in text  # "every model" is said as such
    assert "scores 73.68% accuracy, above every model" in text
    assert (
        "- LUS: MSE + CL vs MSE on accuracy: Δ −5.00 points from 1 seed(s), no interval: cannot tell" in text
    )
    assert "most intra-patient pairs are stable" not in text  # no fixed claim about the data


def test_every_answer_is_set_against_always_majority_seed_by_seed(tmp_path: Path) -> None:
    cells = [_cell("mse", 0, 0.70, 0.45), _cell("mse", 1, 0.60, 0.40)]
    answer = PairAnswer(accuracy=0.80, macro_f1=0.33, weighted_f1=0.5, ci={})
    cells[1] = cells[1].model_copy(update={"answers": {"delta_score": answer}})  # seed 0 has no such answer
    results = _results(tmp_path).model_copy(update={"cells": cells, "seeds": [0, 1]})  # makes seed 0 folder
    folder = tmp_path / cells[1].dir / "classifier"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"test": {"n_patients": 5}}))
    (tmp_path / "results.json").write_text(json.dumps(results.to_json()))
    section = write_report(tmp_path).read_text().split("## Each answer against always-majority")[1]
    # majority (42 of 57 stable): accuracy 42/57; macro-F1 the stable class's F1 2·42/99 over the 3 classes
    majority_acc, majority_f1 = 42 / 57, 2 * 42 / (42 + 57) / 3
    acc = [0.70 - majority_acc, 0.60 - majority_acc]
    f1 = [0.45 - majority_f1, 0.40 - majority_f1]
    half = [stats.t.ppf(0.975, 1) * np.std(d, ddof=1) / np.sqrt(2) for d in (acc, f1)]
    expected = [
        f"{100 * np.mean(d):.2f} [{100 * (np.mean(d) - h):.2f}, {100 * (np.mean(d) + h):.2f}]"
        for d, h in zip((acc, f1), half, strict=True)
    ]
    assert f"| LUS | MSE | pair classifier | {expected[0]} | {expected[1]} | 2 |" in section
    assert "Δ predicted score" not in section  # an answer only some seeds have is not compared


def test_classification_report_warns_and_has_reference_rows(tmp_path: Path) -> None:
    metrics: dict[str, Any] = {
        "kind": "classification", "encoder_run": str(tmp_path / "none"), "manifest": "m.csv",
        "data_source": "real", "combine": "difference", "head": "mlp",
        "test": {
            "n": 4, "n_patients": 1, "accuracy": 0.75, "macro_f1": 0.4, "weighted_f1": 0.5,
            "ci": {"accuracy": [0.75, 0.75], "macro_f1": [0.4, 0.4]}, "n_boot": 1000,
            "ci_resamples": {"accuracy": 1000, "macro_f1": 632},
            "per_class": {
                "deteriorated": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
                "improved": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1},
            },
            "confusion": [[0, 0, 0], [0, 3, 0], [0, 1, 0]],
        },
        "pair_counts": {"test": {"deteriorated": 0, "stable": 3, "improved": 1}},
    }  # fmt: skip
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    text = write_report(tmp_path).read_text()
    assert "| classifier | 75.00 n/a | 40.00 n/a | 50.00 | 4 | 1 |" in text
    assert "| *always-majority (stable)* | 75.00 | 42.86 | 64.29 |" in text  # sklearn: weighted 0.6429
    assert "1 patient(s), fewer than 5" in text
    assert "no test pair is deteriorated" in text
    assert "macro-F1's interval rests on 632 of 1000 patient resamples" in text
    assert "every model matches or beats that on accuracy" in text
    assert "| deteriorated | 0.00 | n/a | n/a (no test pair) | 0 |" in text  # left out of macro-F1
    assert "| improved | 0.00 | 0.00 | 0.00 | 1 |" in text  # present, never found: a real 0


def test_equal_values_over_seeds_print_n_a_despite_float_noise() -> None:
    from learner.experiments.results import MeanStd
    from learner.report.tables import format_mean_std

    values = [142 / 167] * 3  # the demo's always-"stable" accuracy: its std came out ~1e-16, "± 0.00"
    assert format_mean_std(MeanStd.over(values), 3) == "85.03 ± n/a"
    assert format_mean_std(MeanStd.over([0.5, 0.52, 0.51]), 3) == "51.00 ± 1.00"


def test_chance_and_zero_rho_statements_fire_only_when_every_interval_includes_them() -> None:
    from learner.report.prose import chance_statement, zero_rho_statement

    counts = {"deteriorated": 2, "stable": 2, "improved": 2}  # chance: accuracy 1/3, macro-F1 1/3
    wide = ((0.2, 0.6), (0.1, 0.5), counts)
    clear = ((0.5, 0.9), (0.1, 0.5), counts)  # accuracy's interval is above chance
    assert chance_statement("LUS", [wide, wide]) is not None
    assert chance_statement("LUS", [wide, clear]) is None
    assert chance_statement("LUS", [((np.nan, np.nan), (0.1, 0.5), counts)]) is None  # no bootstrap: silent
    assert zero_rho_statement("LUS", [(-0.1, 0.3), (-0.2, 0.0)]) is not None
    assert zero_rho_statement("LUS", [(-0.1, 0.3), (0.05, 0.4)]) is None


def test_sweep_rows_with_other_test_pairs_are_read_against_their_own_majority(tmp_path: Path) -> None:
    """A sweep setting that changes the pairs (data.pairs.*) has its own test set: one sentence each."""
    many_stable = {"deteriorated": 5, "stable": 90, "improved": 5}  # COUNTS: 42 of 57 stable
    same_site, all_sites = (GridKey(dataset="LUS", setting=s, loss="mse") for s in ("same_site", "all_sites"))
    cells = [
        _cell("mse", 0, 0.80, 0.40).model_copy(
            update={"key": same_site, "pair_counts": {"test": many_stable}}
        ),
        _cell("mse", 0, 0.75, 0.50).model_copy(update={"key": all_sites, "dir": "LUS/all_sites/mse/seed-0"}),
    ]
    sweep = Sweep(
        settings={"same_site": {}, "all_sites": {"data.pairs.match_site": False}}, cells=[], rows=[]
    )
    results = SweepResults(
        datasets=_results(tmp_path).datasets, losses=["mse"], seeds=[0], cells=cells,
        summary=summarise(cells), sweep=sweep,
    )  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(results.to_json()))
    text = write_report(tmp_path).read_text()
    same = majority_statement({"same_site/MSE": (0.80, 0.40)}, majority_row(many_stable))
    assert (
        f"- LUS, same_site/MSE: 90 of 100 test pairs (90.0%) are stable, 5 deteriorated, 5 improved "
        f"(seed 0). {same}\n" in text
    )
    assert "scores 90.00% accuracy, above every model" in same
    assert (
        "- LUS, all_sites/MSE: 42 of 57 test pairs (73.7%) are stable, 10 improved, 5 deteriorated "
        "(seed 0). Answering 'stable' for every pair scores 73.68% accuracy; every model matches or beats "
        "that on accuracy.\n" in text
    )
