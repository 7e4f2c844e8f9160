"""The clinical use: did this patient improve, stay stable or deteriorate between two scans? (Section 2.4)

:func:`predict_pair` decodes both scans exactly as training did — the run's
:meth:`learner.data.preprocess.Preprocessor.load` (the same call that fills the scan cache), then the clips of
:func:`learner.evaluation.embed.clips_from_frames` — embeds them with the frozen encoder, combines the two
embeddings as the classifier was trained (difference or concatenation, earlier scan first) and returns the
class probabilities, each scan's predicted score (score units) and the cosine distance of the embeddings.

The classifier must belong to the encoder: its recorded ``encoder_fingerprint`` has to equal the hash of the
encoder checkpoint's weights, otherwise :class:`learner.errors.CheckpointError`.

Example::

    result = predict_pair("runs/lus-wcl", "runs/lus-wcl-classify", "day1.mp4", "day2.mp4")
    print(result.label, result.probabilities)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from learner.data.preprocess import Preprocessor
from learner.data.scales import CLASS_NAMES
from learner.errors import ScanReadError
from learner.evaluation.embed import clips_from_frames, embed_clips
from learner.evaluation.embedding_analysis import cosine_distances_for_pairs
from learner.evaluation.pair_classifier import META_FILE, FittedPairClassifier, pair_features
from learner.runs import load_run_config
from learner.training.checkpoint import checkpoint_fingerprint, load_regressor

SIDES: tuple[str, ...] = ("earlier", "later")


@dataclass(frozen=True)
class Prediction:
    """The health change between an earlier and a later scan of one patient.

    ``probabilities`` maps each class (deteriorated, stable, improved) to its probability (they sum to 1);
    ``scores`` maps earlier/later to the encoder's predicted health score in score units; ``distance`` is
    1 − cos(u_earlier, u_later).
    """

    label: str
    probabilities: dict[str, float]
    scores: dict[str, float]
    distance: float
    scans: dict[str, str]
    encoder_fingerprint: str
    combine: str

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
        }


def classifier_location(path: str | os.PathLike[str]) -> tuple[Path, int]:
    """The folder holding ``classifier.json`` and the clips per scan its embeddings averaged.

    ``path`` is a classification run (``learner classify --out``; its ``classifier/`` folder and config are
    used) or the classifier folder itself (one clip per scan, the default).
    """
    folder = Path(path)
    if (folder / "classifier" / META_FILE).is_file():
        return folder / "classifier", load_run_config(folder).classifier.clips_per_scan
    return folder, 1


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
    checkpoint = Path(encoder_run) / "checkpoints" / which
    fingerprint = checkpoint_fingerprint(checkpoint)
    folder, clips_per_scan = classifier_location(classifier)
    fitted = FittedPairClassifier.load(folder, encoder_fingerprint=fingerprint)
    paths = {side: Path(p) for side, p in zip(SIDES, (earlier, later), strict=True)}
    for path in paths.values():
        if not path.exists():
            raise ScanReadError(f"{path}: file not found")
    model, meta = load_regressor(encoder_run, which=which, device=device)
    config = meta.config
    preprocessor = Preprocessor.from_config(config.data)
    channels = meta.encoder.in_channels
    clips = torch.stack(
        [
            clips_from_frames(preprocessor.load(path), config.data.frames, clips_per_scan, channels)
            for path in paths.values()
        ]
    )  # (2, K, T, C, H, W)
    embeddings, scores = embed_clips(model, clips, meta.score_standardisation)  # (2, D), (2,)
    pair = pd.DataFrame({"first_scan_id": ["earlier"], "second_scan_id": ["later"]})
    features = pair_features(pair, embeddings, list(SIDES), fitted.meta.combine)
    probabilities = fitted.predict_proba(features)[0].astype(np.float64)
    distance = cosine_distances_for_pairs(pair, embeddings, list(SIDES))[0]
    return Prediction(
        label=CLASS_NAMES[int(probabilities.argmax())],
        probabilities={name: float(p) for name, p in zip(CLASS_NAMES, probabilities, strict=True)},
        scores={side: float(s) for side, s in zip(SIDES, scores, strict=True)},
        distance=float(distance),
        scans={side: str(path) for side, path in paths.items()},
        encoder_fingerprint=fingerprint,
        combine=fitted.meta.combine,
    )
