"""Tables 3 and 4 show macro-F1 (the headline) and weighted-F1 (the paper's "F1") side by side, the reference
rows included, each checked against scikit-learn on hand-made test pairs where the two averages differ."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from learner.data.scales import CLASS_NAMES
from learner.experiments.grid import summarise
from learner.experiments.results import (
    AblationResults,
    Cell,
    DatasetSummary,
    GridKey,
    PairAnswer,
    Table3Results,
)
from learner.report.tables import F1_NOTE, render_ablation, render_table3

COUNTS = {"deteriorated": 68, "stable": 72, "improved": 96}  # the paper's 236 LUS test pairs (Table 4)
TRUTH = np.repeat([CLASS_NAMES.index(name) for name in COUNTS], list(COUNTS.values()))
# Each seed's answers: mostly "improved", a few right elsewhere; macro- and weighted-F1 differ.
ANSWERS = {
    0: np.concatenate([np.full(60, 2), np.full(8, 0), np.full(50, 2), np.full(22, 1), np.full(96, 2)]),
    1: np.concatenate([np.full(50, 2), np.full(18, 0), np.full(60, 2), np.full(12, 1), np.full(90, 2),
                       np.full(6, 0)]),
}  # fmt: skip


def _metric(name: str, answer: np.ndarray) -> float:
    if name == "accuracy":
        return float(accuracy_score(TRUTH, answer))
    average = name.removesuffix("_f1")
    return float(f1_score(TRUTH, answer, average=average, labels=[0, 1, 2], zero_division=0))


def _cell(loss: str, seed: int, answer: np.ndarray, other: PairAnswer | None = None) -> Cell:
    metrics = {name: _metric(name, answer) for name in ("accuracy", "macro_f1", "weighted_f1")}
    return Cell(
        key=GridKey(dataset="LUS", loss=loss), seed=seed, dir=f"LUS/{loss}/seed-{seed}", clips_per_scan=1,
        ci={}, n_test_pairs=len(TRUTH), regression={}, pair_counts={"test": COUNTS}, encoder_fingerprint="",
        answers={"delta_score": other} if other else {}, **metrics,
    )  # fmt: skip


def _dataset() -> DatasetSummary:
    return DatasetSummary(
        name="LUS", manifest="m.csv", scale="sf", scans=0, patients=0, data_source="real", phantom=None
    )


def _table3(cells: list[Cell]) -> Table3Results:
    return Table3Results(
        datasets=[_dataset()], losses=["mse"], seeds=sorted({c.seed for c in cells}), cells=cells,
        summary=summarise(cells), baseline_loss="mse", comparisons={}, figures={},
    )  # fmt: skip


def _mean_std(values: list[float]) -> str:
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}"


def _row(lines: list[str], label: str) -> list[str]:
    line = next(line for line in lines if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_table3_has_macro_and_weighted_f1_columns_from_the_cells() -> None:
    text = render_table3(_table3([_cell("mse", seed, answer) for seed, answer in ANSWERS.items()]))
    lines = text.splitlines()
    assert lines[0] == "| Loss | LUS Accuracy | LUS macro-F1 | LUS weighted-F1 |"
    weighted = [_metric("weighted_f1", a) for a in ANSWERS.values()]
    macro = [_metric("macro_f1", a) for a in ANSWERS.values()]
    assert all(abs(w - m) > 0.01 for w, m in zip(weighted, macro, strict=True))  # the columns can differ
    accuracy = [_metric("accuracy", a) for a in ANSWERS.values()]
    assert _row(lines, "MSE") == [_mean_std(accuracy), _mean_std(macro), _mean_std(weighted)]


@pytest.mark.parametrize("answer", [0, 1, 2])
def test_the_papers_constant_answer_rows_are_weighted_f1(answer: int) -> None:
    """Table 4 of the paper: a constant answer on 68/72/96 pairs reads 28.81/12.89, 30.51/14.26, 40.68/23.52
    (accuracy/F1); the table's weighted-F1 column gives those F1s, its macro-F1 column does not."""
    constant = np.full(len(TRUTH), answer)
    lines = render_table3(_table3([_cell("mse", 0, constant)])).splitlines()
    accuracy, macro, weighted = (cell.removesuffix(" ± n/a") for cell in _row(lines, "MSE"))
    paper = {0: ("28.81", "12.89"), 1: ("30.51", "14.26"), 2: ("40.68", "23.52")}[answer]
    assert (accuracy, weighted) == paper
    assert macro != weighted


def test_reference_rows_have_their_own_weighted_f1() -> None:
    lines = render_table3(_table3([_cell("mse", 0, ANSWERS[0])])).splitlines()
    majority = np.full(len(TRUTH), CLASS_NAMES.index("improved"))  # 96 of 236: the majority class
    expected = [_metric(name, majority) for name in ("accuracy", "macro_f1", "weighted_f1")]
    assert _row(lines, "*always-majority (improved)*") == [f"{100 * v:.2f} ± n/a" for v in expected]
    assert expected[1] != pytest.approx(expected[2])  # always-majority's weighted-F1 is not its macro-F1
    # chance: every pair answered once with every class is the expected confusion matrix of a uniform guess
    truth, guess = np.repeat(TRUTH, 3), np.tile([0, 1, 2], len(TRUTH))
    chance_weighted = f1_score(truth, guess, average="weighted")
    assert _row(lines, "*chance (uniform)*")[2] == f"{100 * chance_weighted:.2f} ± n/a"


def test_reference_weighted_f1_over_seeds_with_other_counts() -> None:
    """Two seeds with other test sets: the reference row's weighted-F1 is the mean ± std of each seed's."""
    counts = [
        {"deteriorated": 5, "stable": 42, "improved": 10},
        {"deteriorated": 0, "stable": 3, "improved": 1},
    ]
    cells = [
        _cell("mse", seed, ANSWERS[0]).model_copy(update={"pair_counts": {"test": c}})
        for seed, c in enumerate(counts)
    ]
    lines = render_table3(_table3(cells)).splitlines()
    weighted = []
    for c in counts:
        truth = np.repeat([CLASS_NAMES.index(n) for n in c], list(c.values()))
        stable = np.full(len(truth), CLASS_NAMES.index("stable"))
        weighted.append(float(f1_score(truth, stable, average="weighted", zero_division=0)))
    assert _row(lines, "*always-majority (stable)*")[2] == _mean_std(weighted)


def test_answer_rows_show_weighted_f1_or_a_dash() -> None:
    other = PairAnswer(accuracy=0.5, macro_f1=0.3, weighted_f1=0.45, ci={})
    cells = [_cell("mse", seed, ANSWERS[seed], other) for seed in ANSWERS]
    lines = render_table3(_table3(cells)).splitlines()
    assert _row(lines, "*Δ predicted score, MSE*") == ["50.00 ± n/a", "30.00 ± n/a", "45.00 ± n/a"]
    results = _table3(cells)
    for row in results.summary:
        del row.answers["delta_score"]["weighted_f1"]  # a results file written without it
    lines = render_table3(results).splitlines()
    assert _row(lines, "*Δ predicted score, MSE*") == ["50.00 ± n/a", "30.00 ± n/a", "—"]


def test_ablation_has_both_f1_columns_and_reference_rows() -> None:
    cells = [
        _cell("mse", seed, answer).model_copy(
            update={
                "key": GridKey(
                    dataset="LUS", backbone="tsm", combine="difference", loss="mse", classifier="mlp"
                )
            }
        )
        for seed, answer in ANSWERS.items()
    ]
    results = AblationResults(
        datasets=[_dataset()], losses=["mse"], seeds=[0, 1], cells=cells, summary=summarise(cells),
        backbones=["tsm"], combines=["difference"], classifiers=["mlp"],
    )  # fmt: skip
    lines = render_ablation(results).splitlines()
    assert "| Backbone | Combine | Loss | Classifier | Accuracy | macro-F1 | weighted-F1 |" in lines
    weighted = [_metric("weighted_f1", a) for a in ANSWERS.values()]
    assert _row(lines, "tsm")[-1] == _mean_std(weighted)
    majority = np.full(len(TRUTH), CLASS_NAMES.index("improved"))
    expected = f"{100 * _metric('weighted_f1', majority):.2f} ± n/a"
    assert _row(lines, "*always-majority (improved)*")[-1] == expected


def test_the_note_says_the_papers_f1_is_weighted() -> None:
    assert 'the paper\'s "F1"' in F1_NOTE
    assert "most naturally the macro average" not in F1_NOTE
