"""How well a pretrained encoder learned the score: its best val row, its last, and an interval that says
whether it beats predicting the train mean at all.

Pretraining keeps the checkpoint with the lowest val MAE and writes that checkpoint's val predictions
(:attr:`learner.layout.RunLayout.val_predictions`). The best epoch is chosen on the same val scans it is
judged on, so its MAE is optimistic; :func:`regression_quality` therefore reports the last epoch's val MAE
beside it and a 95% patient-bootstrap interval of the MAE gain over the baseline,
baseline MAE − model MAE (score units), and an encoder "beats the baseline" only when that interval
excludes 0.

Example::

    quality = regression_quality("runs/lus-wcl")
    quality["mae_gain_low"] > 0  # the encoder beats the train mean on val, beyond patient sampling noise
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import pandas as pd

from learner.evaluation.metrics import patient_bootstrap_samples, percentile_interval
from learner.layout import RunLayout

GAIN_BOOTSTRAP = 1000
"""Patient-bootstrap resamples of the MAE gain (seeded, so a report is reproducible)."""


def regression_quality(run_dir: str | os.PathLike[str], seed: int = 0) -> dict[str, Any]:
    """A pretraining run's best val row (``metrics.json["best"]``: ``epoch``, ``val_mae``, ``baseline_mae``,
    …) plus ``last_epoch`` and ``last_val_mae`` (its last row) and, when the run wrote its val predictions,
    ``mae_gain_low`` / ``mae_gain_high``: the 95% patient-bootstrap interval of baseline MAE − val MAE of
    the best checkpoint (:data:`GAIN_BOOTSTRAP` resamples of val patients, seeded with ``seed``).

    Raises:
        FileNotFoundError: the run has no ``metrics.json``.
    """
    run = RunLayout(run_dir)
    metrics = json.loads(run.metrics.read_text(encoding="utf-8"))
    quality: dict[str, Any] = dict(metrics["best"])
    last = metrics.get("last") or {}
    quality |= {"last_epoch": last.get("epoch"), "last_val_mae": last.get("val_mae")}
    if run.val_predictions.is_file() and "train_mean" in metrics:
        low, high = mae_gain_interval(pd.read_csv(run.val_predictions), float(metrics["train_mean"]), seed)
        quality |= {"mae_gain_low": low, "mae_gain_high": high}
    return quality


def mae_gain_interval(predictions: pd.DataFrame, train_mean: float, seed: int = 0) -> tuple[float, float]:
    """95% patient-bootstrap interval of mean|score − train_mean| − mean|score − predicted| over the rows
    of ``predictions`` (``patient_id``, ``score``, ``predicted``): whole patients are resampled, because a
    patient's scans share their errors. (NaN, NaN) with fewer than two patients."""
    truth = predictions["score"].to_numpy(dtype=np.float64)
    predicted = predictions["predicted"].to_numpy(dtype=np.float64)
    patients = predictions["patient_id"].astype(str).to_numpy()
    if np.unique(patients).size < 2:
        return math.nan, math.nan

    def gain(scores: np.ndarray, guesses: np.ndarray) -> float:
        return float(np.abs(scores - train_mean).mean() - np.abs(scores - guesses).mean())

    samples = patient_bootstrap_samples(truth, predicted, patients, gain, GAIN_BOOTSTRAP, seed)
    return percentile_interval(samples)
