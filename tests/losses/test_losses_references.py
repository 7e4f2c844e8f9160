"""Anchors against references (a cross-batch memory): the rectangular (B, B + N) miner and similarity, and
Alg. 1's losses with references, against the square computation on the concatenated batch."""

from __future__ import annotations

import pytest
import torch

from learner.losses.contrastive import (
    LiteralWeighting,
    PairwiseContrastiveLoss,
    ScaledWeighting,
    Unweighted,
    WeightedContrastiveLoss,
    _masked_row_mean,
)
from learner.losses.references import Candidates, ReferenceLoss, candidates
from learner.losses.selection import select_pairs
from learner.losses.similarity import ShiftedCosine, cosine_matrix


@pytest.mark.parametrize(("batch", "memory"), [(2, 1), (4, 4), (5, 11), (16, 32)])
def test_rectangular_selection_is_the_anchor_rows_of_the_square_one(batch: int, memory: int) -> None:
    generator = torch.Generator().manual_seed(batch * memory)
    scores = torch.randint(0, 6, (batch + memory,), generator=generator).float()  # ties included
    square = select_pairs(scores)
    rectangular = select_pairs(scores[:batch], scores[batch:])
    assert rectangular.positive.shape == (batch, batch + memory)
    assert torch.equal(rectangular.positive, square.positive[:batch])
    assert torch.equal(rectangular.negative, square.negative[:batch])
    assert torch.equal(rectangular.distance, square.distance[:batch])


def test_rectangular_cosine_and_candidates() -> None:
    u, v = torch.randn(3, 4), torch.randn(5, 4)
    torch.testing.assert_close(cosine_matrix(u, torch.cat([u, v])), cosine_matrix(torch.cat([u, v]))[:3])
    c = candidates(u, torch.zeros(3), v, torch.ones(5))
    assert c.embeddings.shape == (8, 4)
    assert c.scores.dtype == torch.float64
    assert torch.equal(c.is_self, torch.eye(3, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"references should have shape \(R, 4\)"):
        cosine_matrix(u, torch.randn(5, 3))
    with pytest.raises(ValueError, match="ref_scores should be finite"):
        select_pairs(torch.zeros(2), torch.tensor([float("nan")]))


@pytest.mark.parametrize("weighting", [Unweighted(), LiteralWeighting(), ScaledWeighting()], ids=repr)
def test_pairwise_loss_with_references_equals_the_square_rows_of_the_anchors(weighting: object) -> None:
    generator = torch.Generator().manual_seed(0)
    batch, memory = 6, 9
    u = torch.randn(batch + memory, 5, generator=generator, dtype=torch.float64)
    s = torch.randint(0, 5, (batch + memory,), generator=generator).double()
    loss = PairwiseContrastiveLoss(weighting)  # type: ignore[arg-type]
    got = loss(u[:batch], s[:batch], u[batch:], s[batch:])
    # Oracle: the square computation on all B + N, keeping only the B anchors' rows.
    sel = select_pairs(s)
    n, p = weighting(ShiftedCosine()(cosine_matrix(u)), sel)  # type: ignore[operator]
    per_anchor = _masked_row_mean(n, sel.negative) - _masked_row_mean(p, sel.positive)
    active = (sel.negative.any(dim=1) | sel.positive.any(dim=1))[:batch]
    expected = per_anchor[:batch].sum() / active.sum()
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


def test_pairwise_loss_gradients_flow_only_through_the_batch() -> None:
    u = torch.randn(4, 3, requires_grad=True)
    ref = torch.randn(6, 3, requires_grad=True)
    WeightedContrastiveLoss(scaled=True)(u, torch.arange(4.0), ref, torch.arange(6.0) / 2).backward()
    assert u.grad is not None
    assert torch.isfinite(u.grad).all()
    assert u.grad.abs().sum() > 0
    assert ref.grad is None


def test_pairwise_loss_gradcheck_with_references() -> None:
    generator = torch.Generator().manual_seed(1)
    u = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    s, ref_s = torch.tensor([0.0, 1.0, 2.0, 4.0]), torch.tensor([0.5, 3.0, 3.0, -1.0, 7.0])
    loss = WeightedContrastiveLoss(scaled=True)
    assert torch.autograd.gradcheck(lambda e: loss(e, s, ref, ref_s), (u,))


def test_weighted_contrastive_loss_is_the_registry_wcl() -> None:
    u, s = torch.randn(6, 4), torch.tensor([0.0, 1.0, 1.0, 2.0, 5.0, 8.0])
    literal = PairwiseContrastiveLoss(LiteralWeighting(eps=0.2, weight_max=5.0))(u, s)
    assert torch.equal(WeightedContrastiveLoss(eps=0.2, weight_max=5.0)(u, s), literal)
    scaled = PairwiseContrastiveLoss(ScaledWeighting())(u, s)
    assert torch.equal(WeightedContrastiveLoss(scaled=True)(u, s), scaled)


class _Probe(ReferenceLoss):
    """Records what :class:`ReferenceLoss` hands to ``compute``."""

    def compute(self, u: torch.Tensor, c: Candidates) -> torch.Tensor:
        self.seen = (u.dtype, c.embeddings.shape, c.scores.dtype, torch.is_autocast_enabled("cpu"))
        return u.sum()


def test_reference_loss_prepares_candidates_and_calls_compute() -> None:
    with pytest.raises(TypeError):
        ReferenceLoss()  # type: ignore[abstract]
    probe = _Probe()
    embeddings = torch.randn(3, 2, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probe(embeddings, torch.arange(3.0), torch.randn(4, 2), torch.zeros(4))
    assert probe.seen == (torch.float32, (7, 2), torch.float64, False)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        probe(torch.randn(3, 2), torch.zeros(2))
