"""Anchors against references: the current batch plus an optional cross-batch memory as candidates.

Every contrastive term compares each anchor i of the batch (B anchors) with a set of candidates. Without a
memory the candidates are the batch itself (the square (B, B) case). With ``ref_embeddings`` (N, D) and
``ref_scores`` (N,) — e.g. the last N (embedding, score) pairs of earlier steps — the candidates are the
batch followed by the references, R = B + N columns, and anchor i's own column is column i. The anchors stay
the current batch; references are **detached**, so gradients flow only through the current batch
(pytorch-metric-learning calls them ``ref_emb``; Wang et al., "Cross-Batch Memory for Embedding Learning",
CVPR 2020). Stored embeddings come from an older encoder ("staleness", as in MoCo), so the memory should stay
small compared with how fast the encoder changes.

:class:`ReferenceLoss` is the base of the losses built on candidates (y-Aware InfoNCE, SupCon over bins,
Rank-N-Contrast), in the style of pytorch-metric-learning: its ``forward`` checks the shapes and prepares the
inputs, a subclass implements only :meth:`ReferenceLoss.compute`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn

_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Candidates:
    """The candidates of one batch.

    Attributes:
        embeddings: (R, D), the batch (with gradient) then the references (detached).
        scores: (R,) float64, detached.
        is_self: (B, R) bool, True at (i, i): the anchor's own column.
    """

    embeddings: Tensor
    scores: Tensor
    is_self: Tensor


def check_batch(
    embeddings: Tensor, scores: Tensor, ref_embeddings: Tensor | None, ref_scores: Tensor | None
) -> None:
    """Raise a ``ValueError`` naming the expected shapes unless embeddings (B, D), scores (B,) and optional
    references (N, D), (N,) — both or neither — fit together."""
    if embeddings.ndim != 2 or scores.shape != embeddings.shape[:1]:
        raise ValueError(
            f"embeddings should be (B, D) and scores (B,), got {tuple(embeddings.shape)} "
            f"and {tuple(scores.shape)}"
        )
    if (ref_embeddings is None) != (ref_scores is None):
        raise ValueError("pass ref_embeddings and ref_scores together, or neither")
    if ref_embeddings is not None and ref_scores is not None:
        if ref_embeddings.ndim != 2 or ref_embeddings.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"ref_embeddings should be (N, {embeddings.shape[1]}), got {tuple(ref_embeddings.shape)}"
            )
        if ref_scores.shape != ref_embeddings.shape[:1]:
            raise ValueError(
                f"ref_scores should be ({ref_embeddings.shape[0]},), got {tuple(ref_scores.shape)}"
            )


def candidates(
    embeddings: Tensor, scores: Tensor, ref_embeddings: Tensor | None = None, ref_scores: Tensor | None = None
) -> Candidates:
    """The batch followed by the (detached) references; see the module docstring.

    Args:
        embeddings: (B, D) anchors; scores: (B,); ref_embeddings: (N, D) or None; ref_scores: (N,) or None.

    Raises:
        ValueError: shapes that do not fit, or fewer than 2 candidates (nothing to contrast).
    """
    check_batch(embeddings, scores, ref_embeddings, ref_scores)
    s = scores.detach().to(torch.float64)
    if ref_embeddings is None or ref_scores is None:
        u, r = embeddings, s
    else:
        u = torch.cat([embeddings, ref_embeddings.detach().to(embeddings)])  # (R, D)
        r = torch.cat([s, ref_scores.detach().to(s)])  # (R,)
    if r.shape[0] < 2:
        raise ValueError(f"need at least 2 candidates (batch + references), got {r.shape[0]}")
    is_self = torch.eye(s.shape[0], r.shape[0], dtype=torch.bool, device=s.device)  # (B, R)
    return Candidates(embeddings=u, scores=r, is_self=is_self)


class ReferenceLoss(nn.Module, ABC):
    """A loss of each anchor against its :class:`Candidates`; subclasses implement only :meth:`compute`.

    ``forward`` disables autocast, upcasts float16/bfloat16 embeddings to float32 (u), moves the scores to
    u's device, builds the candidates (:func:`candidates`: shape checks, references detached) and returns
    ``compute(u, candidates)``.

    Shape:
        embeddings (B, D), scores (B,) → scalar; optional ``ref_embeddings`` (N, D), ``ref_scores`` (N,).
    """

    def forward(
        self,
        embeddings: Tensor,
        scores: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_scores: Tensor | None = None,
    ) -> Tensor:
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            u = embeddings.float() if embeddings.dtype in _HALF else embeddings
            return self.compute(u, candidates(u, scores.to(u.device), ref_embeddings, ref_scores))

    @abstractmethod
    def compute(self, u: Tensor, c: Candidates) -> Tensor:
        """The loss of anchors u (B, D), ≥ float32 with autocast off, against candidates c (R = B [+ N])."""
