"""Validation of the pretrained regressor (Section 2.3): predictions in score units and their errors.

A self-supervised run is validated by its own objective on fixed views of the val scans (:func:`view_loss`).
The device-data path (``data.device_data``) predicts clips already on the device (:func:`predict_clips`):
the same clips and batches as the val loader's, with one host transfer per validation instead of one per
batch.

Everything here is reported in SCORE units (S/F ratio, MMSE points): the head predicts standardised scores
and :class:`ScoreStandardiser` maps them back. The baseline always predicts the train split's mean score;
a model that does not clearly beat it has learnt nothing about the score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from learner.atomic import atomic_path
from learner.data.clip_store import EvalClips
from learner.data.datasets import views_to_batch
from learner.data.manifest import ScanRecord
from learner.losses.registry import ViewObjective
from learner.losses.regression import ScoreStandardiser
from learner.training.faults import fault_point


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


def write_val_predictions(
    path: Path, records: Sequence[ScanRecord], predicted: np.ndarray, truth: np.ndarray
) -> None:
    """Atomically write the val predictions (N,) of ``records`` (the val scans, in loader order) as CSV:
    ``scan_id``, ``patient_id``, ``score`` and ``predicted`` (score units); the report bootstraps the MAE
    against the train mean over patients from it."""
    if not len(records) == len(predicted) == len(truth):
        raise ValueError(f"{len(records)} val scans but {len(predicted)} predictions and {len(truth)} scores")
    frame = pd.DataFrame(
        {
            "scan_id": [r.scan_id for r in records],
            "patient_id": [r.patient_id for r in records],
            "score": truth,
            "predicted": predicted,
        }
    )
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


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
        pred_std = _predicted(model, clips.to(device, non_blocking=True), amp_dtype)  # (B,) standardised
        preds.append(standardiser.destandardise(pred_std.cpu()))
        targets.append(scores.double())
        fault_point("validation")
    return torch.cat(preds).numpy(), torch.cat(targets).numpy()


@torch.no_grad()
def predict_clips(
    model: nn.Module,
    clips: EvalClips,
    standardiser: ScoreStandardiser,
    amp_dtype: torch.dtype | None,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_scores` on clips held on the device (``data.device_data``), with no host sync per
    batch: the same batches as the val loader's (``batch_size`` scans in order, the last one short), each
    prediction kept on the device, then predictions and targets brought to the host in one transfer.

    Returns:
        Predictions and targets, two (N,) float64 arrays in score units.
    """
    model.eval()
    preds = []
    for start in range(0, len(clips), batch_size):
        preds.append(_predicted(model, clips.batch(start, start + batch_size), amp_dtype))  # (b,)
        fault_point("validation")
    predicted = standardiser.destandardise(torch.cat(preds))  # (N,) score units, still on the device
    both = torch.stack([predicted, clips.scores.double()]).cpu().numpy()  # (2, N): the one transfer
    return both[0], both[1]


def _predicted(model: nn.Module, clips: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """The head's standardised predictions (b,) float64 of clips (b, T, C, H, W) on the model's device."""
    with torch.autocast(clips.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        pred_std: torch.Tensor = model(clips)[1]  # the model returns (embeddings, predictions)
    return pred_std.double()


@torch.no_grad()
def view_loss(
    model: nn.Module,
    loader: DataLoader[Any],
    objective: ViewObjective,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    batch_size: int,
) -> dict[str, float]:
    """The self-supervised objective on the two views of every item of ``loader`` (a :class:`TwoViews`
    dataset), in eval mode: ``val_loss`` and ``val_<term>``, means over consecutive batches of
    ``batch_size`` scans (the incomplete last batch is dropped unless it is the only one)."""
    model.eval()
    firsts, seconds = [], []
    for views, _, _ in loader:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            embeddings, _ = model(views_to_batch(views.to(device, non_blocking=True)))  # (2b, D)
        first, second = embeddings.float().chunk(2)
        firsts.append(first)
        seconds.append(second)
        fault_point("validation")
    view_a, view_b = torch.cat(firsts), torch.cat(seconds)  # (N, D) each
    starts = range(0, max(len(view_a) - batch_size + 1, 1), batch_size)
    outs = [objective(view_a[s : s + batch_size], view_b[s : s + batch_size]) for s in starts]
    row = {"val_loss": float(np.mean([out.total.item() for out in outs]))}
    row |= {f"val_{name}": float(np.mean([out.terms[name].item() for out in outs])) for name in outs[0].terms}
    return row | collapse_diagnostics(view_a)


def collapse_diagnostics(embeddings: torch.Tensor) -> dict[str, float]:
    """Whether embeddings (N, D) collapsed: ``val_embedding_std``, the mean over dimensions of each
    dimension's std (VICReg's variance term pushes it to 1; near 0 is collapse), and
    ``val_effective_rank``, exp of the entropy of the normalised singular values of the centred embeddings
    (Roy & Vetterli 2007): D for a full-rank spread, 1 when every embedding lies on one line."""
    values = embeddings.detach().double()
    if values.shape[0] < 2:
        return {"val_embedding_std": math.nan, "val_effective_rank": math.nan}
    centred = values - values.mean(dim=0)
    singular = torch.linalg.svdvals(centred)
    share = singular / singular.sum() if singular.sum() > 0 else singular
    nonzero = share[share > 0]
    rank = float(torch.exp(-(nonzero * nonzero.log()).sum())) if nonzero.numel() else 0.0
    return {"val_embedding_std": float(values.std(dim=0).mean()), "val_effective_rank": rank}
