"""Cosine similarity of a batch of embeddings and its mapping into (0, 1] for the logs of Eqs. 2–3.

The paper writes ``log sim(u_i, u_j)`` with ``sim`` the cosine similarity (Section 2.3.1), but a cosine lies
in [−1, 1] and its log is undefined for cos ≤ 0. A *similarity mapping* turns cosines into ``log s`` with
s ∈ (0, 1], finite for every input. Two are provided (``loss.similarity`` picks one in
:mod:`learner.losses.registry`):

* :class:`ShiftedCosine` — s = clamp((1 + cos) / 2, floor, 1), log taken after the clamp. ``floor``
  defaults to 1e-4, so log s ≥ log 1e-4 ≈ −9.21). The clamp has **zero gradient below
  the floor**: a negative pair already pushed to cos < 2·floor − 1 (≈ −0.9998) stops receiving gradient, which
  bounds how far Eq. 2 can push. Just above the floor the gradient d log s / d cos = 1 / (1 + cos) is large
  (up to 1 / (2·floor) = 5000), so gradient clipping or ``exp_cosine`` is advisable if negatives collapse to
  antipodes.
* :class:`ExpCosine` — s = exp((cos − 1) / τ), computed directly in log space as log s = (cos − 1) / τ (never
  ``exp`` then ``log``, which underflows for small τ). log s ∈ [−2/τ, 0], constant gradient 1/τ, no clamp.

:func:`feature_logits` gives the softmax objectives' logits instead (cos/τ or −‖u_i − u_j‖/τ). Every function
takes anchors u (B, D) and optional references v (R, D) and returns (B, R) (square when v is omitted).

Example::

    log_s = ShiftedCosine(floor=1e-4)(cosine_matrix(u))  # u (B, D) → log s (B, B)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from learner.config import FeatureSimilarity


def cosine_matrix(u: Tensor, v: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Cosine similarity of every anchor u_i with every reference v_j (v = u by default).

    Each row is divided by ``max(‖u_i‖, eps)``, so a zero embedding has cosine 0 with everything (itself
    included) instead of NaN; its gradient there is finite but of order 1/eps, because the direction of a zero
    vector is undefined. Norms overflow in float32 above ~1e19, so embeddings must stay below that.

    Args:
        u: anchor embeddings, shape (B, D).
        v: reference embeddings, shape (R, D); omitted, the anchors themselves (the square case).
        eps: lower bound on each norm.

    Returns:
        cosines, shape (B, R); without ``v`` (B, B), symmetric, diagonal 1 for non-zero rows.
    """
    if u.ndim != 2:
        raise ValueError(f"embeddings should have shape (B, D), got {tuple(u.shape)}")
    z = F.normalize(u, dim=1, eps=eps)  # (B, D), unit rows (zero rows stay zero)
    if v is None:
        return z @ z.T  # (B, B)
    if v.ndim != 2 or v.shape[1] != u.shape[1]:
        raise ValueError(f"references should have shape (R, {u.shape[1]}), got {tuple(v.shape)}")
    return z @ F.normalize(v, dim=1, eps=eps).T  # (B, R)


def feature_logits(
    u: Tensor, v: Tensor, similarity: FeatureSimilarity = "cosine", temperature: float = 1.0
) -> Tensor:
    """The logits l_ij of the softmax objectives (RnC, y-Aware InfoNCE, SupCon): similarity / τ.

    * ``cosine`` — l_ij = cos(u_i, v_j) / τ (SupCon, y-Aware), via :func:`cosine_matrix`;
    * ``neg_l2`` — l_ij = −‖u_i − v_j‖ / τ (RnC's paper), with the distance computed as
      sqrt(max(‖u‖² + ‖v‖² − 2u·v, 0) + δ²), δ = 1e-6: the floor keeps the gradient finite for duplicated
      embeddings (where ‖u_i − v_j‖ has no derivative) and shifts distances by at most δ.

    Args:
        u: anchors (B, D); v: references (R, D); similarity: which logit; temperature: τ > 0.

    Returns:
        logits, shape (B, R), finite for finite inputs.
    """
    if not temperature > 0:
        raise ValueError(f"temperature should be > 0, got {temperature}")
    if similarity == "cosine":
        return cosine_matrix(u, v) / temperature
    if similarity == "neg_l2":
        if u.ndim != 2 or v.ndim != 2 or u.shape[1] != v.shape[1]:
            raise ValueError(f"expected (B, D) and (R, D), got {tuple(u.shape)} and {tuple(v.shape)}")
        square = u.square().sum(1)[:, None] + v.square().sum(1)[None, :] - 2 * (u @ v.T)  # (B, R)
        return -(square.clamp(min=0) + _L2_FLOOR**2).sqrt() / temperature
    raise ValueError(f"similarity should be 'cosine' or 'neg_l2', got {similarity!r}")


_L2_FLOOR = 1e-6


class SimilarityMapping(Protocol):
    """Maps cosines (B, B) to log s (B, B) with s ∈ (0, 1]; finite for every cos ∈ [−1, 1]."""

    def __call__(self, cos: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class ShiftedCosine:
    """log s with s = clamp((1 + cos) / 2, floor, 1); the clamp comes BEFORE the log (module docstring)."""

    floor: float = 1e-4

    def __post_init__(self) -> None:
        if not 0 < self.floor < 1:
            raise ValueError(f"shifted_cosine floor should be in (0, 1), got {self.floor}")

    def __call__(self, cos: Tensor) -> Tensor:
        """Cosines (B, B) → log s (B, B), every entry in [log floor, 0]."""
        # The upper clamp only removes rounding above 1 (cos of identical rows), keeping log s ≤ 0.
        return torch.log(((1 + cos) / 2).clamp(min=self.floor, max=1.0))


@dataclass(frozen=True)
class ExpCosine:
    """log s = (cos − 1) / τ, i.e. s = exp((cos − 1) / τ), computed in log space."""

    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"exp_cosine temperature should be > 0, got {self.temperature}")

    def __call__(self, cos: Tensor) -> Tensor:
        """Cosines (B, B) → log s (B, B), every entry in [−2/τ, 0]."""
        return (cos - 1) / self.temperature
