"""Label-shift adaptation: a classifier trained under one class prior, applied where the prior differs.

The pair classifier learns on inter-patient pairs (about a third of them stable) and is tested on
consecutive scans of one patient (mostly stable). Under *label shift* — the pairs of a class look alike in
both sets, only the class mix changes — the test posteriors are the training ones re-weighted by the prior
ratio (Saerens et al. 2002, Eq. 2.4):

    p_t(y | x) ∝ p_s(y | x) · p_t(y) / p_s(y)

and the unknown test prior p_t can be estimated from the unlabelled test inputs:

* :func:`em_prior` — Saerens, Latinne & Decaestecker, "Adjusting the outputs of a classifier to new a
  priori probabilities", Neural Computation 14 (2002), Eqs. 2.9–2.10: alternate the re-weighting above with
  p_t(y) ← mean over test inputs of p_t(y | x), from p_t = p_s, to a fixed point.
* :func:`bbse_prior` — black-box shift estimation (Lipton, Wang & Smola, ICML 2018, Eq. 3 / Alg. 1): with
  the joint confusion matrix C[ŷ, y] of held-out labelled source data and the test distribution μ[ŷ] of
  hard predictions, μ = C w solves for the importance weights w[y] = p_t(y) / p_s(y).

Both look at the test pairs' inputs (never their labels): results that use them are *transductive* and the
tables label them so.

Example::

    prior = em_prior(test_probabilities, source_prior=train_class_frequencies)
    adapted = reweight(test_probabilities, train_class_frequencies, prior).argmax(axis=1)
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def reweight(probabilities: np.ndarray, source_prior: np.ndarray, target_prior: np.ndarray) -> np.ndarray:
    """Posteriors under ``target_prior`` from posteriors under ``source_prior`` (Saerens et al. Eq. 2.4).

    Args:
        probabilities: (N, K) rows summing to 1, computed under ``source_prior``.
        source_prior, target_prior: (K,) class priors (positive source entries; the target may have zeros).

    Returns:
        (N, K) float64 rows summing to 1 (a row whose re-weighted mass is 0 keeps its input values).
    """
    probabilities = _check_probabilities(probabilities)
    source, target = _check_prior(source_prior, probabilities), _check_prior(target_prior, probabilities)
    if (source <= 0).any():
        raise ValueError(f"source prior needs every class present, got {source.tolist()}")
    weighted = probabilities * (target / source)
    mass = weighted.sum(axis=1, keepdims=True)
    return np.where(mass > 0, weighted / np.where(mass > 0, mass, 1.0), probabilities)


def em_prior(
    probabilities: np.ndarray, source_prior: np.ndarray, *, tol: float = 1e-8, max_iter: int = 10_000
) -> np.ndarray:
    """The test prior by expectation–maximisation (Saerens et al. 2002, Eqs. 2.9–2.10).

    Args:
        probabilities: (N, K) the classifier's posteriors on the N unlabelled test inputs.
        source_prior: (K,) the class prior the classifier was trained under.
        tol: stop when no prior entry moves by more than this; max_iter: at most this many steps (EM
            crawls when a class's prior heads for 0: thousands of steps, each one pass over (N, K)).

    Returns:
        (K,) float64 estimated test prior (sums to 1). It is the maximum-likelihood prior of the test
        inputs under the label-shift model, so a class the classifier rarely favours can go to ~0. After
        ``max_iter`` steps without converging it is the last step's prior, with a warning naming the
        steps and the last change.
    """
    source = _check_prior(source_prior, _check_probabilities(probabilities))
    prior = source.copy()
    change = np.inf
    for _ in range(max_iter):
        updated: np.ndarray = reweight(probabilities, source, prior).mean(axis=0)
        change = float(np.abs(updated - prior).max())
        if change < tol:
            return updated
        prior = updated
    log.warning(
        "EM prior estimate did not converge in %d iterations (last change %.3g ≥ tol %g); using the "
        "last iterate %s",
        max_iter,
        change,
        tol,
        np.round(prior, 4).tolist(),
    )
    return prior


def bbse_prior(
    held_out_probabilities: np.ndarray,
    held_out_labels: np.ndarray,
    test_probabilities: np.ndarray,
) -> np.ndarray:
    """The test prior by black-box shift estimation (Lipton et al. 2018, Alg. 1).

    Args:
        held_out_probabilities: (M, K) posteriors on labelled data of the source distribution that the
            classifier did not fit on (the val pairs).
        held_out_labels: (M,) their class indices.
        test_probabilities: (N, K) posteriors on the unlabelled test inputs.

    Returns:
        (K,) float64 estimated test prior: w = C⁺ μ (least squares, so a singular C still answers),
        clipped at 0, times the held-out prior, normalised to sum 1. Falls back to the held-out prior when
        every weight clips to 0.
    """
    held_out = _check_probabilities(held_out_probabilities)
    test = _check_probabilities(test_probabilities)
    k = held_out.shape[1]
    labels = np.asarray(held_out_labels, dtype=np.int64)
    if labels.shape != (held_out.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) >= k:
        raise ValueError(f"held-out labels should be (M,) = ({held_out.shape[0]},) class indices < {k}")
    if test.shape[1] != k:
        raise ValueError(f"test probabilities have {test.shape[1]} classes, the held-out ones {k}")
    joint = np.zeros((k, k))  # C[predicted, true] / M
    np.add.at(joint, (held_out.argmax(axis=1), labels), 1.0 / len(labels))
    predicted = np.bincount(test.argmax(axis=1), minlength=k) / len(test)  # μ[ŷ]
    weights = np.clip(np.linalg.lstsq(joint, predicted, rcond=None)[0], 0.0, None)
    held_out_prior = np.bincount(labels, minlength=k) / len(labels)
    prior = weights * held_out_prior
    return prior / prior.sum() if prior.sum() > 0 else held_out_prior


def _check_probabilities(probabilities: np.ndarray) -> np.ndarray:
    values = np.asarray(probabilities, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"probabilities should be (N, K) with N ≥ 1, got {values.shape}")
    if (values < 0).any() or not np.allclose(values.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("probabilities should be non-negative rows summing to 1")
    return values


def _check_prior(prior: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    values = np.asarray(prior, dtype=np.float64)
    if values.shape != (probabilities.shape[1],) or (values < 0).any() or not np.isclose(values.sum(), 1.0):
        raise ValueError(f"a prior should be {probabilities.shape[1]} non-negative numbers summing to 1")
    return values
