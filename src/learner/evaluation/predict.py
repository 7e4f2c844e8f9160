"""The clinical use: did this patient improve, stay stable or deteriorate between two scans? (Section 2.4)

:func:`predict_pair` decodes both scans exactly as training did — the run's
:meth:`learner.data.preprocess.Preprocessor.load` (the same call that fills the scan cache), then the clips of
:func:`learner.data.datasets.clips_from_frames` — embeds them with the frozen encoder, combines the two
embeddings as the classifier was trained (difference or concatenation, earlier scan first) and returns the
class probabilities, each scan's predicted score (score units) and the cosine distance of the embeddings.

The classifier must belong to the encoder: its recorded ``encoder_fingerprint`` has to equal the hash of the
encoder checkpoint's weights, otherwise :class:`learner.errors.CheckpointError`.

Example::

    result = predict_pair("runs/lus-wcl", "runs/lus-wcl-classify", "day1.mp4", "day2.mp4")
    print(result.label, result.probabilities)

Many pairs, the models loaded once: :class:`Predictor`, or :func:`predict_pairs` on a CSV of
``earlier,later`` paths.

Where the classification run recorded a change model (val patients with repeat visits: the *Δ predicted
score, calibrated* answer, :mod:`learner.evaluation.change_posterior`), each prediction also carries that
answer: the probability of each label given the two predicted scores.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from learner.data.datasets import clips_from_frames
from learner.data.preprocess import Preprocessor
from learner.data.scales import CLASS_NAMES, scale_from_config
from learner.data.scan_kinds import kind_mismatch
from learner.errors import CheckpointError, ManifestError, ScanReadError
from learner.evaluation.change_posterior import ChangeCalibration, change_posterior
from learner.evaluation.embed import embed_clips
from learner.evaluation.embedding_analysis import cosine_distances_for_pairs
from learner.evaluation.pair_classifier import META_FILE, FittedPairClassifier, pair_features
from learner.layout import RunLayout
from learner.models.heads import ScoreRegressor
from learner.runs import load_run_config
from learner.training.checkpoint import CheckpointMeta, checkpoint_fingerprint, load_regressor

log = logging.getLogger(__name__)

SIDES: tuple[str, ...] = ("earlier", "later")


@dataclass(frozen=True)
class Prediction:
    """The health change between an earlier and a later scan of one patient.

    ``probabilities`` maps each class (deteriorated, stable, improved) to its probability (they sum to 1);
    ``scores`` maps earlier/later to the encoder's predicted health score in score units; ``distance`` is
    1 − cos(u_earlier, u_later). ``score_change`` maps each class to its probability given the two
    predicted scores under the classification run's val-fitted change model (None where it has none).
    ``warnings``: one line per scan of a kind the encoder was not trained on (an MRI volume given to an
    encoder of lung-ultrasound clips: :func:`learner.data.scan_kinds.kind_mismatch`), whose numbers then
    mean nothing.
    """

    label: str
    probabilities: dict[str, float]
    scores: dict[str, float]
    distance: float
    scans: dict[str, str]
    encoder_fingerprint: str
    combine: str
    score_change: dict[str, float] | None = None
    warnings: tuple[str, ...] = ()

    @property
    def score_change_label(self) -> str | None:
        """The most probable class of :attr:`score_change` (None without a change model)."""
        return (
            None if self.score_change is None else max(self.score_change, key=self.score_change.__getitem__)
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``learner predict --json`` prints)."""
        return {
            "prediction": self.label,
            "probabilities": self.probabilities,
            "predicted_scores": self.scores,
            "embedding_cosine_distance": self.distance,
            "scans": self.scans,
            "encoder_fingerprint": self.encoder_fingerprint,
            "combine": self.combine,
            "score_change_prediction": self.score_change_label,
            "score_change_probabilities": self.score_change,
            "warnings": list(self.warnings),
        }

    def to_row(self) -> dict[str, Any]:
        """Its columns of a prediction table (``learner predict --pairs`` and ``--out``), after the pair's
        own: ``prediction``, ``p_<class>``, ``score_earlier``, ``score_later``, ``distance``, ``warnings``
        (joined by ``; ``, empty when none) and, with a change model, ``score_change_prediction`` and
        ``score_change_p_<class>``."""
        row = (
            {"prediction": self.label}
            | {f"p_{name}": p for name, p in self.probabilities.items()}
            | {f"score_{side}": score for side, score in self.scores.items()}
            | {"distance": self.distance, "warnings": "; ".join(self.warnings)}
        )
        if self.score_change is None:
            return row
        probabilities = {f"score_change_p_{name}": p for name, p in self.score_change.items()}
        return row | {"score_change_prediction": self.score_change_label} | probabilities


def classification_run(classifier: str | os.PathLike[str]) -> Path | None:
    """The classification run (``learner classify --out``, a grid cell's classification stage) of
    ``classifier``: ``classifier`` itself when it is one, the run around it when it is that run's
    ``classifier/`` folder, else None (a classifier folder copied out of its run)."""
    folder = Path(classifier)
    named = Path(os.path.abspath(folder)) if folder.name in ("", "..") else folder  # "." has no name
    around = [named.parent] if named.name == RunLayout(named.parent).classifier.name else []
    for run in (folder, *around):  # a pretraining run has metrics.json but no classifier/
        fitted, metrics = RunLayout(run).classifier, RunLayout(run).metrics
        if (fitted / META_FILE).is_file() or (fitted.is_dir() and metrics.is_file()):
            return run
    return None


def classifier_location(path: str | os.PathLike[str]) -> tuple[Path, int]:
    """The folder holding ``classifier.json`` and the clips per scan K its embeddings averaged: for a
    classification run and for its ``classifier/`` folder alike, the run's ``classifier.clips_per_scan``
    (``classifier.json`` does not record K); 1, with a warning, for a classifier folder out of its run.

    Raises:
        RunDirError: the classification run has no readable ``config.yaml``.
    """
    folder = Path(path)
    run = classification_run(folder)
    if run is not None:
        return RunLayout(run).classifier, load_run_config(run).classifier.clips_per_scan
    if (folder / META_FILE).is_file():  # else no classifier at all: loading it names what is missing
        log.warning("%s: no classification run around it records the clips per scan; using 1", folder)
    return folder, 1


class Predictor:
    """An encoder run and its classifier loaded once, for any number of scan pairs (:meth:`predict`).

    Raises (on construction):
        CheckpointError: a missing/invalid encoder or classifier, or a classifier trained on another encoder.
    """

    def __init__(
        self,
        encoder_run: str | os.PathLike[str],
        classifier: str | os.PathLike[str],
        *,
        which: str = "best",
        device: str = "cpu",
    ) -> None:
        fingerprint = checkpoint_fingerprint(RunLayout(encoder_run).checkpoint(which))
        folder, clips_per_scan = classifier_location(classifier)
        fitted = FittedPairClassifier.load(folder, encoder_fingerprint=fingerprint)
        model, meta = load_regressor(encoder_run, which=which, device=device)
        self._hold(model, meta, fitted, clips_per_scan, fingerprint, recorded_calibration(classifier))

    @classmethod
    def from_models(
        cls,
        model: ScoreRegressor,
        meta: CheckpointMeta,
        classifier: FittedPairClassifier,
        *,
        clips_per_scan: int,
        fingerprint: str,
        calibration: ChangeCalibration | None = None,
    ) -> Predictor:
        """A predictor on models already loaded (a model folder: :mod:`learner.evaluation.model_folder`);
        ``fingerprint`` identifies the encoder's weights, as its ``Prediction`` records them;
        ``calibration`` the change model of the score-change answer (None: no such answer)."""
        predictor = object.__new__(cls)
        predictor._hold(model, meta, classifier, clips_per_scan, fingerprint, calibration)
        return predictor

    def _hold(
        self,
        model: ScoreRegressor,
        meta: CheckpointMeta,
        classifier: FittedPairClassifier,
        clips_per_scan: int,
        fingerprint: str,
        calibration: ChangeCalibration | None,
    ) -> None:
        self.model, self.meta, self.classifier = model, meta, classifier
        self.clips_per_scan, self.fingerprint, self.calibration = clips_per_scan, fingerprint, calibration
        self.preprocessor = Preprocessor.from_config(meta.config.data)

    def predict(self, earlier: str | os.PathLike[str], later: str | os.PathLike[str]) -> Prediction:
        """Classify the change from scan ``earlier`` to scan ``later`` (files of any readable type).

        A scan of a kind the encoder was not trained on is predicted all the same, with a warning logged and
        kept in :attr:`Prediction.warnings`.

        Raises:
            ScanReadError: a scan is missing or cannot be decoded (the message names the file).
        """
        paths = {side: Path(p) for side, p in zip(SIDES, (earlier, later), strict=True)}
        for path in paths.values():
            if not path.exists():
                raise ScanReadError(f"{path}: file not found")
        warnings = tuple(
            line for path in paths.values() if (line := kind_mismatch(path, self.meta.scan_kinds)) is not None
        )
        for line in warnings:
            log.warning("%s", line)
        data, channels = self.meta.config.data, self.meta.encoder.in_channels
        clips = torch.stack(
            [
                clips_from_frames(
                    self.preprocessor.load(path),
                    data.frames,
                    self.clips_per_scan,
                    channels,
                    sampling=data.sampling,
                )
                for path in paths.values()
            ]
        )  # (2, K, T, C, H, W)
        embeddings, scores = embed_clips(self.model, clips, self.meta.score_standardisation)  # (2, D), (2,)
        pair = pd.DataFrame({"first_scan_id": ["earlier"], "second_scan_id": ["later"]})
        combine = self.classifier.meta.combine
        features = pair_features(pair, embeddings, list(SIDES), combine)
        probabilities = self.classifier.predict_proba(features)[0].astype(np.float64)
        distance = cosine_distances_for_pairs(pair, embeddings, list(SIDES))[0]
        score_change = None
        if self.calibration is not None:
            posterior = change_posterior(
                scale_from_config(data), self.calibration, scores[:1].astype(np.float64), scores[1:]
            )[0]
            score_change = {name: float(p) for name, p in zip(CLASS_NAMES, posterior, strict=True)}
        return Prediction(
            label=CLASS_NAMES[int(probabilities.argmax())],
            probabilities={name: float(p) for name, p in zip(CLASS_NAMES, probabilities, strict=True)},
            scores={side: float(s) for side, s in zip(SIDES, scores, strict=True)},
            distance=float(distance),
            scans={side: str(path) for side, path in paths.items()},
            encoder_fingerprint=self.fingerprint,
            combine=combine,
            score_change=score_change,
            warnings=warnings,
        )


def predict_pair(
    encoder_run: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    earlier: str | os.PathLike[str],
    later: str | os.PathLike[str],
    *,
    which: str = "best",
    device: str = "cpu",
) -> Prediction:
    """Classify the change from scan ``earlier`` to scan ``later`` (files of any readable type).

    Raises:
        ScanReadError: a scan is missing or cannot be decoded (the message names the file).
        CheckpointError: a missing/invalid encoder or classifier, or a classifier trained on another encoder.
    """
    return Predictor(encoder_run, classifier, which=which, device=device).predict(earlier, later)


PAIR_COLUMNS: tuple[str, ...] = ("earlier", "later")
"""The columns ``learner predict --pairs`` needs: one scan path each (relative paths: to the CSV's folder)."""


def predict_pairs(
    encoder_run: str | os.PathLike[str],
    classifier: str | os.PathLike[str],
    pairs_csv: str | os.PathLike[str],
    *,
    which: str = "best",
    device: str = "cpu",
) -> pd.DataFrame:
    """Every pair of ``pairs_csv`` (columns ``earlier``, ``later``; others are kept) → one row each, in
    file order: the CSV's columns, then :meth:`Prediction.to_row`'s. The models are loaded once.

    Raises:
        ManifestError: the CSV is unreadable, lacks a column or holds no pair.
        ScanReadError: a scan is missing or undecodable; the message names the CSV row (1-based data row).
    """
    table = read_pair_table(pairs_csv)
    predictor = Predictor(encoder_run, classifier, which=which, device=device)
    return predict_table(predictor, table, pairs_csv)


def read_pair_table(pairs_csv: str | os.PathLike[str]) -> pd.DataFrame:
    """The pair table ``pairs_csv`` (all columns as strings), checked before any model is loaded.

    Raises:
        ManifestError: the CSV is unreadable, lacks a column of :data:`PAIR_COLUMNS`, holds no pair or a
            blank scan path (the message names the 1-based data row and the column).
    """
    source = Path(pairs_csv)
    try:
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{source}: unreadable pair table ({exc})") from None
    missing = [column for column in PAIR_COLUMNS if column not in table.columns]
    if missing:
        raise ManifestError(f"{source}: missing column(s) {', '.join(missing)} (one scan path each)")
    if table.empty:  # an empty answer would look like a finished one
        raise ManifestError(f"{source}: no pairs (a header and no data rows)")
    for row, cells in enumerate(table[list(PAIR_COLUMNS)].itertuples(index=False), start=1):
        for column, cell in zip(PAIR_COLUMNS, cells, strict=True):
            if not cell.strip():  # relative to the CSV's folder, a blank path would name that folder
                raise ManifestError(f"{source}: row {row}: empty {column!r}")
    return table


def predict_table(
    predictor: Predictor, table: pd.DataFrame, pairs_csv: str | os.PathLike[str]
) -> pd.DataFrame:
    """:func:`predict_pairs` on a table read by :func:`read_pair_table` from ``pairs_csv`` (scan paths are
    relative to its folder; errors name its rows), with models already loaded."""
    source = Path(pairs_csv)
    rows: list[dict[str, Any]] = []
    for row, (earlier, later) in enumerate(zip(table["earlier"], table["later"], strict=True), start=1):
        try:
            result = predictor.predict(source.parent / earlier, source.parent / later)
        except ScanReadError as exc:
            raise ScanReadError(f"{source}: row {row}: {exc}") from None
        rows.append(result.to_row())
    return pd.concat([table, pd.DataFrame(rows, index=table.index)], axis=1)


def classification_metrics(classifier: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The ``metrics.json`` (path, content) of the classification run of ``classifier``
    (:func:`classification_run`); None when there is none or it does not read as JSON."""
    run = classification_run(classifier)
    if run is None:
        return None
    metrics_file = RunLayout(run).metrics
    try:
        return metrics_file, json.loads(metrics_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def recorded_calibration(classifier: str | os.PathLike[str]) -> ChangeCalibration | None:
    """The change model the classification run fitted on its val split (``answers.delta_score_calibrated``),
    None when it recorded none (val patients with one visit each, or no run around the classifier).

    Raises:
        CheckpointError: the run recorded one that does not read as a change model (the file named).
    """
    found = classification_metrics(classifier)
    if found is None:
        return None
    metrics_file, metrics = found
    answers = metrics.get("answers") if isinstance(metrics, dict) else None
    if not isinstance(answers, dict) or "delta_score_calibrated" not in answers:
        return None
    try:
        return ChangeCalibration(**answers["delta_score_calibrated"]["calibration"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{metrics_file}: answers.delta_score_calibrated.calibration is not a change model ({exc})"
        ) from None
