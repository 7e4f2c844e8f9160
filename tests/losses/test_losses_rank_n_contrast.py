"""Rank-N-Contrast: hand-computed batches, the literal O(B³) definition as a loop oracle, gradcheck,
adversarial batches and the cross-batch references."""

from __future__ import annotations

import math

import pytest
import torch

from learner.losses.rank_n_contrast import RankNContrastLoss

# Three 2-D embeddings at known angles: cos(u0, u1) = 0, cos(u0, u2) = −1, cos(u1, u2) = 0.
U3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
L1 = math.log(1 + math.exp(-1))  # log(e^0 + e^−1) − 0 ≈ 0.313262


def literal_rnc(
    embeddings: torch.Tensor,
    scores: torch.Tensor,
    tau: float,
    similarity: str,
    refs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> float:
    """The definition as three loops in Python floats: anchors i of the batch; j, k over the candidates."""
    u, y = embeddings.tolist(), scores.tolist()
    if refs is not None:
        u, y = u + refs[0].tolist(), y + refs[1].tolist()
    batch = embeddings.shape[0]

    def logit(i: int, j: int) -> float:
        if similarity == "cosine":
            dot = sum(a * b for a, b in zip(u[i], u[j], strict=True))
            norms = math.sqrt(sum(a * a for a in u[i])) * math.sqrt(sum(b * b for b in u[j]))
            return dot / max(norms, 1e-300) / tau
        return -math.sqrt(sum((a - b) ** 2 for a, b in zip(u[i], u[j], strict=True)) + 1e-12) / tau

    total, count = 0.0, 0
    for i in range(batch):
        for j in range(len(y)):
            if j == i:
                continue
            s_ij = [k for k in range(len(y)) if k != i and abs(y[i] - y[k]) >= abs(y[i] - y[j])]
            denominator = sum(math.exp(logit(i, k)) for k in s_ij)
            total += -math.log(math.exp(logit(i, j)) / denominator)
            count += 1
    return total / count


def test_hand_computed_batch() -> None:
    # y = (0, 1, 3), cosine, τ = 1.
    # anchor 0: d = (·, 1, 3). j=1: S = {1, 2}: −log(e^0 / (e^0 + e^−1)) = L1.  j=2: S = {2}: 0.
    # anchor 1: d = (1, ·, 2). j=0: S = {0, 2}, logits 0, 0: log 2.         j=2: S = {2}: 0.
    # anchor 2: d = (3, 2, ·). j=0: S = {0}: 0.   j=1: S = {0, 1}, logits −1, 0: −0 + log(e^−1 + 1) = L1.
    # L = (2·L1 + log 2) / 6 ≈ (0.626523 + 0.693147) / 6 ≈ 0.219945
    loss = RankNContrastLoss(temperature=1.0)(U3, torch.tensor([0.0, 1.0, 3.0]))
    assert loss.item() == pytest.approx((2 * L1 + math.log(2)) / 6, rel=1e-12)
    assert loss.item() == pytest.approx(0.219945, abs=1e-6)


def test_hand_computed_ties_follow_the_definitions_greater_or_equal() -> None:
    # y = (0, 1, 1): candidates 1 and 2 tie for anchor 0, so each one's S holds both.
    # anchor 0: j=1: S = {1, 2}, logits 0, −1: −0 + L1 = L1.   j=2: S = {1, 2}: −(−1) + L1 = 1 + L1.
    # anchor 1: d = (1, ·, 0). j=0: S = {0}: 0.   j=2: S = {0, 2} (d ≥ 0), logits 0, 0: log 2.
    # anchor 2: d = (1, 0, ·). j=0: S = {0}: 0.   j=1: S = {0, 1}, logits −1, 0: −0 + L1 = L1.
    # L = (3·L1 + 1 + log 2) / 6 ≈ 0.438822
    loss = RankNContrastLoss(temperature=1.0)(U3, torch.tensor([0.0, 1.0, 1.0]))
    assert loss.item() == pytest.approx((3 * L1 + 1 + math.log(2)) / 6, rel=1e-12)
    assert loss.item() == pytest.approx(0.438822, abs=1e-6)


@pytest.mark.parametrize("batch", [2, 3, 5, 8])
@pytest.mark.parametrize("similarity", ["cosine", "neg_l2"])
@pytest.mark.parametrize("tau", [0.1, 2.0])
@pytest.mark.parametrize("memory", [0, 4])
def test_matches_the_literal_cubic_form(batch: int, similarity: str, tau: float, memory: int) -> None:
    generator = torch.Generator().manual_seed(batch * 7 + memory)
    u = torch.randn(batch, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 4, (batch,), generator=generator).double()  # integers: many ties
    refs = None
    if memory:
        refs = (
            torch.randn(memory, 3, generator=generator, dtype=torch.float64),
            torch.randint(0, 4, (memory,), generator=generator).double(),
        )
    loss = RankNContrastLoss(tau, similarity)(u, y, *(refs or ()))  # type: ignore[arg-type]
    assert loss.item() == pytest.approx(literal_rnc(u, y, tau, similarity, refs), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("similarity", ["cosine", "neg_l2"])
def test_gradcheck(similarity: str) -> None:
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 1.0, 1.0, 2.5, -1.0], dtype=torch.float64)
    refs = torch.randn(3, 3, generator=generator, dtype=torch.float64), torch.tensor([0.0, 2.0, 5.0])
    loss = RankNContrastLoss(0.5, similarity)  # type: ignore[arg-type]
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (u,))
    assert torch.autograd.gradcheck(lambda e: loss(e, y, *refs), (u,))


ADVERSARIAL = {
    "all-equal scores": (torch.randn(6, 4), torch.zeros(6)),
    "duplicated embeddings": (torch.ones(6, 4), torch.arange(6.0)),
    "B = 2": (torch.randn(2, 4), torch.tensor([0.0, 1.0])),
    "huge score gaps": (torch.randn(6, 4), torch.tensor([-3e38, 0.0, 1.0, 1e-30, 3e38, 5.0])),
    "zero vectors": (torch.zeros(6, 4), torch.arange(6.0)),
    "huge embeddings": (torch.randn(6, 4) * 1e15, torch.arange(6.0)),
}


@pytest.mark.parametrize("case", ADVERSARIAL)
@pytest.mark.parametrize("similarity", ["cosine", "neg_l2"])
def test_adversarial_batches_stay_finite(case: str, similarity: str) -> None:
    u, y = ADVERSARIAL[case]
    u = u.clone().requires_grad_(True)
    loss = RankNContrastLoss(0.1, similarity)(u, y)  # type: ignore[arg-type]
    loss.backward()
    assert torch.isfinite(loss)
    assert u.grad is not None
    assert torch.isfinite(u.grad).all()
    if case == "B = 2":
        assert loss.item() == pytest.approx(0.0, abs=1e-7)  # each S_ij = {j}


def test_references_are_candidates_without_gradient() -> None:
    generator = torch.Generator().manual_seed(3)
    u = torch.randn(4, 3, generator=generator, requires_grad=True)
    ref_u = torch.randn(5, 3, generator=generator, requires_grad=True)
    y, ref_y = torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([0.5, 1.5, 2.5, 3.5, 9.0])
    loss = RankNContrastLoss()(u, y, ref_u, ref_y)
    loss.backward()
    assert u.grad is not None
    assert u.grad.abs().sum() > 0
    assert ref_u.grad is None  # references are detached: gradients flow only through the batch
    empty = RankNContrastLoss()(u, y, torch.zeros(0, 3), torch.zeros(0))
    assert empty.item() == pytest.approx(RankNContrastLoss()(u, y).item(), rel=1e-6)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="temperature"):
        RankNContrastLoss(temperature=0.0)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        RankNContrastLoss()(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="together"):
        RankNContrastLoss()(torch.zeros(3, 2), torch.zeros(3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="at least 2 candidates"):
        RankNContrastLoss()(torch.zeros(1, 2), torch.zeros(1))
