"""``learner predict`` plumbing that needs no encoder: where the classifier lives, the JSON record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learner.config import load_config
from learner.errors import CheckpointError
from learner.evaluation.predict import Prediction, classifier_location, recorded_calibration


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


def test_a_recorded_change_model_is_read_and_a_malformed_one_named(tmp_path: Path) -> None:
    """No run or no calibrated answer: no change model; one that does not read as a model: an error naming
    the classification's metrics.json, never a silent None."""
    run = tmp_path / "cls"
    (run / "classifier").mkdir(parents=True)
    assert recorded_calibration(run / "classifier") is None  # no metrics.json around it
    metrics = run / "metrics.json"
    metrics.write_text(json.dumps({"answers": {"delta_score": {}}}))
    assert recorded_calibration(run / "classifier") is None
    model = {"level_intercept": 1.0, "level_slope": 0.9, "level_sd": 3.0, "change_intercept": 0.0,
             "change_slope": 0.5, "change_sd": 2.0, "n_scans": 9, "n_pairs": 4}  # fmt: skip
    metrics.write_text(json.dumps({"answers": {"delta_score_calibrated": {"calibration": model}}}))
    found = recorded_calibration(run / "classifier")
    assert found is not None
    assert found.as_dict() == model
    metrics.write_text(json.dumps({"answers": {"delta_score_calibrated": {"calibration": {"slope": 1}}}}))
    with pytest.raises(CheckpointError, match=r"metrics\.json: answers\.delta_score_calibrated\.calibration"):
        recorded_calibration(run)
