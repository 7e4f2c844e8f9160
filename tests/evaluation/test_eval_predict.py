"""``learner predict`` plumbing that needs no encoder: where the classifier lives, the JSON record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from learner.config import load_config
from learner.errors import CheckpointError, ManifestError
from learner.evaluation.classifier_caveat import classifier_caveat
from learner.evaluation.predict import (
    Prediction,
    classifier_location,
    read_pair_table,
    recorded_calibration,
)


def test_classifier_location_of_a_run_and_of_a_bare_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The run and its classifier/ folder give the run's clips per scan; only a classifier folder without
    its run around it falls back to one clip, and says so."""
    run = tmp_path / "cls"
    (run / "classifier").mkdir(parents=True)
    (run / "classifier" / "classifier.json").write_text("{}")
    (run / "config.yaml").write_text(load_config(None, ["classifier.clips_per_scan=3"]).to_yaml())
    assert classifier_location(run) == (run / "classifier", 3)
    assert classifier_location(run / "classifier") == (run / "classifier", 3)
    monkeypatch.chdir(run / "classifier")
    assert classifier_location(Path("."))[1] == 3
    bare = tmp_path / "copied"
    shutil.copytree(run / "classifier", bare)
    assert not caplog.records
    assert classifier_location(bare) == (bare, 1)
    assert "no classification run around it records the clips per scan; using 1" in caplog.text


def test_a_malformed_metrics_file_gives_no_caveat(tmp_path: Path) -> None:
    """A metrics.json without a number the caveat quotes (or with text for it) is no caveat, never a crash."""
    run = tmp_path / "cls"
    (run / "classifier").mkdir(parents=True)

    def caveat(test: dict[str, Any], answers: dict[str, Any]) -> str | None:
        counts = {"deteriorated": 2, "stable": 5, "improved": 1}
        metrics = {"test": test, "pair_counts": {"test": counts}, "answers": answers}
        (run / "metrics.json").write_text(json.dumps(metrics))
        return classifier_caveat(run / "classifier")

    test = {"macro_f1": 0.4, "n": 8, "n_patients": 3}
    assert caveat(test, {}) is None  # no accuracy
    assert caveat(test | {"accuracy": "high"}, {}) is None
    test["accuracy"] = 0.5
    assert caveat(test, {"delta_score": {"accuracy": 0.6}}) is None  # an answer without macro-F1
    found = caveat(test, {"delta_score": {"accuracy": 0.6, "macro_f1": 0.3}})
    assert (found or "").startswith("caveat: this classifier scored accuracy 50.0%, macro-F1 40.0%")


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ("a.mp4,", "row 2: empty 'later'"),
        (",b.mp4", "row 2: empty 'earlier'"),
        ("  ,b.mp4", "row 2: empty 'earlier'"),
    ],
)
def test_a_blank_scan_path_in_a_pairs_csv_names_its_row(tmp_path: Path, cells: str, message: str) -> None:
    """A blank cell would be read as the CSV's own folder: refused before any model is loaded."""
    source = tmp_path / "pairs.csv"
    source.write_text(f"earlier,later\na.mp4,b.mp4\n{cells}\n", encoding="utf-8")
    with pytest.raises(ManifestError) as error:
        read_pair_table(source)
    assert str(error.value) == f"{source}: {message}"


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
