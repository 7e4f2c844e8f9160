"""The answers to a classification's test pairs besides the pair classifier's, and the metrics every
answer is scored by.

The paper's pair classifier is one answer to "improved, stable or deteriorated?". The others use the same
frozen encoder and the same test pairs: the encoder's own regression head (its two predicted scores through
the scale's change rule, with a val margin, or through a change model fitted on the val split), and the
classifier re-weighted to a test prior estimated from the unlabelled test pairs. Each is scored like the
classifier (:func:`pair_metrics`: accuracy, F1, patient-bootstrap intervals), so a table can put them side
by side and say what the classifier adds.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from learner.config import Config, PairConfig
from learner.data.manifest import Manifest
from learner.data.pairs import intra_patient_pairs
from learner.data.scales import ScoreScale, scale_from_config
from learner.evaluation.change_posterior import change_posterior, fit_change_calibration
from learner.evaluation.embed import EmbeddingTable
from learner.evaluation.label_shift import bbse_prior, em_prior, reweight
from learner.evaluation.metrics import (
    MacroF1,
    accuracy,
    classification_metrics,
    patient_bootstrap_samples,
    percentile_interval,
)
from learner.evaluation.pair_classifier import NUM_CLASSES, FittedPairClassifier
from learner.evaluation.score_change import calibrate_margin, score_change_labels
from learner.losses.registry import MSE, WITHIN_PATIENT, ScoreLabels, build_objective, build_view_objective

log = logging.getLogger(__name__)

ANSWERS: tuple[str, ...] = (
    "delta_score",
    "delta_score_margin",
    "delta_score_calibrated",
    "classifier_em",
    "classifier_bbse",
)
"""The answers to the test pairs recorded beside the classifier's (``metrics.json["answers"]``), in order:

* ``delta_score``: the encoder's regression head alone, its predicted scores of the two scans labelled by
  the scale's change rule (:mod:`learner.evaluation.score_change`); the answer a pair classifier on the same
  encoder has to beat.
* ``delta_score_margin``: the same with a stable margin calibrated on the val pairs (``margin``).
* ``delta_score_calibrated``: the most probable label under a level and a change model of the predicted
  scores fitted on the val scans and the val patients' visit pairs, formed as the test pairs are
  (:mod:`learner.evaluation.change_posterior`; ``calibration``); recorded only where val patients have
  repeat visits.
* ``classifier_em`` / ``classifier_bbse``: the classifier's posteriors re-weighted to a test prior estimated
  from the unlabelled test pairs (:mod:`learner.evaluation.label_shift`; ``prior``, in class order) —
  transductive: they look at the test pairs' embeddings, never their labels.

The three ``delta_score`` answers are recorded only when the encoder's pretraining objective trained its
regression head (:func:`untrained_head`): a head that got no gradient answers with its initial weights.
"""


def other_answers(
    pairs: dict[str, pd.DataFrame],
    table: EmbeddingTable,
    fitted: FittedPairClassifier,
    features: dict[str, np.ndarray],
    manifest: Manifest,
    config: Config,
    encoder_config: Config,
) -> dict[str, dict[str, Any]]:
    """Test metrics (with intervals) of every answer of :data:`ANSWERS` that applies, keyed by name;
    ``encoder_config`` is the pretraining run's (checkpoint meta), whose objective says whether the
    regression head was trained."""
    train_labels = pairs["train"]["label"].to_numpy(dtype=np.int64)
    source_prior = (  # the prior the classifier's loss saw: balanced by the class weights, else the pairs'
        np.full(NUM_CLASSES, 1.0 / NUM_CLASSES)
        if config.classifier.class_weights
        else np.bincount(train_labels, minlength=NUM_CLASSES) / len(train_labels)
    )
    test_probabilities = fitted.predict_proba(features["test"])
    if (source_prior > 0).all():
        priors = {
            "classifier_em": em_prior(test_probabilities, source_prior),
            "classifier_bbse": bbse_prior(
                fitted.predict_proba(features["val"]), pairs["val"]["label"].to_numpy(), test_probabilities
            ),
        }
    else:  # a prior ratio needs every class among the training pairs
        priors = {}
        log.warning("no prior-adapted rows: a change class has no training pair (EM and BBSE need all three)")
    answers: dict[str, dict[str, Any]] = {}
    untrained = untrained_head(encoder_config)
    if untrained is None:
        answers |= head_answers(pairs, table, manifest, config)
    else:
        log.info(
            "no 'Δ predicted score' rows: %s, so its regression head answers with initial weights", untrained
        )
    for name, prior in priors.items():
        adapted = reweight(test_probabilities, source_prior, prior).argmax(axis=1)
        answers[name] = pair_metrics(pairs["test"], adapted, config) | {"prior": prior.tolist()}
    return answers


def untrained_head(encoder_config: Config) -> str | None:
    """Why the pretraining objective of ``encoder_config`` gave the regression head no gradient (a
    self-supervised objective, a contrastive term alone, or λ = 0 without a within-patient term), or None
    when a head term (MSE or within-patient) has a positive weight. The weights are the registry's own
    (:func:`learner.losses.registry.build_objective`), so this cannot drift from what pretraining ran."""
    loss = encoder_config.loss
    if build_view_objective(loss) is not None:
        return f"the encoder's loss.name={loss.name} is self-supervised (no scores)"
    edges = scale_from_config(encoder_config.data).class_edges()  # supcon_bins is built from them
    weights = build_objective(loss, ScoreLabels(class_edges=edges)).weights
    if weights.get(MSE, 0.0) > 0 or weights.get(WITHIN_PATIENT, 0.0) > 0:
        return None
    if MSE in weights:
        return f"the encoder's objective loss.name={loss.name} weighs MSE by loss.lam={loss.lam:g}"
    return f"the encoder's objective loss.name={loss.name} has no MSE term"


def head_answers(
    pairs: dict[str, pd.DataFrame], table: EmbeddingTable, manifest: Manifest, config: Config
) -> dict[str, dict[str, Any]]:
    """The regression head's answers (``delta_score``, ``delta_score_margin`` and, where the val split has
    visit pairs, ``delta_score_calibrated``) as test metrics with intervals."""
    scale = scale_from_config(config.data)
    earlier, later = {}, {}
    for split in ("val", "test"):
        earlier[split], later[split] = predicted_scores(pairs[split], table)
    margin = calibrate_margin(scale, earlier["val"], later["val"], pairs["val"]["label"].to_numpy())
    answers = {
        "delta_score": pair_metrics(
            pairs["test"], scale.change_labels(earlier["test"], later["test"]), config
        ),
        "delta_score_margin": pair_metrics(
            pairs["test"], score_change_labels(scale, earlier["test"], later["test"], margin), config
        )
        | {"margin": margin},
    }
    calibrated = calibrated_labels(scale, manifest, table, earlier["test"], later["test"], config.data.pairs)
    if calibrated is not None:
        labels, calibration = calibrated
        answers["delta_score_calibrated"] = pair_metrics(pairs["test"], labels, config) | {
            "calibration": calibration
        }
    return answers


def calibrated_labels(
    scale: ScoreScale,
    manifest: Manifest,
    table: EmbeddingTable,
    earlier: np.ndarray,
    later: np.ndarray,
    pair_cfg: PairConfig,
) -> tuple[np.ndarray, dict[str, float | int]] | None:
    """The test pairs' most probable labels under the val-fitted change model, and the model; None (with
    the reason logged) when the val split has no visit pairs to fit the change on. The val visit pairs
    follow the test pairs' rule (``pair_cfg.intra``, ``pair_cfg.match_site``): the change between any two
    visits spreads wider than between consecutive ones, so a model fitted on the one misjudges the other."""
    embedded = set(table.scan_ids)
    scans = [r for r in manifest.by_split("val") if r.scan_id in embedded]
    visit_pairs, _ = intra_patient_pairs(scans, scale, pair_cfg.intra, pair_cfg.match_site)
    if len(visit_pairs) < 3:
        log.info(
            "no 'Δ predicted score, calibrated' answer: it needs 3+ val visit pairs (val patients scanned "
            "on 2+ visits) to fit the change model, found %d",
            len(visit_pairs),
        )
        return None
    predicted = dict(zip(table.scan_ids, table.scores.astype(np.float64), strict=True))
    pair_earlier, pair_later = predicted_scores(visit_pairs, table)
    try:
        calibration = fit_change_calibration(
            [predicted[r.scan_id] for r in scans],
            [r.score for r in scans],
            pair_later - pair_earlier,
            visit_pairs["second_score"].to_numpy(np.float64)
            - visit_pairs["first_score"].to_numpy(np.float64),
        )
    except ValueError as error:  # e.g. a head that predicts one score for every scan
        log.info("no 'Δ predicted score, calibrated' answer: %s", error)
        return None
    labels = change_posterior(scale, calibration, earlier, later).argmax(axis=1)
    return labels, calibration.as_dict()


def predicted_scores(pairs: pd.DataFrame, table: EmbeddingTable) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's predicted scores (float64) of every pair's earlier and later scan, each (P,)."""
    predicted = dict(zip(table.scan_ids, table.scores.astype(np.float64), strict=True))
    earlier = pairs["first_scan_id"].astype(str).map(predicted).to_numpy(dtype=np.float64)
    later = pairs["second_scan_id"].astype(str).map(predicted).to_numpy(dtype=np.float64)
    return earlier, later


def pair_metrics(test_pairs: pd.DataFrame, predicted: np.ndarray, config: Config) -> dict[str, Any]:
    """Classification metrics of the test pairs with (1 − 0.05) patient-bootstrap intervals of accuracy and
    macro-F1 (``ci``), and how many of the ``n_boot`` resamples define each (``ci_resamples``: a resample
    that draws no pair of one of the test set's classes has no macro-F1 over them, :class:`MacroF1`)."""
    truth = test_pairs["label"].to_numpy(dtype=np.int64)
    patients = test_pairs["first_patient_id"].astype(str).to_numpy()
    metrics = classification_metrics(truth, predicted)
    n_boot = config.classifier.bootstrap
    samples = {
        name: patient_bootstrap_samples(truth, predicted, patients, fn, n_boot, config.seed)
        for name, fn in (("accuracy", accuracy), ("macro_f1", MacroF1.of(truth)))
    }
    # (nan, nan) when there is no bootstrap; atomic.write_json stores null
    metrics["ci"] = {name: list(percentile_interval(values)) for name, values in samples.items()}
    metrics["ci_resamples"] = {name: int(np.isfinite(values).sum()) for name, values in samples.items()}
    metrics["n_boot"] = n_boot
    metrics["n_patients"] = int(np.unique(patients).size)
    return metrics
