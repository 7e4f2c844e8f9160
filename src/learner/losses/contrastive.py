"""The batch-wise contrastive terms of Section 2.3.1: CL (Eq. 2), wCL (Eq. 3) and the repaired wCL.

All three are one :class:`PairwiseContrastiveLoss`: a similarity mapping gives log s_ij (B, B)
(:mod:`learner.losses.similarity`), the miner gives each anchor's positives i⁺ and negatives i⁻
(:func:`learner.losses.selection.select_pairs`), and a per-pair :class:`Weighting` turns log s_ij into a
negative-side term n_ij and a positive-side term p_ij. The reduction is

    ℓ_i = mean_{j∈i⁻} n_ij − mean_{j∈i⁺} p_ij        (a mean over an empty set counts as 0)
    L   = (1 / |I|) Σ_{i∈I} ℓ_i,   I = anchors with i⁺ ∪ i⁻ ≠ ∅  (L = 0 when I is empty)

The paper sums over pairs and anchors; by default we average so that the loss scale does not grow with B
and λ keeps its meaning at any batch size. ``reduction="sum"`` is Eqs. 2–3 literally:
L = Σ_{i} (Σ_{j∈i⁻} n_ij − Σ_{j∈i⁺} p_ij). An anchor with only one non-empty set contributes only that
side (with the default miner an anchor has both or neither). L = 0 on a batch with no pairs (all-equal
scores, B = 2) still back-propagates (a zero gradient).

Weightings, with d_ij = |Δ_ij| on **standardised** scores and ε = ``eps``:

* :class:`Unweighted` — CL, Eq. 2: n = log s, p = log s.
* :class:`LiteralWeighting` — wCL, Eq. 3 as printed: n = log(s·w) = log s + log w, p = log s / w, with
  w = clamp(d + ε, 1/w_max, w_max) so that neither w nor 1/w exceeds w_max (tied scores give 1/w = 1/ε).
  **The negative weight is inert**: log w does not depend on the embeddings, so it adds a constant and the
  gradient of the negative side is exactly CL's; only the positive side is reweighted.
* :class:`ScaledWeighting` — the repair: n = a·log s, p = b·log s with a_ij = w_ij / mean_{k∈i⁻} w_ik and
  b_ij = w_ij⁻¹ / mean_{k∈i⁺} w_ik⁻¹ (w = d + ε), each clamped to ≤ w_max (a normalised weight is at most
  its set's size, so w_max = 10 binds only for sets of more than 10 members). Normalising per anchor makes the
  weights average 1, so each side is a w-weighted (negatives) or 1/w-weighted (positives) mean of log s: the
  scale matches CL, far negatives are pushed harder, near positives pulled harder, and ε only sets how much a
  tied positive (1/ε) outweighs the others.

Weights are constants (computed from detached scores). The loss is a pure function of the batch it is
given: under DDP, all-gather embeddings and scores (with gradients) first; nothing distributed happens here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from learner.losses.references import check_batch
from learner.losses.selection import PairSelection, select_pairs
from learner.losses.similarity import ShiftedCosine, SimilarityMapping, cosine_matrix

_HALF = (torch.float16, torch.bfloat16)


class Weighting(Protocol):
    """Per-pair terms from log s (B, R): returns (n, p), each (B, R); only selected entries are used."""

    def __call__(self, log_s: Tensor, selection: PairSelection) -> tuple[Tensor, Tensor]: ...


class Selector(Protocol):
    """The miner: scores (B,) [and reference scores (N,)] → :class:`PairSelection` with (B, R) masks.

    A selector that takes only ``scores`` works for batches without references."""

    def __call__(self, scores: Tensor, ref_scores: Tensor | None = ...) -> PairSelection: ...


@dataclass(frozen=True)
class Unweighted:
    """CL (Eq. 2): n_ij = p_ij = log s_ij."""

    def __call__(self, log_s: Tensor, selection: PairSelection) -> tuple[Tensor, Tensor]:
        return log_s, log_s


@dataclass(frozen=True)
class _DifferenceWeights:
    """Options shared by the weightings built on w = |Δ| + ε (standardised scores).

    Args:
        eps: ε > 0, the weight of tied scores.
        weight_max: w_max ≥ 1, the bound on every weight.
    """

    eps: float = 0.1
    weight_max: float = 10.0

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ValueError(f"contrastive eps should be > 0, got {self.eps}")
        if not self.weight_max >= 1:
            raise ValueError(f"contrastive weight_max should be ≥ 1, got {self.weight_max}")


@dataclass(frozen=True)
class LiteralWeighting(_DifferenceWeights):
    """wCL (Eq. 3) literally: n = log s + log w, p = log s / w, w = clamp(|Δ| + ε, 1/w_max, w_max).

    The negative weight adds the constant log w, which has no gradient: Eq. 3's negative weighting is inert.
    """

    def __call__(self, log_s: Tensor, selection: PairSelection) -> tuple[Tensor, Tensor]:
        w = (selection.distance + self.eps).clamp(1 / self.weight_max, self.weight_max).to(log_s)  # (B, R)
        return log_s + w.log(), log_s / w


@dataclass(frozen=True)
class ScaledWeighting(_DifferenceWeights):
    """Repaired wCL: n = a·log s, p = b·log s, per-anchor normalised a ∝ |Δ| + ε and b ∝ 1/(|Δ| + ε)."""

    def __call__(self, log_s: Tensor, selection: PairSelection) -> tuple[Tensor, Tensor]:
        w = selection.distance + self.eps  # (B, R) float64, ≥ ε
        # Normalised in float64 before casting, so huge |Δ| still gives bounded weights. An anchor with an
        # empty set has mean 0, hence inf → clamped to w_max, and those entries are never selected anyway.
        a = (w / _masked_row_mean(w, selection.negative)[:, None]).clamp(max=self.weight_max)
        b = (1 / w / _masked_row_mean(1 / w, selection.positive)[:, None]).clamp(max=self.weight_max)
        return a.to(log_s) * log_s, b.to(log_s) * log_s


class PairwiseContrastiveLoss(nn.Module):
    """L = mean over anchors of [mean_{j∈i⁻} n_ij − mean_{j∈i⁺} p_ij] (Eqs. 2–3; module docstring).

    Computed in at least float32 with autocast disabled, because log s near the floor and the small
    differences of cosines need more precision than float16 offers.

    Args:
        weighting: the per-pair :class:`Weighting` (default: CL, unweighted).
        similarity: the mapping cos → log s (default: ``shifted_cosine`` with floor 1e-4).
        selector: the miner, scores (B,) [, ref_scores (N,)] → :class:`PairSelection` (default:
            Algorithm 1's :func:`select_pairs`).
        reduction: ``mean`` (the module docstring's L) or ``sum`` (Eqs. 2–3 as printed).

    Shape:
        embeddings (B, D) and standardised scores (B,) → scalar; optional ``ref_embeddings`` (N, D) and
        ``ref_scores`` (N,) (a cross-batch memory) join the candidates, detached
        (:mod:`learner.losses.references`). Without them the computation is exactly the square one.

    Example::

        loss = PairwiseContrastiveLoss(LiteralWeighting(eps=0.1))(embeddings, scores_std)
    """

    def __init__(
        self,
        weighting: Weighting | None = None,
        similarity: SimilarityMapping | None = None,
        selector: Selector = select_pairs,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction should be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.weighting = weighting if weighting is not None else Unweighted()
        self.similarity = similarity if similarity is not None else ShiftedCosine()
        self.selector = selector

    def forward(
        self,
        embeddings: Tensor,
        scores_std: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_scores: Tensor | None = None,
    ) -> Tensor:
        check_batch(embeddings, scores_std, ref_embeddings, ref_scores)
        device = embeddings.device
        if ref_embeddings is None or ref_scores is None:  # the square (B, B) case of the paper
            selection = self.selector(scores_std.to(device))
        else:  # anchors (B) against the batch + references (R = B + N), references detached
            selection = self.selector(scores_std.to(device), ref_scores.to(device))
        with torch.autocast(device_type=device.type, enabled=False):
            u = embeddings.float() if embeddings.dtype in _HALF else embeddings
            if ref_embeddings is None:
                cos = cosine_matrix(u)  # (B, B)
            else:
                cos = cosine_matrix(u, torch.cat([u, ref_embeddings.detach().to(u)]))  # (B, R)
            log_s = self.similarity(cos)
            n, p = self.weighting(log_s, selection)  # (B, R) each
            if self.reduction == "sum":  # Eqs. 2-3 as printed: every selected pair of every anchor
                zero = torch.zeros((), dtype=n.dtype, device=n.device)
                negative = torch.where(selection.negative, n, zero).sum()
                return negative - torch.where(selection.positive, p, zero).sum()
            per_anchor = _masked_row_mean(n, selection.negative) - _masked_row_mean(p, selection.positive)
            active = selection.negative.any(dim=1) | selection.positive.any(dim=1)  # (B,)
            # Inactive anchors have per_anchor = 0, so summing all of them equals summing the active ones.
            return per_anchor.sum() / active.sum().clamp(min=1)

    def extra_repr(self) -> str:
        return f"weighting={self.weighting}, similarity={self.similarity}, reduction={self.reduction}"


def _masked_row_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` (B, R) over each row's True entries of ``mask`` (B, R) → (B,); 0 if none."""
    # where, not multiply: an unselected entry can never leak a NaN or inf into the sum or its gradient.
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum(dim=1)
    return total / mask.sum(dim=1).clamp(min=1)


class WeightedContrastiveLoss(PairwiseContrastiveLoss):
    """wCL (Eq. 3 of LEARNER) as a self-contained loss: :class:`PairwiseContrastiveLoss` with
    :class:`LiteralWeighting` (the paper's Eq. 3, ``scaled=False``) or :class:`ScaledWeighting` (the repair,
    ``scaled=True``).

    Args:
        eps: ε in w = |Δ| + ε, in the units of the scores passed (the toolkit passes standardised scores).
        weight_max: bound on every weight (≥ 1).
        scaled: use the per-anchor normalised repair instead of the literal Eq. 3.
        similarity: the cos → log s mapping (default ``ShiftedCosine(1e-4)``).

    Example::

        loss = WeightedContrastiveLoss(eps=0.1)(embeddings, scores_std)   # (B, D), (B,) → scalar
    """

    def __init__(
        self,
        eps: float = 0.1,
        weight_max: float = 10.0,
        *,
        scaled: bool = False,
        similarity: SimilarityMapping | None = None,
    ) -> None:
        weighting = ScaledWeighting if scaled else LiteralWeighting
        super().__init__(weighting(eps=eps, weight_max=weight_max), similarity)
