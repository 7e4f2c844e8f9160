"""The regressor's predicted scores turned into the probability of each change label (beyond the paper).

Labelling two predicted scores by the scale's rule (:mod:`learner.evaluation.score_change`) treats them
as the truth. They are not: a predicted score is off by about the encoder's val error, and the *change*
between two visits of one patient is off by a different amount. Between patients the scores spread widely
and the head's scores follow them (slope near 1); within a patient the true change is small, so the part
of a predicted change that is error is large and the best estimate of the true change is the predicted
change shrunk towards the cohort's mean drift (regression dilution, stronger for a difference than for a
level). A rule that takes the predicted change at face value calls most pairs a change.

:func:`fit_change_calibration` fits two linear-Gaussian models on the val split, which the encoder never
trained on:

* level: true score ``s = a + b·p + ε``, ε ~ N(0, σ²), least squares over the val scans;
* change: true change ``Δs = c₀ + c·Δp + η``, η ~ N(0, τ²), least squares over the val patients'
  visit pairs, formed by the test pairs' rule (``data.pairs.intra``, ``match_site``) so that the model
  is fitted on the kind of change it is applied to (a cohort with repeat visits; without them there is no
  change model).

:func:`change_posterior` then gives, for each test pair, the probability of each label under the scale's
rule with the earlier score ~ N(a + b·p₁, σ²) and the change ~ N(c₀ + c·Δp, τ²) independent, integrated on a
fixed grid of normal quantiles (deterministic, no random draws). On an integer scale
(``ScoreScale.integer``: MMSE) each drawn earlier and later score is rounded and clipped to the scale's
range before the rule labels it, as a true score is: with MMSE's threshold 2 a true pair is stable only at
|Δ| ≤ 1, and continuous draws would also call 1 < |Δ| < 2 stable. Its most probable label is the Bayes
decision for accuracy ("Δ predicted score, calibrated" rows). Nothing looks at the test labels.

Example::

    calibration = fit_change_calibration(val_predicted, val_true, val_pair_predicted_change,
                                         val_pair_true_change)
    probabilities = change_posterior(scale, calibration, test_earlier, test_later)  # (P, 3)
    labels = probabilities.argmax(axis=1)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from learner.data.scales import ScoreScale

GRID_POINTS = 64
"""Normal quantiles per axis: the posterior is a mean over 64 × 64 (earlier score, change) grid points."""

_PAIRS_PER_CHUNK = 1024
"""Pairs evaluated at once (1024 × 4096 grid points ≈ 34 MB of float64 per array)."""


@dataclass(frozen=True)
class ChangeCalibration:
    """The level and change models fitted on the val split (module docstring); scores in the scale's units."""

    level_intercept: float
    level_slope: float
    level_sd: float
    change_intercept: float
    change_slope: float
    change_sd: float
    n_scans: int
    n_pairs: int

    def as_dict(self) -> dict[str, float | int]:
        """The fields as a JSON-ready dict (``metrics.json`` keeps it beside the answer)."""
        return asdict(self)


def fit_change_calibration(
    scan_predicted: npt.ArrayLike,
    scan_true: npt.ArrayLike,
    pair_predicted_change: npt.ArrayLike,
    pair_true_change: npt.ArrayLike,
) -> ChangeCalibration:
    """Least-squares level and change models with their residual standard deviations.

    Args:
        scan_predicted, scan_true: (N,) the head's predicted and the true scores of the val scans.
        pair_predicted_change, pair_true_change: (M,) later − earlier, predicted and true, of the val
            patients' visit pairs.

    Raises:
        ValueError: fewer than 3 scans or 3 pairs (two coefficients and a spread need three points), or
            predictions that do not vary (no slope can be fitted).
    """
    level = _line(scan_predicted, scan_true, "val scans")
    change = _line(pair_predicted_change, pair_true_change, "val visit pairs")
    return ChangeCalibration(*level[:3], *change[:3], n_scans=level[3], n_pairs=change[3])


def _line(x: npt.ArrayLike, y: npt.ArrayLike, what: str) -> tuple[float, float, float, int]:
    """(intercept, slope, residual sd with 2 degrees of freedom spent, n) of y ≈ intercept + slope·x."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"{what}: predicted and true values should be two (n,) arrays, got {x.shape}, {y.shape}"
        )
    if x.size < 3:
        raise ValueError(f"calibrating needs at least 3 {what}, got {x.size}")
    if np.ptp(x) == 0:
        raise ValueError(f"{what}: every predicted value is {x[0]:g}, so no slope can be fitted")
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    return float(intercept), float(slope), float(np.sqrt(residual @ residual / (x.size - 2))), int(x.size)


def change_posterior(
    scale: ScoreScale, calibration: ChangeCalibration, earlier: npt.ArrayLike, later: npt.ArrayLike
) -> np.ndarray:
    """(P, 3) probability of deteriorated / stable / improved for each pair of predicted scores.

    Args:
        scale: the score scale whose change rule labels the pairs (an integer scale's drawn scores are
            rounded and clipped to its range first).
        calibration: the level and change models (:func:`fit_change_calibration`).
        earlier, later: (P,) predicted scores of the first and the second scan.

    Returns:
        (P, 3) float64, rows summing to 1, columns in :class:`learner.data.scales.ChangeLabel` order.
    """
    earlier, later = np.asarray(earlier, dtype=np.float64), np.asarray(later, dtype=np.float64)
    quantiles = ndtri((np.arange(GRID_POINTS) + 0.5) / GRID_POINTS)
    level_z, change_z = (axis.ravel() for axis in np.meshgrid(quantiles, quantiles, indexing="ij"))
    c = calibration
    level = c.level_intercept + c.level_slope * earlier  # (P,)
    change = c.change_intercept + c.change_slope * (later - earlier)
    out = np.empty((earlier.size, 3))
    for start in range(0, earlier.size, _PAIRS_PER_CHUNK):
        rows = slice(start, start + _PAIRS_PER_CHUNK)
        first = level[rows, None] + c.level_sd * level_z  # (chunk, G²)
        second = first + change[rows, None] + c.change_sd * change_z
        if scale.integer:  # true scores are whole and in range (module docstring)
            first, second = (np.clip(np.rint(score), scale.low, scale.high) for score in (first, second))
        labels = scale.change_labels(first, second)
        out[rows] = np.stack([(labels == k).mean(axis=1) for k in range(3)], axis=1)
    return out
