"""The classify stage (Section 2.4): pairs → frozen-encoder features → fitted classifier → test metrics.

A pipeline stage (it reads run directories and writes pair tables, a classifier and predictions), used by
``learner classify`` and by every cell of the experiment grids; the maths it wires together is in
:mod:`learner.evaluation`. For one pretrained encoder run:

1. the patient split is the pretraining run's own (``splits.csv``), so no test patient was seen in
   pretraining;
2. inter-patient pairs are drawn from the train and val scans, intra-patient (sequential) pairs from the
   test scans (:mod:`learner.data.pairs`); every pair table is written to ``OUT/pairs/<split>.csv``;
3. every scan is embedded once by the frozen encoder (:func:`learner.evaluation.embed.embed_scans`,
   cached in the encoder's run dir) and pairs become ``difference`` or ``concatenate`` features;
4. the MLP head is fitted on train pairs, early-stopped on val pairs and saved with the encoder's
   fingerprint (``OUT/classifier``);
5. on the test pairs: accuracy, macro- and weighted-F1, per-class precision/recall, the confusion matrix and
   95% patient-bootstrap intervals, plus the class balance of every pair set (``OUT/metrics.json``,
   per-pair predictions in ``OUT/predictions.csv``).

Example::

    result = run_classification("runs/lus-wcl", manifest, config, "runs/lus-wcl-classify")
    print(result.metrics["test"]["accuracy"])
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from learner.atomic import atomic_path
from learner.config import Config
from learner.data.manifest import Manifest
from learner.data.pairs import pair_class_counts, split_pairs, write_pair_table
from learner.data.provenance import data_source
from learner.data.scales import CLASS_NAMES, scale_from_config
from learner.data.splits import read_splits
from learner.errors import ConfigError, LearnerError
from learner.evaluation.embed import EmbeddingTable, embed_scans
from learner.evaluation.label_shift import bbse_prior, em_prior, reweight
from learner.evaluation.metrics import (
    accuracy,
    classification_metrics,
    macro_f1,
    patient_bootstrap_samples,
    percentile_interval,
    small_sample_warnings,
)
from learner.evaluation.pair_classifier import (
    NUM_CLASSES,
    FittedPairClassifier,
    fit_pair_classifier,
    pair_features,
)
from learner.evaluation.score_change import calibrate_margin, score_change_labels
from learner.experiments.tracking import track_classification
from learner.layout import RunLayout
from learner.runs import RunDir, check_inputs_outside, check_run_dir, open_run_dir, removed_unless_started
from learner.training.checkpoint import CHECKPOINT_NAMES, read_meta
from learner.training.loggers import check_logger

log = logging.getLogger(__name__)

"""Written last: a classification run without it failed and is deleted."""
BOOTSTRAP_METRICS = {"accuracy": accuracy, "macro_f1": macro_f1}


@dataclass(frozen=True)
class ClassificationResult:
    """What :func:`run_classification` produced; ``predictions`` is the test pair table plus
    ``predicted``, ``predicted_name`` and one ``p_<class>`` column per class."""

    out_dir: Path
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    classifier: FittedPairClassifier
    embeddings: EmbeddingTable


def run_classification(
    encoder_run: str | os.PathLike[str],
    manifest: Manifest,
    config: Config,
    out_dir: str | os.PathLike[str],
    *,
    which: str = "best",
    device: str = "cpu",
    force: bool = False,
) -> ClassificationResult:
    """Fit and test the health-change classifier on the frozen encoder of ``encoder_run``.

    Args:
        encoder_run: a pretraining run directory (``splits.csv``, ``checkpoints/<which>``).
        manifest: the scans (the run's manifest; its split column is replaced by the run's split).
        config: ``data.pairs``, ``data.scale``, ``classifier`` and ``seed`` are
            used; it is stored in ``out_dir``.
        out_dir: a new (or, with ``force``, replaced) run directory for the classifier.
        which: the encoder checkpoint, ``best`` or ``last``.
        device: where the encoder runs while embedding.

    Raises:
        RunDirError: ``out_dir`` not empty without ``force``, or ``encoder_run`` has no split.
        LearnerError: no pairs in a split.
    """
    plan = plan_classification(encoder_run, manifest, config, out_dir, which=which, force=force)
    run = open_run_dir(out_dir, config, force=force, kind="classification")
    with removed_unless_started(run.path, new=True):
        result = _classify(plan, run, device)
    track_classification(run.path, config)  # runtime.logger's run (nothing for csv or a grid's stage)
    return result


@dataclass(frozen=True)
class ClassificationPlan:
    """A classification checked before any work (:func:`plan_classification`): the encoder run and
    checkpoint, the manifest with the run's split, and the pair tables (before unreadable scans are
    dropped); ``no_pair``: test patients without an intra-patient pair."""

    encoder_run: Path
    which: str
    manifest: Manifest
    config: Config
    pairs: dict[str, pd.DataFrame]
    no_pair: list[str]


def plan_classification(
    encoder_run: str | os.PathLike[str],
    manifest: Manifest,
    config: Config,
    out_dir: str | os.PathLike[str],
    *,
    which: str = "best",
    force: bool = False,
) -> ClassificationPlan:
    """Check a classification before it creates ``out_dir`` or decodes a scan: the output folder, the
    encoder's checkpoint and split, and that the split yields test pairs.

    Raises:
        RunDirError, CheckpointError, ConfigError, LearnerError: one line naming the folder, file or key.
    """
    check_run_dir(out_dir, force=force, kind="classification")
    check_logger(config.runtime.logger)
    if force:
        check_inputs_outside(out_dir, [manifest.source, *(r.path for r in manifest.records), encoder_run])
    if which not in CHECKPOINT_NAMES:
        raise ConfigError(f"--which {which!r}: choose one of {', '.join(CHECKPOINT_NAMES)}")
    read_meta(RunLayout(encoder_run).checkpoint(which))
    _warn_if_unfinished(Path(encoder_run))
    manifest = manifest.with_splits(read_splits(encoder_run))
    records = {split: manifest.by_split(split) for split in ("train", "val", "test")}
    pairs, no_pair = split_pairs(records, scale_from_config(config.data), config.data.pairs, config.seed)
    if len(pairs["test"]) == 0:
        raise LearnerError(f"{manifest.source}: no test intra-patient pairs (test patients need 2+ visits)")
    return ClassificationPlan(Path(encoder_run), which, manifest, config, pairs, list(no_pair))


def _warn_if_unfinished(encoder_run: Path) -> None:
    """One warning when the encoder's pretraining stopped before its last epoch (an interrupted run)."""
    last = RunLayout(encoder_run).checkpoint("last")
    if not last.is_dir():
        return
    meta = read_meta(last)
    if meta.epoch < meta.config.optim.epochs:
        log.warning(
            "%s: its pretraining stopped after epoch %d of %d, so this encoder is unfinished; "
            "`learner pretrain --resume %s` completes it",
            encoder_run,
            meta.epoch,
            meta.config.optim.epochs,
            encoder_run,
        )


def _classify(plan: ClassificationPlan, run: RunDir, device: str) -> ClassificationResult:
    encoder_run, which, manifest, config = plan.encoder_run, plan.which, plan.manifest, plan.config
    pairs, no_pair = plan.pairs, plan.no_pair
    table = embed_scans(
        encoder_run,
        manifest,
        which=which,
        clips_per_scan=config.classifier.clips_per_scan,
        device=device,
        skip_bad=config.data.skip_bad_scans,
    )
    pairs, dropped = _without_skipped(pairs, table)
    for split, frame in pairs.items():
        path = run.layout.pairs(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_pair_table(frame, path)
    if len(pairs["test"]) == 0:
        raise LearnerError(f"{manifest.source}: no test intra-patient pairs (test patients need 2+ visits)")
    combine = config.classifier.combine
    features = {s: pair_features(p, table.embeddings, table.scan_ids, combine) for s, p in pairs.items()}
    labels = {split: frame["label"].to_numpy(dtype=np.int64) for split, frame in pairs.items()}
    fitted = fit_pair_classifier(
        features["train"],
        labels["train"],
        features["val"],
        labels["val"],
        config.classifier,
        seed=config.seed,
        encoder_fingerprint=table.fingerprint,
    )
    fitted.save(run.layout.classifier)
    probabilities = fitted.predict_proba(features["test"])  # (P, 3)
    predictions = _prediction_table(pairs["test"], probabilities)
    with atomic_path(run.layout.predictions) as tmp:
        predictions.to_csv(tmp, index=False)
    metrics: dict[str, Any] = {
        "kind": "classification",
        "encoder_run": str(Path(encoder_run)),
        "encoder_run_relative": os.path.relpath(Path(encoder_run).resolve(), run.path.resolve()),
        "encoder_fingerprint": table.fingerprint,
        "checkpoint": which,
        "manifest": str(manifest.source),
        "data_source": data_source(manifest),
        "combine": combine,
        "head": config.classifier.head,
        "clips_per_scan": config.classifier.clips_per_scan,
        "seed": config.seed,
        "test": _test_metrics(pairs["test"], predictions["predicted"].to_numpy(), config),
        "answers": _other_answers(pairs, table, fitted, features, config),
        "val": classification_metrics(labels["val"], fitted.predict(features["val"])),
        "best_epoch": fitted.best_epoch,
        "pair_counts": {split: pair_class_counts(p) for split, p in pairs.items()},
        "pairs_dropped_for_skipped_scans": dropped,
        "skipped_scans": [{"scan_id": s, "reason": r} for s, r in table.skipped],
        "test_patients_without_pairs": no_pair,
    }
    run.write_metrics(metrics)
    test = metrics["test"]
    for warning in small_sample_warnings(test["n_patients"], metrics["pair_counts"]["test"]):
        log.warning("%s: %s", run.path, warning)
    return ClassificationResult(run.path, metrics, predictions, fitted, table)


ANSWERS: tuple[str, ...] = ("delta_score", "delta_score_margin", "classifier_em", "classifier_bbse")
"""The answers to the test pairs recorded beside the classifier's (``metrics.json["answers"]``), in order:

* ``delta_score``: the encoder's regression head alone, its predicted scores of the two scans labelled by
  the scale's change rule (:mod:`learner.evaluation.score_change`); the answer a pair classifier on the same
  encoder has to beat.
* ``delta_score_margin``: the same with a stable margin calibrated on the val pairs (``margin``).
* ``classifier_em`` / ``classifier_bbse``: the classifier's posteriors re-weighted to a test prior estimated
  from the unlabelled test pairs (:mod:`learner.evaluation.label_shift`; ``prior``, in class order) —
  transductive: they look at the test pairs' embeddings, never their labels.
"""


def _other_answers(
    pairs: dict[str, pd.DataFrame],
    table: EmbeddingTable,
    fitted: FittedPairClassifier,
    features: dict[str, np.ndarray],
    config: Config,
) -> dict[str, dict[str, Any]]:
    """Test metrics (with intervals) of every answer of :data:`ANSWERS`, keyed by name."""
    scale = scale_from_config(config.data)
    earlier, later = {}, {}
    for split in ("val", "test"):
        earlier[split], later[split] = predicted_scores(pairs[split], table)
    margin = calibrate_margin(scale, earlier["val"], later["val"], pairs["val"]["label"].to_numpy())
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
    answers = {
        "delta_score": _test_metrics(
            pairs["test"], scale.change_labels(earlier["test"], later["test"]), config
        ),
        "delta_score_margin": _test_metrics(
            pairs["test"], score_change_labels(scale, earlier["test"], later["test"], margin), config
        )
        | {"margin": margin},
    }
    for name, prior in priors.items():
        adapted = reweight(test_probabilities, source_prior, prior).argmax(axis=1)
        answers[name] = _test_metrics(pairs["test"], adapted, config) | {"prior": prior.tolist()}
    return answers


def predicted_scores(pairs: pd.DataFrame, table: EmbeddingTable) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's predicted scores (float64) of every pair's earlier and later scan, each (P,)."""
    predicted = dict(zip(table.scan_ids, table.scores.astype(np.float64), strict=True))
    earlier = pairs["first_scan_id"].astype(str).map(predicted).to_numpy(dtype=np.float64)
    later = pairs["second_scan_id"].astype(str).map(predicted).to_numpy(dtype=np.float64)
    return earlier, later


def _without_skipped(
    pairs: dict[str, pd.DataFrame], table: EmbeddingTable
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """Pairs whose scans all have an embedding, and per split how many pairs named a skipped scan."""
    skipped = {scan_id for scan_id, _ in table.skipped}
    kept: dict[str, pd.DataFrame] = {}
    dropped: dict[str, int] = {}
    for split, frame in pairs.items():
        bad = frame["first_scan_id"].isin(skipped) | frame["second_scan_id"].isin(skipped)
        kept[split] = frame[~bad].reset_index(drop=True)
        dropped[split] = int(bad.sum())
        if dropped[split]:
            log.warning("%s: %d pair(s) dropped: they name unreadable (skipped) scans", split, dropped[split])
    return kept, dropped


def _prediction_table(test_pairs: pd.DataFrame, probabilities: np.ndarray) -> pd.DataFrame:
    """The test pair table with the predicted class and the class probabilities of every pair."""
    frame = test_pairs.copy()
    predicted = probabilities.argmax(axis=1)
    frame["predicted"] = predicted
    frame["predicted_name"] = [CLASS_NAMES[k] for k in predicted]
    for k, name in enumerate(CLASS_NAMES):
        frame[f"p_{name}"] = probabilities[:, k]
    return frame


def _test_metrics(test_pairs: pd.DataFrame, predicted: np.ndarray, config: Config) -> dict[str, Any]:
    """Classification metrics of the test pairs with (1 − 0.05) patient-bootstrap intervals."""
    truth = test_pairs["label"].to_numpy(dtype=np.int64)
    patients = test_pairs["first_patient_id"].astype(str).to_numpy()
    metrics = classification_metrics(truth, predicted)
    n_boot = config.classifier.bootstrap
    metrics["ci"] = {  # (nan, nan) when there is no bootstrap; atomic.write_json stores null
        name: list(
            percentile_interval(
                patient_bootstrap_samples(truth, predicted, patients, fn, n_boot, config.seed)
            )
        )
        for name, fn in BOOTSTRAP_METRICS.items()
    }
    metrics["n_boot"] = n_boot
    metrics["n_patients"] = int(np.unique(patients).size)
    return metrics
