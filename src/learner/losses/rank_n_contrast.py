"""Rank-N-Contrast (RnC): Zha, Cao, Li, Wang, Liu, Katabi, "Rank-N-Contrast: Learning Continuous
Representations for Regression", NeurIPS 2023.

For anchor i and each other candidate j, the candidates at least as far from i in label as j form the
negatives of the pair (i, j):

    S_ij = {k ≠ i : |y_i − y_k| ≥ |y_i − y_j|}            (j ∈ S_ij; ties with j included)
    ℓ_ij = −log( exp(l_ij) / Σ_{k∈S_ij} exp(l_ik) )      l = similarity / τ (:func:`feature_logits`)
    L    = (1 / (B·(R − 1))) Σ_i Σ_{j≠i} ℓ_ij

so the embedding ranks candidates by label distance. The paper uses l_ij = −‖u_i − u_j‖₂ / τ with τ = 2
(``similarity="neg_l2"``); cosine logits are the default here, like the other softmax terms.

**Computation in O(B·R) memory, no loop over anchors.** The public implementation loops over j and builds a
(B, B) mask each time (O(B³) time). Here each anchor's candidates are sorted by label distance once; in that
order S_ij is a suffix — it starts at the first candidate whose distance equals d_ij (the ≥ keeps the whole
tie group) — so a reversed ``logcumsumexp`` gives every suffix's log-sum-exp and ``searchsorted(…,
side="left")`` picks, for each j, the suffix that starts at its tie group. The anchor's own column is given
distance −1, so it sorts first and lies in no S_ij. Distances are float64 from detached scores; the logits
run in ≥ float32 with autocast off.

B = 2 without references gives 0 (each S_ij = {j}); all-equal scores make every S_ij the whole candidate set
(plain InfoNCE over the batch).
"""

from __future__ import annotations

import torch
from torch import Tensor

from learner.config import FeatureSimilarity
from learner.losses.references import Candidates, ReferenceLoss
from learner.losses.similarity import feature_logits


def rank_n_contrast_terms(logits: Tensor, distance: Tensor, is_self: Tensor) -> Tensor:
    """ℓ_ij = log Σ_{k∈S_ij} exp l_ik − l_ij for every (anchor, candidate), shape (B, R).

    Args:
        logits: l (B, R). distance: |y_i − y_j| (B, R), float64. is_self: (B, R) bool, the anchor's column.

    Returns:
        (B, R); entries on ``is_self`` are meaningless and must be masked by the caller.
    """
    d = distance.masked_fill(is_self, -1.0)  # own column sorts first and belongs to no S_ij
    order = d.argsort(dim=1)  # (B, R): candidates by increasing label distance
    d_sorted = d.gather(1, order)  # (B, R)
    suffix = torch.logcumsumexp(logits.gather(1, order).flip(1), dim=1).flip(1)  # (B, R): LSE over p..R−1
    start = torch.searchsorted(d_sorted, d, side="left")  # (B, R): first sorted position with d ≥ d_ij
    return suffix.gather(1, start) - logits


class RankNContrastLoss(ReferenceLoss):
    """Rank-N-Contrast (Zha et al., NeurIPS 2023); the maths is in the module docstring.

    Args:
        temperature: τ > 0.
        similarity: ``cosine`` (cos / τ) or ``neg_l2`` (−‖u_i − u_j‖ / τ, the paper's).

    Shape:
        embeddings (B, D), scores (B,) → scalar; optional ``ref_embeddings`` (N, D), ``ref_scores`` (N,) are
        extra candidates j, k (detached; :mod:`learner.losses.references`).

    Example::

        loss = RankNContrastLoss(temperature=2.0, similarity="neg_l2")(embeddings, scores_std)
    """

    def __init__(self, temperature: float = 1.0, similarity: FeatureSimilarity = "cosine") -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"rnc temperature should be > 0, got {temperature}")
        self.temperature = temperature
        self.similarity: FeatureSimilarity = similarity

    def compute(self, u: Tensor, c: Candidates) -> Tensor:
        logits = feature_logits(u, c.embeddings, self.similarity, self.temperature)  # (B, R)
        distance = (c.scores[: u.shape[0], None] - c.scores[None, :]).abs()  # (B, R) float64
        terms = rank_n_contrast_terms(logits, distance, c.is_self)
        pair = ~c.is_self
        zero = torch.zeros((), dtype=terms.dtype, device=terms.device)
        return torch.where(pair, terms, zero).sum() / pair.sum()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, similarity={self.similarity!r}"
