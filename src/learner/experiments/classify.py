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
   per-pair predictions in ``OUT/predictions.csv``), and the same metrics of the other answers to those
   pairs (:mod:`learner.experiments.answers`).

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
from learner.data.cache import SKIP_BAD_HINT
from learner.data.manifest import Manifest
from learner.data.pairs import pair_class_counts, split_pairs, write_pair_table
from learner.data.provenance import data_source
from learner.data.scales import CLASS_NAMES, scale_from_config
from learner.data.splits import read_splits
from learner.errors import ConfigError, LearnerError, ScanReadError
from learner.evaluation.embed import EmbeddingTable, embed_scans
from learner.evaluation.metrics import classification_metrics, small_sample_warnings
from learner.evaluation.pair_classifier import FittedPairClassifier, fit_pair_classifier, pair_features
from learner.experiments.answers import other_answers, pair_metrics
from learner.experiments.tracking import track_classification
from learner.layout import RunLayout
from learner.runs import RunDir, check_inputs_outside, check_run_dir, open_run_dir, removed_unless_started
from learner.training.checkpoint import CHECKPOINT_NAMES, read_meta
from learner.training.loggers import check_logger

log = logging.getLogger(__name__)


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
    try:
        table = embed_scans(
            encoder_run,
            manifest,
            which=which,
            clips_per_scan=config.classifier.clips_per_scan,
            device=device,
            skip_bad=config.data.skip_bad_scans,
        )
    except ScanReadError as exc:  # classify has no --skip-bad flag: the line says how to skip
        raise ScanReadError(f"{exc}; {SKIP_BAD_HINT}") from None
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
    encoder_config = read_meta(RunLayout(encoder_run).checkpoint(which)).config  # its objective, for answers
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
        "test": pair_metrics(pairs["test"], predictions["predicted"].to_numpy(), config),
        "answers": other_answers(pairs, table, fitted, features, manifest, config, encoder_config),
        "val": classification_metrics(labels["val"], fitted.predict(features["val"])),
        "best_epoch": fitted.best_epoch,
        "pair_counts": {split: pair_class_counts(p) for split, p in pairs.items()},
        "pairs_dropped_for_skipped_scans": dropped,
        "skipped_scans": [{"scan_id": s, "reason": r} for s, r in table.skipped],
        "test_patients_without_pairs": no_pair,
    }
    run.write_metrics(metrics)
    test = metrics["test"]
    for warning in small_sample_warnings(test, metrics["pair_counts"]["test"]):
        log.warning("%s: %s", run.path, warning)
    return ClassificationResult(run.path, metrics, predictions, fitted, table)


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
