"""The positive/negative miner of Algorithm 1: closest half vs farthest half in score space.

Algorithm 1 says: for each anchor i, sort d_ij = |HS_i − HS_j| and take the first B/2 indices as positives and
the last B/2 as negatives. Taken literally the sort includes j = i (d_ii = 0 sorts first, so the anchor is one
of its own "positives") and ties are split by whatever order the sort leaves them in. We close these holes:

* **Anchor excluded.** Only the K = B − 1 other members are ranked.
* **Halves by mid-rank.** Member j gets the mid-rank r_ij of its tie group among the K others (a group of
  equal d_ij occupying ranks a..b gets (a + b) / 2). j is a **positive** if r_ij < (K + 1) / 2, a
  **negative** if r_ij > (K + 1) / 2, and in **neither** set if r_ij = (K + 1) / 2.
* **Odd/even sizing.** Without ties this is exactly the paper's rule with symmetric halves: n_pos = n_neg =
  floor(K / 2); when K is odd (B even, e.g. the paper's B = 16 → 7 + 7) the single middle-ranked member is in
  neither set. (The literal Algorithm 1 gives 7 real positives plus the anchor and 8 negatives for B = 16.)
* **Ties are never split.** Membership depends only on the value d_ij, so members with equal |Δ| always
  land in the same set; a tie group straddling the cut goes to the side holding more of it, or to neither when
  centred. Set sizes may then differ from floor(K / 2) (e.g. three members tied closest with K = 4 are all
  positives). Dropping whole straddling groups instead would leave integer MMSE batches with few positives.
* **Deterministic and order-invariant.** No index tie-break is used, so permuting the batch permutes the
  masks: ``select(s[p]).positive == select(s).positive[p][:, p]``.
* **Degenerate batches.** An anchor whose K distances are all equal (all-equal scores, or B = 2 where K = 1)
  has every mid-rank at the centre: no positives and no negatives, so it contributes nothing to the loss.
  Conversely any anchor with at least two distinct distances gets ≥ 1 positive (its closest group has
  mid-rank below the centre) and ≥ 1 negative (its farthest group above it).

Distances are computed in float64 from detached scores, so float32 scores never overflow and the rule runs
without gradient (it is a miner, PML-style).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PairSelection:
    """Boolean pair masks of one batch (diagonal always False; positive and negative disjoint).

    Attributes:
        positive: (B, R), ``positive[i, j]`` when candidate j is in anchor i's positive set i⁺.
        negative: (B, R), ``negative[i, j]`` when candidate j is in anchor i's negative set i⁻.
        distance: (B, R) float64, |score_i − score_j| (reused by the contrastive weights).

    R = B without references; R = B + N with N references (own column i stays False).
    """

    positive: Tensor
    negative: Tensor
    distance: Tensor


@torch.no_grad()
def select_pairs(
    scores: Tensor, ref_scores: Tensor | None = None, *, check_finite: bool = True
) -> PairSelection:
    """Split each anchor's other candidates into closest-half positives and farthest-half negatives.

    Implements the selection step of Algorithm 1 with the mid-rank rule of the module docstring. Without
    ``ref_scores`` the candidates are the B − 1 batch-mates; with them (a cross-batch memory, see
    :mod:`learner.losses.references`) the candidates are the batch followed by the N references, so each
    anchor ranks K = B + N − 1 others and the masks are (B, B + N), anchor i's own column being i.

    Args:
        scores: health scores (standardised or not: the rule is invariant to affine maps), shape (B,).
        ref_scores: the references' scores in the same units, shape (N,), or None.
        check_finite: raise on a NaN or inf score. The check waits for the device (a host sync every
            step on a GPU); the device-data path checks every score once when it loads them and turns it
            off (:func:`trusted_select_pairs`).

    Returns:
        the :class:`PairSelection` of the batch, masks (B, R) with R = B (+ N).
    """
    for name, values in (("scores", scores), ("ref_scores", ref_scores)):
        if values is None:
            continue
        if values.ndim != 1:
            raise ValueError(f"{name} should have shape (B,), got {tuple(values.shape)}")
        if check_finite and not bool(torch.isfinite(values).all()):
            raise ValueError(f"{name} should be finite, got {values.tolist()}")
    batch = scores.shape[0]
    s = scores.detach().to(torch.float64)
    r = s if ref_scores is None else torch.cat([s, ref_scores.detach().to(s)])  # (R,) candidates
    others = r.shape[0] - 1
    distance = (s[:, None] - r[None, :]).abs()  # (B, R)
    eye = torch.eye(batch, r.shape[0], dtype=torch.bool, device=scores.device)  # (B, R): own column
    # The anchor's own entry is pushed to +inf so it sorts last and is never counted as < or ≤ a finite d.
    ranked = distance.masked_fill(eye, float("inf")).sort(dim=1).values  # (B, R)
    below = torch.searchsorted(ranked, distance, side="left")  # (B, R): #{k ≠ i: d_ik < d_ij}
    tied = torch.searchsorted(ranked, distance, side="right") - below  # (B, R): #{k ≠ i: d_ik = d_ij}
    # mid-rank = below + (tied + 1) / 2; compared with the centre (K + 1) / 2 in integers (both doubled).
    side = 2 * below + tied - others  # (B, R): < 0 closer half, > 0 farther half, 0 centre
    return PairSelection(positive=(side < 0) & ~eye, negative=(side > 0) & ~eye, distance=distance)


def trusted_select_pairs(scores: Tensor, ref_scores: Tensor | None = None) -> PairSelection:
    """:func:`select_pairs` on scores already checked finite (no host sync): the selector of the
    device-data path, whose scores were all checked when they were loaded."""
    return select_pairs(scores, ref_scores, check_finite=False)
