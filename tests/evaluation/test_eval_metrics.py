"""Metrics against scikit-learn / scipy / hand-computed values, and the patient-level bootstrap."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_fscore_support,
)

from learner.evaluation.metrics import (
    MacroF1,
    accuracy,
    classification_metrics,
    macro_f1,
    paired_difference_ci,
    patient_bootstrap_samples,
    percentile_interval,
)


def test_confusion_and_accuracy_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 2])
    metrics = classification_metrics(y_true, y_pred)
    assert metrics["confusion"] == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # stable: precision 2/3 (3 predicted, 2 right), recall 2/3 (3 true, 2 found) -> f1 2/3
    stable = metrics["per_class"]["stable"]
    assert (stable["precision"], stable["recall"], stable["support"]) == (pytest.approx(2 / 3),) * 2 + (3,)
    improved = metrics["per_class"]["improved"]
    assert improved["precision"] == pytest.approx(0.5)
    assert improved["recall"] == pytest.approx(1.0)
    assert improved["f1"] == pytest.approx(2 / 3)
    # deteriorated f1 = 2·1·0.5/1.5 = 2/3; all three f1 are 2/3
    assert metrics["macro_f1"] == pytest.approx(2 / 3)


def test_classification_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 3, size=200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 3, size=200))
    metrics = classification_metrics(y_true, y_pred)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred)
    for k, name in enumerate(("deteriorated", "stable", "improved")):
        entry = metrics["per_class"][name]
        assert entry["precision"] == pytest.approx(precision[k])
        assert entry["recall"] == pytest.approx(recall[k])
        assert entry["f1"] == pytest.approx(f1[k])
        assert entry["support"] == support[k]
    slow_confusion = np.zeros((3, 3), dtype=int)
    for t, p in zip(y_true, y_pred, strict=True):
        slow_confusion[t, p] += 1
    assert metrics["confusion"] == slow_confusion.tolist()


def test_absent_class_is_reported_not_averaged() -> None:
    # no "improved" pair at all: its per-class entry has support 0; macro-F1 averages the 2 present classes
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 1, 1])
    metrics = classification_metrics(y_true, y_pred)
    assert metrics["per_class"]["improved"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    f1_det, f1_stable = 2 * 1 * 0.5 / 1.5, 2 * (2 / 3) * 1 / (2 / 3 + 1)
    assert metrics["macro_f1"] == pytest.approx((f1_det + f1_stable) / 2)
    with pytest.raises(ValueError, match="class indices"):
        classification_metrics(np.array([0, 3]), np.array([0, 1]))


def test_a_wrong_answer_costs_the_same_whichever_wrong_class_it_names() -> None:
    # 5 deteriorated and 40 stable test pairs, no improved; one stable pair answered wrongly
    y_true = np.array([0] * 5 + [1] * 40)
    as_improved, as_deteriorated = y_true.copy(), y_true.copy()
    as_improved[-1], as_deteriorated[-1] = 2, 0
    improved = classification_metrics(y_true, as_improved)["macro_f1"]
    # scikit-learn's default would average in a 0 for "improved" (never true) and score 0.66 here
    assert improved == pytest.approx(f1_score(y_true, as_improved, labels=[0, 1], average="macro"))
    assert improved == pytest.approx((1 + 2 * 39 / 79) / 2)
    assert classification_metrics(y_true, as_deteriorated)["macro_f1"] == pytest.approx(
        (2 * 5 / 11 + 2 * 39 / 79) / 2
    )


@pytest.mark.parametrize("seed", range(5))
def test_fast_macro_f1_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 15))  # small sets often miss a class in y_true, y_pred or both
    y_true, y_pred = rng.integers(0, 3, n), rng.integers(0, 3, n)
    assert macro_f1(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0)
    )


def test_bootstrap_resamples_whole_patients() -> None:
    sizes = {0: 5, 1: 1, 2: 3, 3: 2}
    groups = np.concatenate([np.full(n, g) for g, n in sizes.items()])
    seen: list[np.ndarray] = []

    def record(resampled_groups: np.ndarray, _: np.ndarray) -> float:
        seen.append(np.bincount(resampled_groups, minlength=4))
        return 0.0

    patient_bootstrap_samples(groups, groups, groups, record, n_boot=50, seed=0)
    size = np.array(list(sizes.values()))
    for counts in seen:
        assert np.all(counts % size == 0)  # every drawn patient brings all of its pairs
        assert (counts // size).sum() == len(sizes)  # G patients drawn per resample


def test_patient_bootstrap_is_wider_than_pair_bootstrap_for_correlated_pairs() -> None:
    # patient 0 contributes 100 identical correct pairs; 10 other patients have 2 wrong pairs each
    groups = np.concatenate([np.zeros(100, dtype=int), np.repeat(np.arange(1, 11), 2)])
    y_true = np.zeros(groups.size, dtype=int)
    y_pred = np.where(groups == 0, 0, 1)
    point = accuracy(y_true, y_pred)
    by_pair = patient_bootstrap_samples(y_true, y_pred, np.arange(groups.size), accuracy, 400, seed=1)
    pair_low, pair_high = percentile_interval(by_pair)
    low, high = percentile_interval(patient_bootstrap_samples(y_true, y_pred, groups, accuracy, 400, seed=1))
    assert pair_low <= point <= pair_high
    assert low <= point <= high
    # patient 0 is absent from ~35% of resamples (accuracy 0 then), so the patient CI reaches 0
    assert low == 0.0
    assert (high - low) > 3 * (pair_high - pair_low)


def test_bootstrap_two_patients_matches_the_exact_distribution() -> None:
    # one right pair, one wrong pair, two patients: accuracy is 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    y_true, y_pred, groups = np.array([0, 0]), np.array([0, 1]), np.array([7, 8])
    values = patient_bootstrap_samples(y_true, y_pred, groups, accuracy, n_boot=4000, seed=0)
    freq = np.array([np.mean(values == v) for v in (0.0, 0.5, 1.0)])
    np.testing.assert_allclose(freq, [0.25, 0.5, 0.25], atol=0.03)
    assert percentile_interval(
        patient_bootstrap_samples(y_true, y_pred, groups, accuracy, n_boot=4000, seed=0)
    ) == (0.0, 1.0)


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
    groups = rng.integers(0, 12, 60)
    first = percentile_interval(patient_bootstrap_samples(y_true, y_pred, groups, accuracy, 200, seed=5))
    assert first == percentile_interval(
        patient_bootstrap_samples(y_true, y_pred, groups, accuracy, 200, seed=5)
    )
    assert first != percentile_interval(
        patient_bootstrap_samples(y_true, y_pred, groups, accuracy, 200, seed=6)
    )
    assert np.isnan(
        percentile_interval(patient_bootstrap_samples(y_true, y_pred, groups, accuracy, 0, seed=5))
    ).all()


def test_paired_difference_t_interval() -> None:
    a = np.array([0.72, 0.70, 0.75])
    b = np.array([0.52, 0.55, 0.50])
    result = paired_difference_ci(a, b)
    diff = a - b
    reference = stats.ttest_1samp(diff, 0.0).confidence_interval(0.95)
    assert result.mean == pytest.approx(diff.mean())
    assert (result.low, result.high) == (pytest.approx(reference.low), pytest.approx(reference.high))
    assert result.n == 3
    single = paired_difference_ci(a[:1], b[:1])
    assert single.mean == pytest.approx(0.2)
    assert np.isnan(single.low)


Metric = Callable[[np.ndarray, np.ndarray], float]


def loop_bootstrap(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, metric: Metric, n_boot: int, seed: int
) -> np.ndarray:
    """The bootstrap as first written: per resample, draw G patients, gather their pairs, call the metric."""
    _, group_index = np.unique(groups, return_inverse=True)
    members = np.split(np.argsort(group_index, kind="stable"), np.cumsum(np.bincount(group_index))[:-1])
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(members), size=len(members))])
        values[b] = metric(y_true[rows], y_pred[rows])
    return values


@pytest.mark.parametrize("metric", [accuracy, MacroF1((0, 1)), lambda t, p: float(np.mean(t == p))])
@pytest.mark.parametrize(
    ("pairs", "patients", "classes", "seed"), [(60, 17, 3, 0), (7, 3, 2, 4), (300, 50, 3, 9), (9, 9, 3, 2)]
)
def test_vectorised_bootstrap_equals_the_per_resample_loop(
    metric: Metric, pairs: int, patients: int, classes: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.integers(0, classes, pairs), rng.integers(0, classes, pairs)
    groups = np.array([f"p{g}" for g in rng.integers(0, patients, pairs)])  # unequal pairs per patient
    got = patient_bootstrap_samples(y_true, y_pred, groups, metric, 500, seed)
    np.testing.assert_array_equal(got, loop_bootstrap(y_true, y_pred, groups, metric, 500, seed))


def sklearn_macro_f1_over(classes: list[int]) -> Metric:
    """Macro-F1 over fixed ``classes`` by scikit-learn; NaN where one of them has no true pair."""

    def metric(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        if not set(classes) <= set(y_true.tolist()):
            return float("nan")
        return float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0))

    return metric


@pytest.mark.parametrize(("pairs", "patients", "seed"), [(60, 17, 0), (25, 6, 3), (300, 50, 9)])
def test_bootstrap_macro_f1_keeps_the_test_sets_classes(pairs: int, patients: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.integers(0, 3, pairs), rng.integers(0, 3, pairs)
    groups = rng.integers(0, patients, pairs)
    metric = MacroF1.of(y_true)
    assert metric.classes == tuple(np.unique(y_true).tolist())
    got = patient_bootstrap_samples(y_true, y_pred, groups, metric, 150, seed)
    reference = loop_bootstrap(y_true, y_pred, groups, sklearn_macro_f1_over(list(metric.classes)), 150, seed)
    np.testing.assert_allclose(got, reference, rtol=1e-12, equal_nan=True)


def test_bootstrap_macro_f1_is_undefined_where_a_class_is_not_drawn() -> None:
    # 10 patients with 6 pairs each; every improved pair is patient 0's and is never predicted. A resample
    # re-choosing its classes averaged 2 classes without patient 0 and 3 with it: one interval of two numbers
    groups = np.repeat(np.arange(10), 6)
    y_true = np.where(groups == 0, 2, np.tile([0, 1, 1], 20))
    y_pred = np.where(y_true == 2, 1, y_true)
    values = patient_bootstrap_samples(y_true, y_pred, groups, MacroF1.of(y_true), 1000, seed=0)
    drawn_zero = np.array([0 in np.unique(groups[rows]) for rows in _resample_rows(groups, 1000, seed=0)])
    np.testing.assert_array_equal(np.isnan(values), ~drawn_zero)
    low, high = percentile_interval(values)
    assert high < 0.75  # improved's F1 is 0 in every defined resample: the mean over 3 classes stays low
    assert low <= macro_f1(y_true, y_pred) <= high


def _resample_rows(groups: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """The pairs of each resample, drawn as :func:`patient_bootstrap_samples` draws them."""
    _, group_index = np.unique(groups, return_inverse=True)
    members = np.split(np.argsort(group_index, kind="stable"), np.cumsum(np.bincount(group_index))[:-1])
    drawn = np.random.default_rng(seed).integers(0, len(members), size=(n_boot, len(members)))
    return [np.concatenate([members[g] for g in row]) for row in drawn]
