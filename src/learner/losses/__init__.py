"""Losses as a library: each takes ``(embeddings (B, D), scores (B,))`` — plus optional ``ref_embeddings``
(N, D) and ``ref_scores`` (N,) from a cross-batch memory — and returns a scalar; none needs a config object.
The self-supervised :class:`VICRegLoss` takes two views ``(view_a (B, D), view_b (B, D))`` of the same
scans instead (no scores).

Example::

    from learner.losses import RankNContrastLoss
    loss = RankNContrastLoss(temperature=2.0)(embeddings, scores)

The ``loss`` config section is translated into these by :mod:`learner.losses.registry`.
"""

from learner.losses.contrastive import (
    LiteralWeighting,
    PairwiseContrastiveLoss,
    ScaledWeighting,
    Unweighted,
    WeightedContrastiveLoss,
)
from learner.losses.infonce import SupConBinsLoss, YAwareInfoNCELoss
from learner.losses.rank_n_contrast import RankNContrastLoss
from learner.losses.regression import ScoreStandardiser, mse_loss
from learner.losses.selection import PairSelection, select_pairs
from learner.losses.self_supervised import VICRegLoss
from learner.losses.similarity import ExpCosine, ShiftedCosine, cosine_matrix, feature_logits

__all__ = [
    "ExpCosine",
    "LiteralWeighting",
    "PairSelection",
    "PairwiseContrastiveLoss",
    "RankNContrastLoss",
    "ScaledWeighting",
    "ScoreStandardiser",
    "ShiftedCosine",
    "SupConBinsLoss",
    "Unweighted",
    "VICRegLoss",
    "WeightedContrastiveLoss",
    "YAwareInfoNCELoss",
    "cosine_matrix",
    "feature_logits",
    "mse_loss",
    "select_pairs",
]
