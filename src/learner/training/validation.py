"""Validation of the pretrained regressor (Section 2.3): predictions in score units and their errors.

Everything here is reported in SCORE units (S/F ratio, MMSE points): the head predicts standardised scores
and :class:`ScoreStandardiser` maps them back. The baseline always predicts the train split's mean score;
a model that does not clearly beat it has learnt nothing about the score.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from learner.losses.regression import ScoreStandardiser


def regression_metrics(pred: np.ndarray, target: np.ndarray, train_mean: float) -> dict[str, float]:
    """MAE, RMSE and Pearson r of predictions (N,) against targets (N,), both in score units, and the MAE
    and RMSE of always predicting ``train_mean`` (the bar to clear). r is NaN if either side is constant."""
    error, baseline = pred - target, train_mean - target
    defined = pred.std() > 0 and target.std() > 0
    return {
        "val_mae": float(np.abs(error).mean()),
        "val_rmse": float(np.sqrt(np.square(error).mean())),
        "val_r": float(np.corrcoef(pred, target)[0, 1]) if defined else math.nan,
        "baseline_mae": float(np.abs(baseline).mean()),
        "baseline_rmse": float(np.sqrt(np.square(baseline).mean())),
    }


@torch.no_grad()
def predict_scores(
    model: nn.Module,
    loader: DataLoader[Any],
    standardiser: ScoreStandardiser,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and targets over ``loader`` in eval mode: two (N,) float64 arrays in score units."""
    model.eval()
    preds, targets = [], []
    for clips, scores, _ in loader:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            _, pred_std = model(clips.to(device, non_blocking=True))  # (B,) standardised
        preds.append(standardiser.destandardise(pred_std.double().cpu()))
        targets.append(scores.double())
    return torch.cat(preds).numpy(), torch.cat(targets).numpy()
