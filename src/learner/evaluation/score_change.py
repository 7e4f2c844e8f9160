"""The pretrained regressor's own answer to a pair: its two predicted scores, labelled by the scale's rule.

An encoder pretrained with the MSE term (Alg. 1) has a regression head; its predicted scores of the earlier
and the later scan, put through the same change rule that labels the pairs (S/F bins, an MMSE threshold),
answer improved / stable / deteriorated with no pair classifier at all (the "Δ predicted score" rows).

A predicted score is off by about the encoder's val MAE, so a pair whose scores sit either side of a bin
edge is called a change although the patient did not move. :func:`calibrate_margin` picks a *decision
margin* on labelled held-out pairs (the val inter-patient pairs): a pair is called stable unless its
predicted scores differ by at least the margin (and the rule calls a change). The margin is chosen on val
pairs only, so the answer stays inductive.

Example::

    margin = calibrate_margin(scale, val_earlier, val_later, val_labels)
    labels = score_change_labels(scale, test_earlier, test_later, margin)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from learner.data.scales import ScoreScale
from learner.evaluation.metrics import macro_f1

MARGIN_QUANTILES = np.linspace(0.0, 0.95, 20)
"""The candidate margins: these quantiles (0, 5, …, 95%) of the held-out pairs' |Δ predicted score|."""


def score_change_labels(
    scale: ScoreScale, earlier: npt.ArrayLike, later: npt.ArrayLike, margin: float = 0.0
) -> np.ndarray:
    """(P,) class indices of pairs from their predicted scores, earlier scan first.

    Args:
        scale: the score scale whose change rule labels the pairs.
        earlier, later: (P,) predicted scores of the first and the second scan.
        margin: pairs whose predicted scores differ by less than this are called stable (0: the rule alone).

    Returns:
        (P,) int64: 0 deteriorated, 1 stable, 2 improved.
    """
    earlier, later = np.asarray(earlier, dtype=np.float64), np.asarray(later, dtype=np.float64)
    if margin < 0 or not np.isfinite(margin):
        raise ValueError(f"the margin should be a finite number ≥ 0, got {margin}")
    labels = scale.change_labels(earlier, later)
    return np.where(np.abs(later - earlier) < margin, 1, labels).astype(np.int64)


def calibrate_margin(
    scale: ScoreScale, earlier: npt.ArrayLike, later: npt.ArrayLike, labels: npt.ArrayLike
) -> float:
    """The margin with the best macro-F1 on labelled held-out pairs (ties: the smallest).

    Args:
        scale: the score scale whose change rule labels the pairs.
        earlier, later: (M,) predicted scores of the held-out pairs' first and second scans.
        labels: (M,) their true class indices.

    Returns:
        One of 0 and the :data:`MARGIN_QUANTILES` of the held-out |Δ predicted score|.
    """
    earlier, later = np.asarray(earlier, dtype=np.float64), np.asarray(later, dtype=np.float64)
    truth = np.asarray(labels, dtype=np.int64)
    if truth.size == 0:
        raise ValueError("calibrating a margin needs at least one labelled held-out pair")
    candidates = np.unique(np.concatenate([[0.0], np.quantile(np.abs(later - earlier), MARGIN_QUANTILES)]))
    scores = [macro_f1(truth, score_change_labels(scale, earlier, later, m)) for m in candidates]
    return float(candidates[int(np.argmax(scores))])
