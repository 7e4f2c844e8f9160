"""Metrics on the test intra-patient pairs (Section 3, Tables 3 and 4): pure functions on numpy arrays.

* :func:`classification_metrics` — accuracy, macro/weighted F1, per-class precision/recall/F1/support and
  the confusion matrix of the three-way health-change task (scikit-learn does the arithmetic).
* :func:`patient_bootstrap_samples` + :func:`percentile_interval` — a percentile confidence interval that
  resamples *patients*, because the pairs of one patient are correlated and must not be counted as
  independent evidence.
* :func:`paired_difference_ci` — an objective against a baseline across seeds (e.g. MSE+wCL − MSE).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from learner.data.scales import CLASS_NAMES
from learner.timing import stage

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = 3) -> dict[str, Any]:
    """Three-way health-change metrics of predicted class indices.

    Args:
        y_true: (P,) true class indices in ``[0, num_classes)`` (0 deteriorated, 1 stable, 2 improved).
        y_pred: (P,) predicted class indices, same range.
        num_classes: K; the per-class entries and the confusion matrix always cover all K classes.

    Returns:
        ``accuracy``, ``macro_f1``, ``weighted_f1`` (floats), ``per_class`` (class name → precision,
        recall, f1, support), ``confusion`` (K × K nested list, rows = true, columns = predicted) and
        ``n`` (P). Macro-F1 averages the classes that occur in ``y_true`` (:func:`true_classes`): a class
        absent from the test set adds no spurious zero, and a wrong answer costs the same whichever wrong
        class it names. Weighted-F1 weighs each class by its support, so absent classes weigh nothing. A
        class that is never predicted (or never true) gets precision (or recall) 0, not an error.
    """
    y_true, y_pred = _check_labels(y_true, y_pred, num_classes)
    labels = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    names = CLASS_NAMES if num_classes == len(CLASS_NAMES) else tuple(str(k) for k in labels)
    return {
        "n": int(y_true.size),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=list(true_classes(y_true)), average="macro", zero_division=0)
        ),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "per_class": {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(names)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def true_classes(y_true: np.ndarray) -> tuple[int, ...]:
    """The classes macro-F1 averages: those that occur in the (P,) true labels, ascending."""
    return tuple(int(k) for k in np.unique(np.asarray(y_true)))


class AdditiveMetric(ABC):
    """A bootstrap metric ``(y_true, y_pred) -> float`` that is a function of sums over pairs:
    ``from_sums(Σ_i per_pair(y_true, y_pred)[i])``.

    The bootstrap then needs only each patient's sums (G, S) and each resample's patient counts (B, G): a
    resample's sums are one matrix product, with no per-resample indexing (:func:`patient_bootstrap_samples`).
    ``from_sums`` must give exactly (bit for bit) the metric of the resample.
    """

    def __call__(self, y_true: np.ndarray, y_pred: np.ndarray) -> float:
        sums = self.per_pair(np.asarray(y_true), np.asarray(y_pred)).sum(axis=0, dtype=np.int64)
        return float(self.from_sums(sums[None])[0])

    @abstractmethod
    def per_pair(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """(P,) labels of both → (P, S) integer statistics of every pair."""

    @abstractmethod
    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        """(B, S) summed statistics of B resamples → (B,) float64 metric values."""


class Accuracy(AdditiveMetric):
    """Fraction of equal entries of two (P,) label arrays."""

    def per_pair(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return np.stack([y_true == y_pred, np.ones(len(y_true), bool)], 1)

    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        return np.asarray(sums[:, 0] / sums[:, 1], dtype=np.float64)


@dataclass(frozen=True)
class MacroF1(AdditiveMetric):
    """Macro-F1 over a fixed set of ``classes``: F1_k = 2·TP_k / (n_true_k + n_pred_k), averaged over them.

    A bootstrap must fix the set on the whole test set (:meth:`of`): a resample that re-chose it from its
    own pairs would average two classes in some resamples and three in others, mixing two different
    quantities in one interval. A resample in which one of ``classes`` has no true pair is undefined
    (NaN, left out of :func:`percentile_interval`). Computed from confusion counts with numpy, because it
    runs once per resample, where scikit-learn's input checking costs ~100× more than the arithmetic.
    """

    classes: tuple[int, ...]

    @classmethod
    def of(cls, y_true: np.ndarray) -> MacroF1:
        """Macro-F1 over the classes that occur in ``y_true`` (:func:`true_classes`)."""
        return cls(true_classes(y_true))

    def per_pair(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """(P, 3·K) one-hot of each pair's true class, predicted class and hit, over ``classes``."""
        classes = np.asarray(self.classes)
        is_true = np.asarray(y_true)[:, None] == classes  # (P, K)
        is_pred = np.asarray(y_pred)[:, None] == classes
        return np.concatenate([is_true, is_pred, is_true & is_pred], axis=1).astype(np.int64)

    def from_sums(self, sums: np.ndarray) -> np.ndarray:
        n_true, n_pred, hits = np.split(sums.astype(np.float64), 3, axis=1)  # (B, K) each
        f1 = 2 * hits / np.maximum(n_true + n_pred, 1)
        return np.where((n_true > 0).all(axis=1), f1.sum(axis=1) / len(self.classes), np.nan)


accuracy = Accuracy()
"""Accuracy of two (P,) label arrays (a bootstrap metric)."""


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 of two (P,) label arrays over the classes of ``y_true``, equal to
    :func:`classification_metrics`' ``macro_f1``. For a bootstrap pass ``MacroF1.of(y_true)`` instead,
    which keeps the whole test set's classes in every resample."""
    return MacroF1.of(y_true)(y_true, y_pred)


@stage("bootstrap")
def patient_bootstrap_samples(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray,
    metric_fn: MetricFn,
    n_boot: int,
    seed: int,
) -> np.ndarray:
    """The metric on ``n_boot`` cluster-bootstrap resamples, drawing whole patients with replacement.

    Each resample draws G patients from the G distinct ``groups`` with replacement and keeps *all* pairs
    of every drawn patient (a patient drawn twice contributes its pairs twice). The draws are one
    ``(B, G)`` array of ``rng.integers``, row b the patients of resample b. An :class:`AdditiveMetric`
    (accuracy, :class:`MacroF1`) is computed for all resamples at once from per-patient sums; any other
    ``metric_fn`` (e.g. a rank correlation) runs once per resample on its pairs.

    Args:
        y_true, y_pred: (P,) paired values handed to ``metric_fn`` (labels, or any two paired arrays).
        groups: (P,) patient id of each pair.
        metric_fn: ``(y_true_resampled, y_pred_resampled) -> float``.
        n_boot: number of resamples B.
        seed: seeds a private ``numpy.random.Generator``; the same seed gives the same resamples.

    Returns:
        (B,) float64 metric values; NaN where the metric is undefined on a resample (e.g. a rank
        correlation of a constant resample).
    """
    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    if not y_true.shape[0] == y_pred.shape[0] == groups.shape[0]:
        raise ValueError(
            f"y_true, y_pred and groups must have one entry per pair, got "
            f"{y_true.shape[0]}, {y_pred.shape[0]}, {groups.shape[0]}"
        )
    if y_true.shape[0] == 0:
        raise ValueError("cannot bootstrap an empty set of pairs")
    _, group_index = np.unique(groups, return_inverse=True)
    n_groups = int(group_index.max()) + 1
    drawn = np.random.default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))  # (B, G)
    if isinstance(metric_fn, AdditiveMetric):
        per_pair = metric_fn.per_pair(y_true, y_pred).astype(np.int64)  # (P, S)
        per_group = np.zeros((n_groups, per_pair.shape[1]), dtype=np.int64)  # (G, S)
        np.add.at(per_group, group_index, per_pair)
        counts = np.zeros((n_boot, n_groups), dtype=np.int64)  # how often resample b drew patient g
        np.add.at(counts, (np.arange(n_boot)[:, None], drawn), 1)
        return np.asarray(metric_fn.from_sums(counts @ per_group), dtype=np.float64)
    members = np.split(np.argsort(group_index, kind="stable"), np.cumsum(np.bincount(group_index))[:-1])
    values = np.empty(n_boot, dtype=np.float64)
    for b in range(n_boot):
        rows = np.concatenate([members[g] for g in drawn[b]])
        values[b] = metric_fn(y_true[rows], y_pred[rows])
    return values


def percentile_interval(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """The (alpha/2, 1 − alpha/2) quantiles of bootstrap ``values`` (B,), ignoring undefined (NaN) ones:
    with :func:`patient_bootstrap_samples`, the percentile (1 − alpha) CI that resamples patients.

    Returns ``(nan, nan)`` when there are no values (``n_boot`` 0) or none is defined.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha should be in (0, 1), got {alpha}")
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a − b`` over matched runs (seeds) and its t-based (1 − alpha) confidence interval."""

    mean: float
    low: float
    high: float
    std: float
    n: int


def paired_difference_ci(values_a: np.ndarray, values_b: np.ndarray, alpha: float = 0.05) -> PairedDifference:
    """Compare two objectives run on the same seeds: mean difference ``a − b`` and its t-interval.

    The runs are paired by position (seed i of ``a`` with seed i of ``b``), which removes the variance the
    two share through the seed (split, pairs, initialisation). With only a handful of seeds (default 3) a
    bootstrap over seeds is degenerate, so the interval is Student's t on the n differences:
    ``mean ± t_{1−alpha/2, n−1} · s / √n`` (s the sample standard deviation). With n = 1 the interval is
    undefined (NaN); with identical differences it collapses to the mean.

    Args:
        values_a, values_b: (n,) one metric value per seed for each objective.
    """
    a, b = _check_paired(values_a, values_b)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha should be in (0, 1), got {alpha}")
    diff = a - b
    n = int(diff.size)
    mean = float(diff.mean())
    if n < 2:
        return PairedDifference(mean=mean, low=float("nan"), high=float("nan"), std=float("nan"), n=n)
    std = float(diff.std(ddof=1))
    half = float(stats.t.ppf(1 - alpha / 2, df=n - 1)) * std / np.sqrt(n)
    return PairedDifference(mean=mean, low=mean - half, high=mean + half, std=std, n=n)


MIN_TEST_PATIENTS = 5
"""Below this many test patients a patient-bootstrap interval rests on too few draws to mean much."""


def small_sample_warnings(test: Mapping[str, Any], test_counts: Mapping[str, int]) -> list[str]:
    """Warnings for a test set too small to support its intervals: fewer than :data:`MIN_TEST_PATIENTS`
    patients, a class with no test pair (its F1 and recall are then undefined and left out of macro-F1),
    or a macro-F1 interval that rests on fewer resamples than were drawn (the others draw no pair of one of
    the test set's classes).

    Args:
        test: a classification's test metrics (``metrics.json["test"]``): ``n_patients`` and, where
            recorded, ``n_boot`` and ``ci_resamples`` (metric → resamples that define it).
        test_counts: class name → test pairs.
    """
    warnings = []
    n_patients = test["n_patients"]
    if n_patients < MIN_TEST_PATIENTS:
        warnings.append(
            f"the test set has {n_patients} patient(s), fewer than {MIN_TEST_PATIENTS}: its intervals rest "
            "on too few patients to mean much"
        )
    missing = [name for name, n in test_counts.items() if n == 0]
    if missing:
        warnings.append(
            f"no test pair is {', '.join(missing)}: macro-F1 averages only the classes that occur, and "
            "nothing is learned about how the model handles the missing class(es)"
        )
    n_boot, defined = test.get("n_boot", 0), test.get("ci_resamples", {}).get("macro_f1")
    if defined is not None and defined < n_boot:
        warnings.append(
            f"macro-F1's interval rests on {defined} of {n_boot} patient resamples: the others draw no pair "
            "of one of the test set's classes, so its few patients decide that class's F1"
        )
    return warnings


def _check_paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"expected two 1-D arrays of the same length, got shapes {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("expected at least one value, got empty arrays")
    return a, b


def _check_labels(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred should be (P,) arrays, got {y_true.shape} and {y_pred.shape}")
    if y_true.size == 0:
        raise ValueError("cannot compute classification metrics on zero pairs")
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.min() < 0 or values.max() >= num_classes:
            raise ValueError(
                f"{name} should hold class indices in [0, {num_classes}), got {np.unique(values)}"
            )
    return y_true.astype(np.int64), y_pred.astype(np.int64)
