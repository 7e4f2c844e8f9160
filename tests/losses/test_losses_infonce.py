"""y-Aware InfoNCE and SupCon over score bins: hand-computed batches, loop oracles, per-anchor weights,
gradcheck, adversarial batches and the cross-batch references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from learner.losses.infonce import SupConBinsLoss, YAwareInfoNCELoss
from learner.losses.references import candidates

# cos(u0, u1) = 0, cos(u0, u2) = −1, cos(u1, u2) = 0.
U3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
Y3 = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
L1 = math.log(1 + math.exp(-1))  # log(e^0 + e^−1)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * z for x, z in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(z * z for z in b)))


def literal_infonce(
    embeddings: torch.Tensor,
    scores: torch.Tensor,
    tau: float,
    target: str,
    sigma: float = 1.0,
    edges: tuple[float, ...] = (),
    refs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> float:
    """Both losses as loops in Python floats: α from the kernel (yaware) or the same-bin set (supcon)."""
    u, y = embeddings.tolist(), scores.tolist()
    if refs is not None:
        u, y = u + refs[0].tolist(), y + refs[1].tolist()

    def label(v: float) -> int:
        return sum(1 for e in edges if v > e)  # an edge value belongs to the lower bin

    losses = []
    for i in range(embeddings.shape[0]):
        others = [j for j in range(len(y)) if j != i]
        if target == "yaware":
            w = {j: math.exp(-((y[i] - y[j]) ** 2) / (2 * sigma**2)) for j in others}
            alpha = {j: w[j] / sum(w.values()) for j in others}
        else:
            positives = [j for j in others if label(y[j]) == label(y[i])]
            if not positives:
                continue  # no positive: the anchor contributes nothing
            alpha = {j: 1 / len(positives) for j in positives}
        denominator = sum(math.exp(_cosine(u[i], u[k]) / tau) for k in others)
        losses.append(
            -sum(a * math.log(math.exp(_cosine(u[i], u[j]) / tau) / denominator) for j, a in alpha.items())
        )
    return sum(losses) / len(losses) if losses else 0.0


def test_yaware_hand_computed_batch() -> None:
    # σ = 1, τ = 1, y = (0, 1, 3).
    # anchor 0: w = (·, e^−1/2, e^−9/2) → α02 = e^−4 / (1 + e^−4); log q = (·, −L1, −1 − L1)
    #           ℓ0 = α01·L1 + α02·(1 + L1) = L1 + α02
    # anchor 1: logits to 0 and 2 are both 0 → log q = −log 2 whatever α: ℓ1 = log 2
    # anchor 2: w = (e^−9/2, e^−2, ·) → α20 = e^−5/2 / (1 + e^−5/2); logits (−1, 0): ℓ2 = L1 + α20
    # L = (2·L1 + α02 + α20 + log 2) / 3 ≈ (0.626523 + 0.017986 + 0.075858 + 0.693147) / 3 ≈ 0.471172
    a02, a20 = math.exp(-4) / (1 + math.exp(-4)), math.exp(-2.5) / (1 + math.exp(-2.5))
    loss = YAwareInfoNCELoss(sigma=1.0, temperature=1.0)(U3, Y3)
    assert loss.item() == pytest.approx((2 * L1 + a02 + a20 + math.log(2)) / 3, rel=1e-12)
    assert loss.item() == pytest.approx(0.471172, abs=1e-6)


def test_supcon_hand_computed_batch() -> None:
    # edges (0.5,), y = (0, 1, 3) → classes (0, 1, 1). τ = 1.
    # anchor 0: no positive → nothing.
    # anchor 1: P = {2}; logits to 0 and 2 are 0, 0 → ℓ1 = −log(1/2) = log 2
    # anchor 2: P = {1}; logits to 0 and 1 are −1, 0 → ℓ2 = −(0 − L1) = L1
    # L = (log 2 + L1) / 2 over the two anchors with a positive ≈ 0.503205
    loss = SupConBinsLoss(edges=(0.5,), temperature=1.0)(U3, Y3)
    assert loss.item() == pytest.approx((math.log(2) + L1) / 2, rel=1e-12)
    assert loss.item() == pytest.approx(0.503205, abs=1e-6)


def test_supcon_classes_put_an_edge_value_in_the_lower_bin() -> None:
    loss = SupConBinsLoss(edges=(180.0, 275.0, 430.0))
    scores = torch.tensor([0.0, 180.0, 180.5, 275.0, 300.0, 430.0, 431.0])
    assert loss.classes(scores).tolist() == [0, 0, 1, 1, 2, 2, 3]
    # the tolerance absorbs standardising edges and scores separately (float32 scores, float64 edges)
    mean, std = 251.3, 97.1
    edge_std = (275.0 - mean) / std
    score_std = (torch.tensor([275.0], dtype=torch.float32) - mean) / std
    assert SupConBinsLoss(edges=(edge_std,)).classes(score_std).tolist() == [0]


def test_supcon_classes_are_the_scales_bins() -> None:
    """Built as training builds it (the scale's class edges, standardised by the registry), the classes of
    float32 standardised scores are the paper's S/F bins: 180 in 180–275, 275 and 430 in the lower bin."""
    from learner.config import LossConfig
    from learner.data.scales import get_scale
    from learner.losses.registry import ScoreLabels, build_objective
    from learner.losses.regression import ScoreStandardiser

    scale = get_scale("sf")
    scores = [179.9, 180.0, 180.1, 275.0, 275.1, 430.0, 430.1]
    standardiser = ScoreStandardiser.fit([120.0, 180.0, 251.3, 310.0, 460.0])
    labels = ScoreLabels(standardiser, scale.class_edges())
    loss = build_objective(LossConfig(name="mse+supcon_bins"), labels).contrastive
    assert isinstance(loss, SupConBinsLoss)
    score_std = standardiser.standardise(torch.tensor(scores, dtype=torch.float32))
    assert loss.classes(score_std).tolist() == scale.bin_of(scores).tolist() == [0, 1, 1, 1, 2, 2, 3]
    assert "upper=(True, False, False)" in repr(loss)


def test_supcon_upper_edges_put_their_value_in_the_upper_bin() -> None:
    scores = torch.tensor([179.99, 180.0 - 5e-4, 180.0, 275.0, 275.0 + 5e-4, 275.01], dtype=torch.float64)
    loss = SupConBinsLoss(edges=(180.0, 275.0), upper=(True, False), tolerance=1e-3)
    assert loss.classes(scores).tolist() == [0, 1, 1, 1, 1, 2]  # within the tolerance counts as on the edge
    exact = SupConBinsLoss(edges=(180.0, 275.0), upper=(True, False), tolerance=0.0)
    assert exact.classes(scores).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="one side per edge"):
        SupConBinsLoss(edges=(1.0, 2.0), upper=(True,))


@pytest.mark.parametrize("memory", [0, 3])
@pytest.mark.parametrize("tau", [0.1, 1.0])
@pytest.mark.parametrize("batch", [2, 3, 6])
def test_yaware_matches_loop_oracle(batch: int, tau: float, memory: int) -> None:
    generator = torch.Generator().manual_seed(batch + memory)
    u = torch.randn(batch, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(batch, generator=generator, dtype=torch.float64)
    refs = None
    if memory:
        refs = (
            torch.randn(memory, 3, generator=generator, dtype=torch.float64),
            torch.randn(memory, generator=generator, dtype=torch.float64),
        )
    loss = YAwareInfoNCELoss(sigma=0.7, temperature=tau)(u, y, *(refs or ()))
    assert loss.item() == pytest.approx(literal_infonce(u, y, tau, "yaware", sigma=0.7, refs=refs), rel=1e-10)


@pytest.mark.parametrize("memory", [0, 3])
@pytest.mark.parametrize("tau", [0.1, 1.0])
@pytest.mark.parametrize("batch", [2, 3, 6, 9])
def test_supcon_matches_loop_oracle(batch: int, tau: float, memory: int) -> None:
    generator = torch.Generator().manual_seed(batch + memory)
    u = torch.randn(batch, 3, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 5, (batch,), generator=generator).double()  # integers: some land on the edges
    refs = None
    if memory:
        refs = (
            torch.randn(memory, 3, generator=generator, dtype=torch.float64),
            torch.randint(0, 5, (memory,), generator=generator).double(),
        )
    edges = (1.0, 3.0)
    loss = SupConBinsLoss(edges, temperature=tau)(u, y, *(refs or ()))
    assert loss.item() == pytest.approx(
        literal_infonce(u, y, tau, "supcon", edges=edges, refs=refs), rel=1e-10
    )


@pytest.mark.parametrize("refs", [False, True])
def test_yaware_weights_sum_to_one_per_anchor(refs: bool) -> None:
    u = torch.randn(5, 3)
    y = torch.tensor([-3e38, 0.0, 1.0, 1e-30, 3e38])  # huge gaps: a plain Σ exp(−d²/2σ²) would be 0
    ref = (torch.randn(4, 3), torch.tensor([0.0, 0.0, 7.0, -7.0])) if refs else (None, None)
    alpha = YAwareInfoNCELoss(sigma=0.1).weights(candidates(u, y, *ref))
    assert torch.allclose(alpha.sum(dim=1), torch.ones(5, dtype=torch.float64))
    assert (alpha.diagonal() == 0).all()  # the anchor is never its own positive


LOSSES: dict[str, nn.Module] = {
    "yaware": YAwareInfoNCELoss(sigma=0.5, temperature=0.5),
    "yaware_l2": YAwareInfoNCELoss(sigma=0.5, temperature=0.5, similarity="neg_l2"),
    "supcon": SupConBinsLoss(edges=(0.0,), temperature=0.5),
    "supcon_l2": SupConBinsLoss(edges=(0.0,), temperature=0.5, similarity="neg_l2"),
}


@pytest.mark.parametrize("name", LOSSES)
def test_gradcheck(name: str) -> None:
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(6, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([-1.0, -0.5, 0.0, 0.2, 1.0, 1.5], dtype=torch.float64)
    refs = torch.randn(3, 3, generator=generator, dtype=torch.float64), torch.tensor([-2.0, 0.1, 2.0])
    loss = LOSSES[name]
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (u,))
    assert torch.autograd.gradcheck(lambda e: loss(e, y, *refs), (u,))


ADVERSARIAL = {
    "all-equal scores": (torch.randn(6, 4), torch.zeros(6)),
    "duplicated embeddings": (torch.ones(6, 4), torch.arange(6.0) - 2.5),
    "B = 2": (torch.randn(2, 4), torch.tensor([-1.0, 1.0])),
    "huge score gaps": (torch.randn(6, 4), torch.tensor([-3e38, 0.0, 1.0, 1e-30, 3e38, 5.0])),
    "zero vectors": (torch.zeros(6, 4), torch.arange(6.0) - 2.5),
    "huge embeddings": (torch.randn(6, 4) * 1e15, torch.arange(6.0) - 2.5),
}


@pytest.mark.parametrize("case", ADVERSARIAL)
@pytest.mark.parametrize("name", LOSSES)
def test_adversarial_batches_stay_finite(case: str, name: str) -> None:
    u, y = ADVERSARIAL[case]
    u = u.clone().requires_grad_(True)
    loss = LOSSES[name](u, y)
    loss.backward()
    assert torch.isfinite(loss)
    assert u.grad is not None
    assert torch.isfinite(u.grad).all()


def test_supcon_without_any_positive_is_zero_and_backpropagates() -> None:
    u = torch.randn(3, 4, requires_grad=True)
    loss = SupConBinsLoss(edges=(0.5, 1.5))(u, torch.tensor([0.0, 1.0, 2.0]))  # one scan per bin
    loss.backward()
    assert loss.item() == 0.0
    assert u.grad is not None
    assert (u.grad == 0).all()


@pytest.mark.parametrize("name", LOSSES)
def test_references_are_candidates_without_gradient(name: str) -> None:
    u = torch.randn(4, 3, requires_grad=True)
    ref_u = torch.randn(5, 3, requires_grad=True)
    LOSSES[name](u, torch.tensor([-1.0, 0.0, 0.5, 2.0]), ref_u, torch.randn(5)).backward()
    assert u.grad is not None
    assert u.grad.abs().sum() > 0
    assert ref_u.grad is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="sigma"):
        YAwareInfoNCELoss(sigma=0.0)
    with pytest.raises(ValueError, match="temperature"):
        YAwareInfoNCELoss(temperature=-1.0)
    with pytest.raises(ValueError, match="ascending"):
        SupConBinsLoss(edges=(2.0, 1.0))
    with pytest.raises(ValueError, match="ascending"):
        SupConBinsLoss(edges=(float("nan"),))
    with pytest.raises(ValueError, match=r"ref_embeddings should be \(N, 3\)"):
        YAwareInfoNCELoss()(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 4), torch.zeros(2))
