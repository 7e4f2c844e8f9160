"""Reference rows of every classification table: what a model must beat to mean anything.

Both rows are computed from the test set's class counts alone (no model), with the same metric
definitions as :func:`learner.evaluation.metrics.classification_metrics` (macro-F1 averages the classes
that occur in the truth; weighted-F1, the paper's F1, weights each class's F1 by its share ``n_c / N``):

* **always-majority**: answer the test set's most frequent class for every pair (the best any constant
  answer can do on accuracy). Accuracy ``n_m / N``; that class's F1 is ``2·n_m / (n_m + N)``, every other
  occurring class scores 0, so weighted-F1 is ``(n_m / N)·2·n_m / (n_m + N)``.
* **chance**: answer one of the K classes uniformly at random. Expected accuracy ``1 / K``; macro-F1 is the
  F1 of the expected confusion matrix (``E[C_cj] = n_c / K``): ``F1_c = 2·n_c / (K·n_c + N)``, averaged over
  the classes that occur (weighted-F1: weighted by ``n_c / N``). It is the large-sample value, stated as
  such.

Example::

    rows = reference_rows({"deteriorated": 5, "stable": 42, "improved": 10})
    rows["majority"].accuracy  # 42 / 57
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ReferenceRow:
    """A model-free answer's test accuracy, macro-F1 and weighted-F1 (fractions); ``answer`` names what it
    answers."""

    accuracy: float
    macro_f1: float
    weighted_f1: float
    answer: str


def majority_row(counts: Mapping[str, int]) -> ReferenceRow:
    """Always answering the most frequent class of ``counts`` (class name → test pairs; ties: first)."""
    total = sum(counts.values())
    if total == 0:
        raise ValueError("no test pairs: a reference row needs at least one")
    majority = max(counts, key=lambda name: counts[name])
    n_m = counts[majority]
    occurring = sum(1 for n in counts.values() if n > 0)
    f1 = 2 * n_m / (n_m + total)
    return ReferenceRow(n_m / total, f1 / occurring, n_m / total * f1, f"always {majority}")


def chance_row(counts: Mapping[str, int]) -> ReferenceRow:
    """Answering one of the ``len(counts)`` classes uniformly at random (expected values)."""
    total, k = sum(counts.values()), len(counts)
    if total == 0:
        raise ValueError("no test pairs: a reference row needs at least one")
    occurring = [n for n in counts.values() if n > 0]
    f1 = [2 * n / (k * n + total) for n in occurring]
    weighted = sum(n / total * f for n, f in zip(occurring, f1, strict=True))
    return ReferenceRow(1 / k, sum(f1) / len(f1), weighted, "uniform random")


REFERENCES = {"majority": majority_row, "chance": chance_row}
"""Reference name → its row from the test class counts (the order the tables list them)."""


def reference_rows(counts: Mapping[str, int]) -> dict[str, ReferenceRow]:
    """Every row of :data:`REFERENCES` for one test set's class counts."""
    return {name: row(counts) for name, row in REFERENCES.items()}
