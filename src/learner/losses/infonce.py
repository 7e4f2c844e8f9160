"""Label-aware InfoNCE: y-Aware InfoNCE (soft positives from a kernel on scores) and SupCon over score bins.

Both are a cross-entropy between per-anchor target weights α_ij and the softmax of the logits over the
anchor's other candidates (l = similarity / τ, :func:`feature_logits`):

    log q_ij = l_ij − log Σ_{k≠i} exp(l_ik)
    ℓ_i      = −Σ_{j≠i} α_ij log q_ij,     Σ_{j≠i} α_ij = 1
    L        = mean of ℓ_i over the anchors that have targets (L = 0, still back-propagating, if none)

* :class:`YAwareInfoNCELoss` — Dufumier, Gori, Victor, Grigis, Wessa, Brambilla, Favre, Duchesnay,
  "Contrastive Learning with Continuous Proxy Meta-Data for 3D MRI Classification", MICCAI 2021:
  α_ij = w_ij / Σ_{k≠i} w_ik with the Gaussian kernel w_ij = exp(−(y_i − y_j)² / (2σ²)). The weights are a
  softmax of −d²/(2σ²) over the candidates (computed in float64), so huge score gaps cannot turn Σ w into 0:
  an isolated anchor's weight goes to its nearest candidates. σ is in the units of the scores passed; the
  toolkit passes standardised scores, so ``loss.kernel_sigma`` is in train-split standard deviations
  (σ_std = σ_score / std). With one view per scan j ≠ i (the paper's two-view form also counts the anchor's
  other view).
* :class:`SupConBinsLoss` — Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu, Krishnan,
  "Supervised Contrastive Learning", NeurIPS 2020, L^sup_out, with classes given by score bins: class(y) =
  #{lower edges e : e + tol < y} + #{upper edges e : e − tol ≤ y}, so a value on an edge belongs to the
  lower bin unless the edge is an upper one (its value opens the bin above) — the scale's own rule
  (:class:`learner.data.scales.ClassEdges`, e.g. S/F 180 in "180–275"); ``tol`` absorbs the rounding of
  standardising scores and edges separately.
  α_ij = 1/|P(i)| on P(i) = {j ≠ i : class_j = class_i}; an anchor without a positive contributes nothing.

References (a cross-batch memory) are extra candidates j, k, detached (:mod:`learner.losses.references`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from learner.config import FeatureSimilarity
from learner.losses.references import Candidates, ReferenceLoss
from learner.losses.similarity import feature_logits


def soft_target_infonce(logits: Tensor, targets: Tensor, is_self: Tensor) -> Tensor:
    """Mean over anchors with any target of −Σ_j α_ij log q_ij (module docstring).

    Args:
        logits: l (B, R). targets: α (B, R), each row summing to 1 or all 0 (no targets), 0 on ``is_self``.
        is_self: (B, R) bool, the anchor's own column (excluded from the softmax).

    Returns:
        scalar; 0 (with a zero gradient) when no anchor has targets.
    """
    others = logits.masked_fill(is_self, float("-inf"))  # (B, R)
    log_q = logits - torch.logsumexp(others, dim=1, keepdim=True)  # (B, R), finite: R ≥ 2
    zero = torch.zeros((), dtype=log_q.dtype, device=log_q.device)
    weighted = torch.where(targets > 0, targets.to(log_q) * log_q, zero)  # unselected: never NaN
    active = (targets > 0).any(dim=1)  # (B,)
    return -weighted.sum() / active.sum().clamp(min=1)


class YAwareInfoNCELoss(ReferenceLoss):
    """y-Aware InfoNCE (Dufumier et al., MICCAI 2021); the maths is in the module docstring.

    Args:
        sigma: σ > 0 of the Gaussian kernel, in the units of the scores passed (standardised in the toolkit).
        temperature: τ > 0.
        similarity: ``cosine`` (cos / τ) or ``neg_l2`` (−‖u_i − u_j‖ / τ).

    Shape:
        embeddings (B, D), scores (B,) → scalar; optional ``ref_embeddings`` (N, D), ``ref_scores`` (N,).

    Example::

        loss = YAwareInfoNCELoss(sigma=0.5, temperature=0.1)(embeddings, scores_std)
    """

    def __init__(
        self, sigma: float = 1.0, temperature: float = 1.0, similarity: FeatureSimilarity = "cosine"
    ) -> None:
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"yaware kernel sigma should be > 0, got {sigma}")
        if not temperature > 0:
            raise ValueError(f"yaware temperature should be > 0, got {temperature}")
        self.sigma, self.temperature = sigma, temperature
        self.similarity: FeatureSimilarity = similarity

    def weights(self, c: Candidates) -> Tensor:
        """α (B, R) float64: the kernel normalised over each anchor's other candidates (rows sum to 1)."""
        batch = c.is_self.shape[0]
        d = c.scores[:batch, None] - c.scores[None, :]  # (B, R)
        energy = (-(d.square()) / (2 * self.sigma**2)).masked_fill(c.is_self, float("-inf"))
        return energy.softmax(dim=1)  # exp(−d²/2σ²) / Σ_{k≠i}: stable for any gap

    def compute(self, u: Tensor, c: Candidates) -> Tensor:
        logits = feature_logits(u, c.embeddings, self.similarity, self.temperature)  # (B, R)
        return soft_target_infonce(logits, self.weights(c), c.is_self)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, temperature={self.temperature}, similarity={self.similarity!r}"


class SupConBinsLoss(ReferenceLoss):
    """SupCon (Khosla et al., NeurIPS 2020, L^sup_out) with score bins as classes (module docstring).

    Args:
        edges: ascending bin edges in the units of the scores passed (the toolkit's registry standardises
            the scale's clinical bins or threshold bands); no edges means one class.
        upper: per edge, whether a score equal to it belongs to the bin above (default: all below); the
            registry passes the scale's (``ClassEdges.upper``).
        temperature: τ > 0.
        similarity: ``cosine`` (cos / τ, SupCon's) or ``neg_l2``.
        tolerance: a score within ``tolerance`` of an edge still counts as on it (above it for a lower edge,
            below it for an upper one).

    Shape:
        embeddings (B, D), scores (B,) → scalar; optional ``ref_embeddings`` (N, D), ``ref_scores`` (N,).

    Example::

        loss = SupConBinsLoss(edges=[180, 275, 430], temperature=0.1, upper=[True, False, False])(
            embeddings, sf_scores
        )  # the S/F bins: 180 opens 180–275
    """

    def __init__(
        self,
        edges: Sequence[float],
        temperature: float = 1.0,
        similarity: FeatureSimilarity = "cosine",
        tolerance: float = 1e-6,
        upper: Sequence[bool] = (),
    ) -> None:
        super().__init__()
        edges = tuple(float(e) for e in edges)
        if list(edges) != sorted(set(edges)) or not all(math.isfinite(e) for e in edges):
            raise ValueError(f"supcon_bins edges should be finite and strictly ascending, got {list(edges)}")
        if not temperature > 0:
            raise ValueError(f"supcon_bins temperature should be > 0, got {temperature}")
        if not tolerance >= 0:
            raise ValueError(f"supcon_bins tolerance should be ≥ 0, got {tolerance}")
        sides = tuple(bool(side) for side in upper) or (False,) * len(edges)
        if len(sides) != len(edges):
            raise ValueError(f"supcon_bins takes one side per edge, got {len(sides)} for {len(edges)} edges")
        self.edges, self.upper, self.temperature, self.tolerance = edges, sides, temperature, tolerance
        self.similarity: FeatureSimilarity = similarity
        self.device_edges: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def classes(self, scores: Tensor) -> Tensor:
        """Bin index (int64) of each score, 0 for the lowest bin; an edge value belongs to the lower bin
        unless the edge is an upper one."""
        edges = self.device_edges.get(scores.device)
        if edges is None:  # copied to a device once: a step recorded as a CUDA graph cannot copy host data
            pairs = tuple(zip(self.edges, self.upper, strict=True))
            lower = [e + self.tolerance for e, up in pairs if not up]  # counted when e + tol < y
            upper = [e - self.tolerance for e, up in pairs if up]  # counted when e − tol ≤ y
            edges = (
                torch.tensor(lower, dtype=torch.float64, device=scores.device),
                torch.tensor(upper, dtype=torch.float64, device=scores.device),
            )
            self.device_edges[scores.device] = edges
        values = scores.detach().to(torch.float64)
        classes = torch.bucketize(values, edges[0], right=False)
        return classes + torch.bucketize(values, edges[1], right=True) if any(self.upper) else classes

    def compute(self, u: Tensor, c: Candidates) -> Tensor:
        logits = feature_logits(u, c.embeddings, self.similarity, self.temperature)  # (B, R)
        labels = self.classes(c.scores)  # (R,)
        positive = (labels[: u.shape[0], None] == labels[None, :]) & ~c.is_self  # (B, R)
        counts = positive.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
        targets = positive.to(torch.float64) / counts  # (B, R) float64, rows sum to 1 (or 0: no positive)
        return soft_target_infonce(logits, targets, c.is_self)

    def extra_repr(self) -> str:
        upper = f", upper={self.upper}" if any(self.upper) else ""
        return f"edges={self.edges}{upper}, temperature={self.temperature}, similarity={self.similarity!r}"
