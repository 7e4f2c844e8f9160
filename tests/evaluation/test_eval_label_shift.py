"""Label-shift adaptation (EM of Saerens et al. 2002, BBSE of Lipton et al. 2018) and the regressor's
answer with a val-calibrated margin, against hand-computed cases and a generative model whose Bayes
posteriors are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.metrics import f1_score

from learner.data.scales import get_scale
from learner.evaluation.label_shift import bbse_prior, em_prior, reweight
from learner.evaluation.score_change import MARGIN_QUANTILES, calibrate_margin, score_change_labels

MEANS = np.array([-1.5, 0.0, 1.5])  # one unit-variance Gaussian per class


def _posteriors(x: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Exact Bayes posteriors (N, 3) of the three-Gaussian model under ``prior``."""
    likelihood = stats.norm.pdf(x[:, None], loc=MEANS[None, :])
    joint = likelihood * prior
    out: np.ndarray = joint / joint.sum(axis=1, keepdims=True)
    return out


def _sample(prior: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n, p=prior)
    return rng.normal(MEANS[labels], 1.0), labels


def test_reweight_by_hand() -> None:
    probabilities = np.array([[0.2, 0.8], [0.5, 0.5]])
    adapted = reweight(probabilities, np.array([0.5, 0.5]), np.array([0.9, 0.1]))
    # row 1: (0.2·1.8, 0.8·0.2) = (0.36, 0.16) → /0.52; row 2: (0.9, 0.1)
    np.testing.assert_allclose(adapted, [[0.36 / 0.52, 0.16 / 0.52], [0.9, 0.1]])
    np.testing.assert_allclose(
        reweight(probabilities, np.array([0.3, 0.7]), np.array([0.3, 0.7])), probabilities
    )


def test_reweighting_exact_posteriors_gives_the_target_priors_posteriors() -> None:
    x = np.linspace(-4, 4, 41)
    source, target = np.array([1 / 3, 1 / 3, 1 / 3]), np.array([0.1, 0.8, 0.1])
    np.testing.assert_allclose(
        reweight(_posteriors(x, source), source, target), _posteriors(x, target), atol=1e-12
    )


def test_em_recovers_a_shifted_prior() -> None:
    source, target = np.array([1 / 3, 1 / 3, 1 / 3]), np.array([0.08, 0.85, 0.07])
    x, _ = _sample(target, 20_000, seed=0)
    prior = em_prior(_posteriors(x, source), source)
    np.testing.assert_allclose(prior, target, atol=0.02)
    # a fixed point of Saerens' Eqs. 2.9-2.10: the mean adapted posterior is the prior itself
    np.testing.assert_allclose(reweight(_posteriors(x, source), source, prior).mean(axis=0), prior, atol=1e-6)


def test_em_without_shift_stays_near_the_source_prior() -> None:
    source = np.array([0.3, 0.4, 0.3])
    x, _ = _sample(source, 20_000, seed=1)
    np.testing.assert_allclose(em_prior(_posteriors(x, source), source), source, atol=0.02)


def _near_boundary() -> tuple[np.ndarray, np.ndarray]:
    """Posteriors (3000, 3) of a weak classifier (class means −0.5, 0, 0.5, unit variance, a uniform source
    prior) on test inputs drawn 2% / 96% / 2%: the likelihood's maximum puts ~0 on class 0, where EM crawls
    (≈ 2,800 steps to tol 1e-8)."""
    rng = np.random.default_rng(0)
    means, source = np.array([-0.5, 0.0, 0.5]), np.full(3, 1 / 3)
    x = rng.normal(means[rng.choice(3, size=3000, p=[0.02, 0.96, 0.02])], 1.0)
    likelihood = stats.norm.pdf(x[:, None], loc=means[None, :]) * source
    return likelihood / likelihood.sum(axis=1, keepdims=True), source


def test_em_that_stops_before_converging_says_so(caplog: pytest.LogCaptureFixture) -> None:
    probabilities, source = _near_boundary()
    with caplog.at_level("WARNING", logger="learner.evaluation.label_shift"):
        em_prior(probabilities, source, max_iter=1000)
    assert "did not converge in 1000 iterations (last change 1.8" in caplog.text


def test_em_near_a_boundary_reaches_the_maximum_likelihood_prior(caplog: pytest.LogCaptureFixture) -> None:
    """Against an independent maximiser of the label-shift log-likelihood Σ log Σ_y p(y|x)·q_y/p_s(y) over
    the simplex (SLSQP, float64); the earlier cap of 1,000 steps stopped at 0.002 on class 0."""
    probabilities, source = _near_boundary()
    ratio = probabilities / source

    def negative_log_likelihood(prior: np.ndarray) -> float:
        return float(-np.log(ratio @ prior).sum())

    reference = optimize.minimize(
        negative_log_likelihood,
        source,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * 3,
        constraints={"type": "eq", "fun": lambda prior: prior.sum() - 1.0},
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    with caplog.at_level("WARNING", logger="learner.evaluation.label_shift"):
        prior = em_prior(probabilities, source)
    assert not caplog.text
    np.testing.assert_allclose(prior, reference.x, atol=1e-4)
    # tol 1e-8 on a step leaves ~1e-6 on class 0, 1.3e-5 of log-likelihood; the stopped 1,000 steps left 0.026
    assert negative_log_likelihood(prior) - reference.fun < 1e-4


def test_em_that_converges_is_unchanged_by_the_step_cap(caplog: pytest.LogCaptureFixture) -> None:
    """A prior that converges within 1,000 steps (the earlier cap) is the same bit for bit, without a word."""
    source = np.array([1 / 3, 1 / 3, 1 / 3])
    x, _ = _sample(np.array([0.08, 0.85, 0.07]), 20_000, seed=0)
    with caplog.at_level("WARNING", logger="learner.evaluation.label_shift"):
        np.testing.assert_array_equal(
            em_prior(_posteriors(x, source), source), em_prior(_posteriors(x, source), source, max_iter=1000)
        )
    assert not caplog.text


def test_bbse_recovers_a_shifted_prior() -> None:
    source, target = np.array([1 / 3, 1 / 3, 1 / 3]), np.array([0.08, 0.85, 0.07])
    held_x, held_y = _sample(source, 20_000, seed=2)
    test_x, _ = _sample(target, 20_000, seed=3)
    prior = bbse_prior(_posteriors(held_x, source), held_y, _posteriors(test_x, source))
    np.testing.assert_allclose(prior, target, atol=0.03)


def test_bbse_with_a_perfect_classifier_is_the_predicted_mix() -> None:
    eye = np.eye(3)
    held_y = np.array([0, 1, 2, 2])
    test = eye[[1, 1, 1, 0]]
    np.testing.assert_allclose(bbse_prior(eye[held_y], held_y, test), [0.25, 0.75, 0.0], atol=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: reweight(np.array([[0.5, 0.6]]), np.array([0.5, 0.5]), np.array([0.5, 0.5])),
            "summing to 1",
        ),
        (lambda: reweight(np.array([[0.5, 0.5]]), np.array([1.0, 0.0]), np.array([0.5, 0.5])), "every class"),
        (lambda: em_prior(np.zeros((0, 3)), np.array([1 / 3] * 3)), "N ≥ 1"),
        (lambda: em_prior(np.full((2, 3), 1 / 3), np.array([0.5, 0.5])), "3 non-negative"),
        (
            lambda: bbse_prior(np.full((2, 3), 1 / 3), np.array([0, 3]), np.full((2, 3), 1 / 3)),
            "class indices",
        ),
    ],
)
def test_bad_inputs_raise(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_score_change_labels_with_a_margin_by_hand() -> None:
    scale = get_scale("mmse", threshold=2.0)
    earlier, later = np.array([20, 20, 20, 20, 20]), np.array([21, 22, 24, 17, 15])
    # the rule alone: |Δ| < 2 → stable; 30 = higher is better
    np.testing.assert_array_equal(score_change_labels(scale, earlier, later), [1, 2, 2, 0, 0])
    np.testing.assert_array_equal(score_change_labels(scale, earlier, later, margin=4.0), [1, 1, 2, 1, 0])
    with pytest.raises(ValueError, match="margin"):
        score_change_labels(scale, earlier, later, margin=-1.0)


def test_calibrated_margin_is_the_best_candidate_on_the_held_out_pairs() -> None:
    scale = get_scale("sf")
    rng = np.random.default_rng(4)
    true_earlier = rng.uniform(100, 480, 300)
    true_later = np.where(
        rng.random(300) < 0.7, true_earlier + rng.normal(0, 5, 300), rng.uniform(100, 480, 300)
    )
    labels = scale.change_labels(true_earlier, true_later)
    earlier, later = true_earlier + rng.normal(0, 30, 300), true_later + rng.normal(0, 30, 300)
    margin = calibrate_margin(scale, earlier, later, labels)
    # independent search: sklearn's macro-F1 of the hand-written rule at every candidate
    candidates = sorted({0.0, *np.quantile(np.abs(later - earlier), MARGIN_QUANTILES)})
    rule = scale.change_labels(earlier, later)
    scores = [
        f1_score(
            labels,
            np.where(np.abs(later - earlier) < m, 1, rule),
            labels=np.unique(labels),
            average="macro",
            zero_division=0,
        )
        for m in candidates
    ]
    assert margin == candidates[int(np.argmax(scores))]
    assert margin > 0  # noisy predictions across bin edges: a margin helps on this cohort
    assert max(scores) > scores[0]
