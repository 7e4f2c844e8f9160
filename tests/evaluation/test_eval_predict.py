"""``learner predict`` plumbing that needs no encoder: where the classifier lives, the JSON record."""

from __future__ import annotations

import json
from pathlib import Path

from learner.config import load_config
from learner.evaluation.predict import Prediction, classifier_location


def test_classifier_location_of_a_run_and_of_a_bare_folder(tmp_path: Path) -> None:
    run = tmp_path / "cls"
    (run / "classifier").mkdir(parents=True)
    (run / "classifier" / "classifier.json").write_text("{}")
    (run / "config.yaml").write_text(load_config(None, ["classifier.clips_per_scan=3"]).to_yaml())
    assert classifier_location(run) == (run / "classifier", 3)
    assert classifier_location(run / "classifier") == (run / "classifier", 1)


def test_prediction_json_fields() -> None:
    prediction = Prediction(
        label="improved",
        probabilities={"deteriorated": 0.1, "stable": 0.2, "improved": 0.7},
        scores={"earlier": 150.0, "later": 320.0},
        distance=0.25,
        scans={"earlier": "a.mp4", "later": "b.mp4"},
        encoder_fingerprint="ab" * 32,
        combine="difference",
    )
    record = json.loads(json.dumps(prediction.to_json()))
    assert record["prediction"] == "improved"
    assert record["predicted_scores"] == {"earlier": 150.0, "later": 320.0}
    assert record["embedding_cosine_distance"] == 0.25
