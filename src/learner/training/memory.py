"""The label-aware cross-batch memory (``loss.memory = N``): the last N (embedding, standardised score) pairs.

A FIFO queue filled after every optimiser step with that step's GLOBAL batch (the all-gathered embeddings
and scores, detached), so it is identical on every DDP process. At the next step its entries are passed to
the objective as references: extra candidates in every contrastive term (Alg. 1's positives/negatives, RnC's
ranking sets, the InfoNCE denominators); the anchors stay the current batch and gradients flow only through
it (:mod:`learner.losses.references`). Entries were embedded by older weights (staleness, as in MoCo, He et
al. 2020, and Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020), so N should cover a few
steps, not epochs. The queue is part of the train state (:meth:`state_dict`), so a resumed run continues
bit-identically.
"""

from __future__ import annotations

import torch
from torch import Tensor


class CrossBatchMemory:
    """FIFO of the last ``size`` (embedding (D,), score) pairs, oldest first; ``size = 0`` is off.

    Example::

        memory = CrossBatchMemory(config.loss.memory)
        out = objective(u, pred, target, *memory.references())   # (None, None) while empty or off
        memory.push(u, target)                                   # after the step: u (B, D), target (B,)
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"memory size should be ≥ 0, got {size}")
        self.size = size
        self.embeddings: Tensor | None = None  # (n, D), n ≤ size
        self.scores: Tensor | None = None  # (n,)

    def __len__(self) -> int:
        return 0 if self.scores is None else int(self.scores.shape[0])

    def references(self) -> tuple[Tensor | None, Tensor | None]:
        """The stored ``(embeddings (n, D), scores (n,))``, or ``(None, None)`` when empty."""
        return self.embeddings, self.scores

    @torch.no_grad()
    def push(self, embeddings: Tensor, scores: Tensor) -> None:
        """Append a batch (B, D), (B,) (detached copies) and drop the oldest entries beyond ``size``."""
        if self.size == 0:
            return
        if embeddings.ndim != 2 or scores.shape != embeddings.shape[:1]:
            raise ValueError(
                f"memory takes embeddings (B, D) and scores (B,), got {tuple(embeddings.shape)} "
                f"and {tuple(scores.shape)}"
            )
        new_u, new_s = embeddings.detach(), scores.detach()
        if self.embeddings is not None and self.scores is not None:
            new_u, new_s = torch.cat([self.embeddings, new_u]), torch.cat([self.scores, new_s])
        self.embeddings, self.scores = new_u[-self.size :].clone(), new_s[-self.size :].clone()

    def state_dict(self) -> dict[str, Tensor]:
        """The entries as CPU tensors (``torch.load(weights_only=True)``-readable); empty → no keys."""
        if self.embeddings is None or self.scores is None:
            return {}
        return {"embeddings": self.embeddings.cpu(), "scores": self.scores.cpu()}

    def load_state_dict(self, state: dict[str, Tensor], device: torch.device | str = "cpu") -> None:
        """Restore :meth:`state_dict`'s entries onto ``device`` (the newest ``size`` if it shrank)."""
        if not state:
            self.embeddings = self.scores = None
            return
        self.embeddings = state["embeddings"][-self.size :].to(device) if self.size else None
        self.scores = state["scores"][-self.size :].to(device) if self.size else None
