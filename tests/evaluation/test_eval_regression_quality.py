"""The val-MAE gain over the train mean and its patient-bootstrap interval (issue 23 point 3), against
cases whose every resample can be listed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from learner.evaluation.regression_quality import mae_gain_interval, regression_quality


def _frame(rows: list[tuple[str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["patient_id", "score", "predicted"])


def test_two_patients_give_an_interval_over_their_four_resamples() -> None:
    # P1: errors 0 vs the mean's 10 (gain 10); P2: error 4 vs the mean's 2 (gain −2); train mean 10
    frame = _frame([("P1", 20.0, 20.0), ("P2", 12.0, 16.0)])
    low, high = mae_gain_interval(frame, train_mean=10.0, seed=0)
    # resamples {P1,P1}: 10, {P2,P2}: −2, mixed: 4 — the percentile interval lies within [−2, 10]
    assert -2.0 <= low <= high <= 10.0
    assert low < 4.0 < high


def test_predicting_the_mean_has_no_gain_and_a_perfect_model_all_of_it() -> None:
    frame = _frame([(f"P{i}", 10.0 + i, 10.0) for i in range(6)])  # the model says the train mean, 10
    assert mae_gain_interval(frame, train_mean=10.0) == (0.0, 0.0)
    perfect = frame.assign(predicted=frame["score"])
    low, high = mae_gain_interval(perfect, train_mean=10.0)
    assert 0.0 < low <= 2.5 <= high  # the gain is the baseline MAE itself, mean 2.5 over the patients
    assert math.isnan(mae_gain_interval(frame.iloc[:1], train_mean=10.0)[0])  # one patient: no interval


def test_regression_quality_adds_the_last_epoch_and_the_interval(tmp_path: Path) -> None:
    best = {"epoch": 2, "val_mae": 0.0, "baseline_mae": 2.5}
    last = {"epoch": 4, "val_mae": 1.5, "baseline_mae": 2.5}
    (tmp_path / "metrics.json").write_text(json.dumps({"best": best, "last": last, "train_mean": 10.0}))
    quality = regression_quality(tmp_path)
    assert quality["last_epoch"] == 4
    assert quality["last_val_mae"] == 1.5
    assert "mae_gain_low" not in quality  # no val predictions written: no interval claimed
    rows = [(f"P{i}", 10.0 + i, 10.0 + i) for i in range(6)]
    _frame(rows).assign(scan_id=[f"s{i}" for i in range(6)]).to_csv(
        tmp_path / "val_predictions.csv", index=False
    )
    quality = regression_quality(tmp_path)
    assert quality["mae_gain_low"] > 0
    assert 2.5 <= quality["mae_gain_high"] <= 5.0  # at most P5 drawn six times (gain 5)
