"""The change posterior against closed forms (normal CDFs), the fits against hand-computed least squares."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtri
from scipy.stats import norm

from learner.data.scales import ScoreScale, get_scale
from learner.evaluation.change_posterior import (
    GRID_POINTS,
    ChangeCalibration,
    change_posterior,
    fit_change_calibration,
)

GRID_TOLERANCE = 1.0 / GRID_POINTS
"""A step of one normal quantile on the grid moves a probability by at most 1/64."""


def calibration(
    level_sd: float, change_slope: float, change_sd: float, drift: float = 0.0
) -> ChangeCalibration:
    return ChangeCalibration(0.0, 1.0, level_sd, drift, change_slope, change_sd, n_scans=10, n_pairs=10)


def test_a_threshold_scale_depends_on_the_change_alone() -> None:
    """A continuous scale with MMSE's rule (|Δ| < 2 stable, higher better): P(improved) = P(Δ ≥ 2),
    P(deteriorated) = P(Δ ≤ −2)."""
    scale = ScoreScale("continuous", 0.0, 30.0, threshold=2.0)
    model = calibration(level_sd=3.0, change_slope=0.5, change_sd=1.5, drift=-0.4)
    earlier = np.array([20.0, 25.0, 28.0, 12.0])
    later = np.array([20.0, 19.0, 29.0, 18.0])
    mean = -0.4 + 0.5 * (later - earlier)
    expected = np.stack([norm.cdf((-2.0 - mean) / 1.5), np.zeros(4), norm.sf((2.0 - mean) / 1.5)], axis=1)
    expected[:, 1] = 1.0 - expected[:, 0] - expected[:, 2]
    got = change_posterior(scale, model, earlier, later)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)
    np.testing.assert_allclose(got, expected, atol=GRID_TOLERANCE)


def test_an_integer_scale_labels_whole_scores_in_range() -> None:
    """MMSE with a known whole earlier score (σ = 0): the later score is the earlier plus the change rounded,
    so stable is |Δ| ≤ 1, i.e. a drawn change in (−1.5, 1.5); clipped to the scale's range, nothing improves
    from 29 or 30 and nothing deteriorates from 1."""
    scale = get_scale("mmse")
    model = calibration(level_sd=0.0, change_slope=0.5, change_sd=1.5, drift=-0.4)
    earlier = np.array([20.0, 25.0, 29.0, 30.0, 1.0])
    later = np.array([20.0, 19.0, 29.0, 28.0, 0.0])
    mean = -0.4 + 0.5 * (later - earlier)
    improved = np.where(earlier + 2.0 <= 30.0, norm.sf((1.5 - mean) / 1.5), 0.0)
    deteriorated = np.where(earlier - 2.0 >= 0.0, norm.cdf((-1.5 - mean) / 1.5), 0.0)
    expected = np.stack([deteriorated, 1.0 - deteriorated - improved, improved], axis=1)
    np.testing.assert_allclose(change_posterior(scale, model, earlier, later), expected, atol=GRID_TOLERANCE)


def test_on_an_integer_cohort_the_mean_posterior_is_the_observed_class_mix() -> None:
    """A synthetic MMSE cohort (whole scores 20–30, a whole change of mean −0.7, predictions off by
    N(0, 2.5²)): the models fitted on 4,000 val pairs, the mean posterior of 20,000 test pairs is their
    label frequencies. Tolerance 0.03: the frequencies' binomial sd is ≤ 0.0035, the rest is the Gaussian
    models' approximation of a whole, clipped score (0.007–0.019 over seeds 0–3); continuous draws, which
    call 1 < |Δ| < 2 stable, were 0.13 off here."""
    scale = get_scale("mmse")
    rng = np.random.default_rng(0)

    def cohort(n: int) -> tuple[np.ndarray, ...]:
        first = rng.integers(20, 31, n).astype(np.float64)
        second = np.clip(first + np.rint(rng.normal(-0.7, 2.0, n)), 0.0, 30.0)
        return first, second, first + rng.normal(0.0, 2.5, n), second + rng.normal(0.0, 2.5, n)

    first, second, predicted_first, predicted_second = cohort(4000)
    model = fit_change_calibration(
        np.r_[predicted_first, predicted_second],
        np.r_[first, second],
        predicted_second - predicted_first,
        second - first,
    )
    first, second, predicted_first, predicted_second = cohort(20_000)
    observed = np.bincount(scale.change_labels(first, second), minlength=3) / first.size
    mean_posterior = change_posterior(scale, model, predicted_first, predicted_second).mean(axis=0)
    np.testing.assert_allclose(mean_posterior, observed, atol=0.03)


@pytest.mark.parametrize("scale", [get_scale("sf"), ScoreScale("continuous", 0.0, 30.0, threshold=2.0)])
def test_a_continuous_scale_labels_the_draws_as_they_are(scale: ScoreScale) -> None:
    """Not an integer scale: the labels of the unrounded, unclipped grid draws, bit for bit."""
    model = ChangeCalibration(3.0, 0.9, 4.0, -0.5, 0.7, 3.0, n_scans=10, n_pairs=10)
    width = scale.high - scale.low
    earlier = np.array([0.05, 0.2, 0.5, 0.9, 0.99]) * width + scale.low
    later = np.array([0.1, 0.15, 0.52, 0.97, 1.0]) * width + scale.low
    quantiles = ndtri((np.arange(GRID_POINTS) + 0.5) / GRID_POINTS)
    level_z, change_z = (axis.ravel() for axis in np.meshgrid(quantiles, quantiles, indexing="ij"))
    first = (3.0 + 0.9 * earlier)[:, None] + 4.0 * level_z  # can leave the scale's range: kept as drawn
    second = first + (-0.5 + 0.7 * (later - earlier))[:, None] + 3.0 * change_z
    labels = scale.change_labels(first, second)
    expected = np.stack([(labels == k).mean(axis=1) for k in range(3)], axis=1)
    np.testing.assert_array_equal(change_posterior(scale, model, earlier, later), expected)


def test_a_binned_scale_with_a_known_level() -> None:
    """S/F bins 180 / 275 / 430 and an exact earlier score: the later score's bin by normal CDFs."""
    scale = get_scale("sf")
    model = calibration(level_sd=0.0, change_slope=0.8, change_sd=40.0)
    earlier = np.array([250.0, 300.0, 170.0])
    later = np.array([300.0, 290.0, 200.0])
    mean_later = earlier + 0.8 * (later - earlier)
    edges = {250.0: (180.0, 275.0), 300.0: (275.0, 430.0), 170.0: (-np.inf, 180.0)}
    expected = []
    for first, centre in zip(earlier, mean_later, strict=True):
        low, high = edges[first]
        below, above = norm.cdf((low - centre) / 40.0), norm.sf((high - centre) / 40.0)
        expected.append([below, 1.0 - below - above, above])
    np.testing.assert_allclose(change_posterior(scale, model, earlier, later), expected, atol=GRID_TOLERANCE)


def test_both_spreads_against_a_monte_carlo_in_float64() -> None:
    """Level and change uncertain: the grid against 400,000 random draws (MC error ≈ 0.001)."""
    scale = get_scale("sf")
    model = ChangeCalibration(12.0, 0.9, 50.0, 8.0, 0.7, 30.0, n_scans=10, n_pairs=10)
    earlier, later = np.array([180.0, 420.0]), np.array([260.0, 400.0])
    draws = np.random.default_rng(5).standard_normal((2, 400_000))
    for k in range(2):
        first = 12.0 + 0.9 * earlier[k] + 50.0 * draws[0]
        second = first + 8.0 + 0.7 * (later[k] - earlier[k]) + 30.0 * draws[1]
        labels = scale.change_labels(first, second)
        monte_carlo = np.bincount(labels, minlength=3) / labels.size
        np.testing.assert_allclose(
            change_posterior(scale, model, earlier[k : k + 1], later[k : k + 1])[0], monte_carlo, atol=0.02
        )


def test_many_pairs_match_one_at_a_time() -> None:
    """Pairs are evaluated in chunks; a pair's posterior does not depend on its neighbours."""
    scale = get_scale("sf")
    model = ChangeCalibration(0.0, 1.0, 30.0, 0.0, 0.6, 25.0, n_scans=10, n_pairs=10)
    earlier = np.linspace(100.0, 500.0, 1500)
    later = earlier[::-1].copy()
    together = change_posterior(scale, model, earlier, later)
    for k in (0, 1023, 1024, 1499):
        np.testing.assert_array_equal(
            together[k], change_posterior(scale, model, earlier[k : k + 1], later[k : k + 1])[0]
        )


def test_the_fits_are_least_squares_lines() -> None:
    """Slope cov/var, intercept ȳ − slope·x̄, residual sd with n − 2 degrees of freedom, by hand."""
    rng = np.random.default_rng(0)
    x = rng.normal(300.0, 80.0, 50)
    y = 20.0 + 0.9 * x + rng.normal(0.0, 30.0, 50)
    dx = rng.normal(0.0, 40.0, 30)
    dy = 5.0 + 0.5 * dx + rng.normal(0.0, 20.0, 30)
    fitted = fit_change_calibration(x, y, dx, dy)
    for (a, b, sd), (u, v) in (
        ((fitted.level_intercept, fitted.level_slope, fitted.level_sd), (x, y)),
        ((fitted.change_intercept, fitted.change_slope, fitted.change_sd), (dx, dy)),
    ):
        slope = np.sum((u - u.mean()) * (v - v.mean())) / np.sum((u - u.mean()) ** 2)
        intercept = v.mean() - slope * u.mean()
        assert b == pytest.approx(slope)
        assert a == pytest.approx(intercept)
        assert sd == pytest.approx(np.sqrt(np.sum((v - intercept - slope * u) ** 2) / (u.size - 2)))
    assert (fitted.n_scans, fitted.n_pairs) == (50, 30)
    assert fitted.as_dict()["change_slope"] == fitted.change_slope


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (([1.0, 2.0], [1.0, 2.0]), "at least 3 val visit pairs"),
        (([4.0] * 5, [1.0] * 5), "every predicted value is 4"),
    ],
)
def test_too_little_to_fit_is_refused(pairs: tuple[list[float], list[float]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_change_calibration([1.0, 2.0, 3.0], [1.0, 2.5, 2.9], *pairs)
