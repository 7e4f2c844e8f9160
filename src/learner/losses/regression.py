"""The regression term (Eq. 1) and the score standardisation it works in.

Eq. 1 sums squared errors over the batch; :func:`mse_loss` **averages** them, so the loss (and λ's balance
against the contrastive term, which is also averaged) does not change with B. Both the regression target
and the contrastive weights use scores standardised with the train split's mean and std
(:class:`ScoreStandardiser`), stored with every checkpoint so predictions can be reported in score units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from learner.errors import CheckpointError

ScoresT = TypeVar("ScoresT", Tensor, np.ndarray, float)


def mse_loss(pred_std: Tensor, target_std: Tensor, reduction: str = "mean") -> Tensor:
    """Squared error of standardised predictions: Eq. 1 averaged over the batch (``mean``), or summed as
    the paper writes it (``sum``).

    Computed in at least float32 (half-precision inputs are upcast).

    Args:
        pred_std: predicted standardised scores, shape (B,).
        target_std: standardised ground-truth scores, shape (B,).
        reduction: ``mean`` or ``sum``.

    Returns:
        scalar, (1/B) Σ_i (HS_i − ĤS_i)² (``mean``) or Σ_i (HS_i − ĤS_i)² (``sum``).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction should be 'mean' or 'sum', got {reduction!r}")
    if pred_std.ndim != 1 or pred_std.shape != target_std.shape:
        raise ValueError(
            f"pred_std and target_std should both have shape (B,), got {tuple(pred_std.shape)} "
            f"and {tuple(target_std.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(pred_std.dtype, target_std.dtype), torch.float32)
    squared = (pred_std.to(dtype) - target_std.to(dtype)).square()
    return squared.sum() if reduction == "sum" else squared.mean()


@dataclass(frozen=True)
class ScoreStandardiser:
    """z = (score − mean) / std with the train split's statistics.

    Attributes:
        mean: train-split mean score (score units).
        std: train-split population std (score units), > 0.
    """

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.mean) and np.isfinite(self.std) and self.std > 0):
            raise ValueError(f"standardiser needs a finite mean and a finite std > 0, got {self}")

    @classmethod
    def fit(cls, scores: Tensor | np.ndarray | list[float], min_std: float = 1e-6) -> ScoreStandardiser:
        """Fit on the TRAIN split's scores (N,); std floored at ``min_std`` (a constant split has std 0)."""
        values = np.asarray(scores, dtype=np.float64).reshape(-1)
        if values.size == 0:
            raise ValueError("cannot fit a score standardiser on zero scores")
        if not np.isfinite(values).all():
            raise ValueError("cannot fit a score standardiser on non-finite scores")
        return cls(mean=float(values.mean()), std=max(float(values.std()), min_std))

    def standardise(self, scores: ScoresT) -> ScoresT:
        """Score units → standardised units, any shape."""
        return (scores - self.mean) / self.std

    def destandardise(self, scores_std: ScoresT) -> ScoresT:
        """Standardised units → score units, any shape."""
        return scores_std * self.std + self.mean

    def to_dict(self) -> dict[str, float]:
        """``{"mean": …, "std": …}`` for checkpoint metadata (JSON)."""
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreStandardiser:
        """Inverse of :meth:`to_dict`; a bad or missing entry is a :class:`CheckpointError` naming the key."""
        unknown = sorted(set(data) - {"mean", "std"})
        if unknown:
            raise CheckpointError(f"score standardisation has unknown keys {unknown}; expected 'mean', 'std'")
        values: dict[str, float] = {}
        for key in ("mean", "std"):
            if key not in data:
                raise CheckpointError(f"score standardisation is missing key {key!r}")
            try:
                values[key] = float(data[key])
            except (TypeError, ValueError):
                raise CheckpointError(
                    f"score standardisation key {key!r} is not a number: {data[key]!r}"
                ) from None
        try:
            return cls(**values)
        except ValueError as exc:
            raise CheckpointError(f"score standardisation is invalid: {exc}") from None
