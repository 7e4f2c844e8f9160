"""CL (Eq. 2), wCL (Eq. 3 literally) and wcl_scaled against a hand computation and a slow float64 loop."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from learner.losses.contrastive import (
    LiteralWeighting,
    PairwiseContrastiveLoss,
    ScaledWeighting,
    Unweighted,
    Weighting,
)
from learner.losses.selection import select_pairs
from learner.losses.similarity import ExpCosine, ShiftedCosine, SimilarityMapping

EPS, WMAX, FLOOR = 0.1, 10.0, 1e-4
WEIGHTINGS: dict[str, Weighting] = {
    "cl": Unweighted(),
    "wcl": LiteralWeighting(eps=EPS, weight_max=WMAX),
    "wcl_scaled": ScaledWeighting(eps=EPS, weight_max=WMAX),
}


def reference_loss(
    embeddings: torch.Tensor,
    scores: torch.Tensor,
    kind: str,
    floor: float = FLOOR,
    tau: float | None = None,
    eps: float = EPS,
    wmax: float = WMAX,
    reduction: str = "mean",
) -> float:
    """Eqs. 2–3 as loops over anchors and pairs in Python floats (the sets come from the tested miner):
    per anchor the mean over each set (``mean``) or the sum (``sum``, Eqs. 2–3 as printed)."""
    u = embeddings.tolist()
    s = scores.tolist()
    sel = select_pairs(scores)

    def log_sim(i: int, j: int) -> float:
        dot = sum(a * b for a, b in zip(u[i], u[j], strict=True))
        cos = dot / math.sqrt(sum(a * a for a in u[i]) * sum(b * b for b in u[j]))
        if tau is not None:
            return (cos - 1) / tau
        return math.log(min(max((1 + cos) / 2, floor), 1.0))

    per_anchor = []
    for i in range(len(s)):
        neg = [j for j in range(len(s)) if sel.negative[i, j]]
        pos = [j for j in range(len(s)) if sel.positive[i, j]]
        if not neg and not pos:
            continue
        w = {j: abs(s[i] - s[j]) + eps for j in neg + pos}
        if kind == "cl":
            n = {j: log_sim(i, j) for j in neg}
            p = {j: log_sim(i, j) for j in pos}
        elif kind == "wcl":
            bounded = {j: min(max(w[j], 1 / wmax), wmax) for j in w}
            n = {j: math.log(math.exp(log_sim(i, j)) * bounded[j]) for j in neg}  # log(s·w), as printed
            p = {j: log_sim(i, j) / bounded[j] for j in pos}
        else:
            mean_w = sum(w[j] for j in neg) / len(neg) if neg else 1.0
            mean_inv = sum(1 / w[j] for j in pos) / len(pos) if pos else 1.0
            n = {j: min(w[j] / mean_w, wmax) * log_sim(i, j) for j in neg}
            p = {j: min((1 / w[j]) / mean_inv, wmax) * log_sim(i, j) for j in pos}
        if reduction == "sum":
            per_anchor.append(sum(n.values()) - sum(p.values()))
            continue
        side_neg = sum(n.values()) / len(neg) if neg else 0.0
        side_pos = sum(p.values()) / len(pos) if pos else 0.0
        per_anchor.append(side_neg - side_pos)
    if reduction == "sum":
        return sum(per_anchor)
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def random_batch(
    seed: int, batch: int, dim: int = 3, ties: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    if ties:
        scores = torch.randint(0, 3, (batch,), generator=generator).double() * 0.5
    else:
        scores = torch.randn(batch, generator=generator, dtype=torch.float64)
    return embeddings, scores


# Four unit vectors at 0°, 60°, 90°, 180° and scores 0, 1, 3, 6 (used as standardised scores).
HAND_U = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
HAND_S = torch.tensor([0.0, 1.0, 3.0, 6.0], dtype=torch.float64)
# Sets (see test_losses_selection): 0: +{1} −{3}; 1: +{0} −{3}; 2: +{1} −{0, 3}; 3: +{2} −{0}.
# s = (1 + cos)/2: s01 = 3/4, s02 = 1/2, s03 = 0 → floor 1e-4, s12 = (2 + √3)/4, s13 = 1/4, s23 = 1/2.
LOG_FLOOR = math.log(1e-4)
S12 = (2 + math.sqrt(3)) / 4


def test_cl_by_hand() -> None:
    per_anchor = [
        LOG_FLOOR - math.log(3 / 4),  # −8.9227
        math.log(1 / 4) - math.log(3 / 4),  # −1.0986
        (math.log(1 / 2) + math.log(1 / 2)) / 2 - math.log(S12),  # −0.6238
        LOG_FLOOR - math.log(1 / 2),  # −8.5172
    ]
    expected = sum(per_anchor) / 4  # −4.79057
    # the hand-derived sets and similarities agree with the loop over the vectors and the miner's sets
    assert expected == pytest.approx(reference_loss(HAND_U, HAND_S, "cl"), abs=1e-12)
    got = PairwiseContrastiveLoss(Unweighted(), ShiftedCosine(FLOOR))(HAND_U, HAND_S)
    assert got.item() == pytest.approx(expected, abs=1e-12)
    # Eq. 2 as printed sums every selected pair: anchor 2 counts both of its negatives in full
    literal = sum(per_anchor) + (math.log(1 / 2) + math.log(1 / 2)) / 2  # −19.8609
    summed = PairwiseContrastiveLoss(Unweighted(), ShiftedCosine(FLOOR), reduction="sum")(HAND_U, HAND_S)
    assert summed.item() == pytest.approx(literal, abs=1e-12)
    assert literal == pytest.approx(reference_loss(HAND_U, HAND_S, "cl", reduction="sum"), abs=1e-12)


def test_wcl_by_hand() -> None:
    # w = |Δ| + 0.1: negatives 6.1, 5.1, 3.1 (twice), 6.1; positives 1.1, 1.1, 2.1, 3.1.
    per_anchor = [
        LOG_FLOOR + math.log(6.1) - math.log(3 / 4) / 1.1,
        math.log(1 / 4) + math.log(5.1) - math.log(3 / 4) / 1.1,
        math.log(1 / 2) + math.log(3.1) - math.log(S12) / 2.1,
        LOG_FLOOR + math.log(6.1) - math.log(1 / 2) / 3.1,
    ]
    expected = sum(per_anchor) / 4  # −3.33581
    assert expected == pytest.approx(reference_loss(HAND_U, HAND_S, "wcl"), abs=1e-12)
    got = PairwiseContrastiveLoss(WEIGHTINGS["wcl"], ShiftedCosine(FLOOR))(HAND_U, HAND_S)
    assert got.item() == pytest.approx(expected, abs=1e-12)


def test_wcl_scaled_by_hand_equals_cl_when_each_set_has_equal_weights() -> None:
    # Every set here has one member, or (anchor 2's negatives) two with the same |Δ| = 3: each normalised
    # weight is exactly 1, so the repaired loss reduces to CL on this batch.
    got = PairwiseContrastiveLoss(WEIGHTINGS["wcl_scaled"], ShiftedCosine(FLOOR))(HAND_U, HAND_S)
    assert got.item() == pytest.approx(-4.790568624, abs=1e-9)


@pytest.mark.parametrize("kind", list(WEIGHTINGS))
@pytest.mark.parametrize(("batch", "ties"), [(4, False), (5, True), (6, False), (6, True)])
@pytest.mark.parametrize("tau", [None, 0.5], ids=["shifted", "exp"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_slow_reference(kind: str, batch: int, ties: bool, tau: float | None, reduction: str) -> None:
    embeddings, scores = random_batch(seed=batch * 10 + ties, batch=batch, ties=ties)
    similarity: SimilarityMapping = ShiftedCosine(FLOOR) if tau is None else ExpCosine(tau)
    got = PairwiseContrastiveLoss(WEIGHTINGS[kind], similarity, reduction=reduction)(embeddings, scores)
    expected = reference_loss(embeddings, scores, kind, tau=tau, reduction=reduction)
    assert got.item() == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize(
    ("kind", "weighting"),
    [
        ("wcl", LiteralWeighting(eps=0.01, weight_max=2.0)),
        ("wcl_scaled", ScaledWeighting(eps=0.01, weight_max=2.0)),
    ],
)
def test_weight_bound_binds_as_the_reference_says(kind: str, weighting: Weighting) -> None:
    # Tied scores (w = ε = 0.01) next to distant ones make the w_max = 2 bound active.
    # Anchor 0's positives {1, 2, 3} have 1/w = 100, 0.99, 0.83: normalised, the tied one gets 2.95 > 2.
    embeddings, _ = random_batch(seed=9, batch=7, dim=3)
    scores = torch.tensor([0.0, 0.0, 1.0, 1.2, 5.0, 6.0, 7.0], dtype=torch.float64)
    got = PairwiseContrastiveLoss(weighting)(embeddings, scores).item()
    expected = reference_loss(embeddings, scores, kind, eps=0.01, wmax=2.0)
    unbounded = reference_loss(embeddings, scores, kind, eps=0.01, wmax=1e9)
    assert got == pytest.approx(expected, abs=1e-10)
    assert abs(expected - unbounded) > 1e-3


@pytest.mark.parametrize("kind", list(WEIGHTINGS))
@pytest.mark.parametrize("tau", [None, 0.5], ids=["shifted", "exp"])
def test_gradcheck(kind: str, tau: float | None) -> None:
    embeddings, scores = random_batch(seed=5, batch=6, dim=3, ties=True)
    similarity: SimilarityMapping = ShiftedCosine(FLOOR) if tau is None else ExpCosine(tau)
    loss = PairwiseContrastiveLoss(WEIGHTINGS[kind], similarity)
    # Away from the clamp: no off-diagonal pair is near the floor (cos > −0.9998).
    cos = torch.nn.functional.cosine_similarity(embeddings[:, None], embeddings[None], dim=-1)
    assert cos.min().item() > -0.99
    assert torch.autograd.gradcheck(lambda u: loss(u, scores), (embeddings.requires_grad_(True),))


@pytest.mark.parametrize("kind", list(WEIGHTINGS))
def test_batch_order_invariance(kind: str) -> None:
    embeddings, scores = random_batch(seed=11, batch=8, dim=4, ties=True)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    loss = PairwiseContrastiveLoss(WEIGHTINGS[kind])
    u = embeddings.clone().requires_grad_(True)
    loss(u, scores).backward()
    v = embeddings[perm].clone().requires_grad_(True)
    permuted = loss(v, scores[perm])
    permuted.backward()
    assert permuted.item() == pytest.approx(loss(embeddings, scores).item(), abs=1e-12)
    assert u.grad is not None
    assert v.grad is not None
    torch.testing.assert_close(v.grad, u.grad[perm])


def _opposite() -> tuple[torch.Tensor, torch.Tensor]:
    u = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    return u, torch.tensor([0.0, 3.0, 0.5, 2.0])


ADVERSARIAL = {
    "zeros": lambda: (torch.zeros(5, 4), torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])),
    "some-zero": lambda: (torch.cat([torch.zeros(1, 3), torch.eye(3)]), torch.tensor([0.0, 1.0, 2.0, 5.0])),
    "duplicates": lambda: (
        torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0], [3.0, 0.0, 1.0]]).repeat_interleave(2, dim=0),
        torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0]),
    ),
    "identical": lambda: (torch.ones(5, 3), torch.tensor([0.0, -1.0, 2.0, 0.5, 1.5])),
    "opposite": _opposite,
    "all-equal-scores": lambda: (
        torch.randn(5, 3, generator=torch.Generator().manual_seed(0)),
        torch.ones(5),
    ),
    "b2": lambda: (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0.0, 1.0])),
    "huge-scores": lambda: (torch.eye(4), torch.tensor([1e30, -1e30, 0.0, 1e-30])),
}


@pytest.mark.parametrize("kind", list(WEIGHTINGS))
@pytest.mark.parametrize("case", list(ADVERSARIAL))
@pytest.mark.parametrize("similarity", [ShiftedCosine(FLOOR), ExpCosine(0.1)], ids=["shifted", "exp"])
def test_finite_loss_and_gradients_on_adversarial_batches(
    kind: str, case: str, similarity: SimilarityMapping
) -> None:
    embeddings, scores = ADVERSARIAL[case]()
    u = embeddings.clone().requires_grad_(True)
    loss = PairwiseContrastiveLoss(WEIGHTINGS[kind], similarity)(u, scores)
    loss.backward()
    assert torch.isfinite(loss)
    assert u.grad is not None
    assert bool(torch.isfinite(u.grad).all())
    if case in ("all-equal-scores", "b2"):  # no pair is selected: loss 0, and still a (zero) gradient
        assert loss.item() == 0.0
        assert torch.equal(u.grad, torch.zeros_like(u))


def test_wcl_negative_weight_has_no_gradient_effect() -> None:
    embeddings, scores = random_batch(seed=5, batch=7, dim=4, ties=True)
    sel = select_pairs(scores)
    w = (sel.distance + EPS).clamp(1 / WMAX, WMAX)

    def grad_of(fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, torch.Tensor]:
        u = embeddings.clone().requires_grad_(True)
        value = fn(u)
        value.backward()
        assert u.grad is not None
        return value.item(), u.grad

    def literal_without_negative_weight(u: torch.Tensor) -> torch.Tensor:
        """Eq. 3 with the log w of the negatives dropped, written with explicit per-anchor loops."""
        cos = torch.nn.functional.cosine_similarity(u[:, None], u[None], dim=-1)
        log_s = ((1 + cos) / 2).clamp(min=FLOOR, max=1.0).log()
        terms = []
        for i in range(len(scores)):
            neg, pos = sel.negative[i], sel.positive[i]
            terms.append(log_s[i][neg].mean() - (log_s[i][pos] / w[i][pos]).mean())
        return torch.stack(terms).mean()

    wcl_value, wcl_grad = grad_of(lambda u: PairwiseContrastiveLoss(WEIGHTINGS["wcl"])(u, scores))
    bare_value, bare_grad = grad_of(literal_without_negative_weight)
    _, scaled_grad = grad_of(lambda u: PairwiseContrastiveLoss(WEIGHTINGS["wcl_scaled"])(u, scores))
    assert sel.negative.any(dim=1).all()
    assert sel.positive.any(dim=1).all()
    # The two differ by a constant, the mean over anchors of mean_{j∈i⁻} log w_ij ...
    log_w_shift = torch.stack([w[i][sel.negative[i]].log().mean() for i in range(len(scores))]).mean()
    assert wcl_value - bare_value == pytest.approx(log_w_shift.item(), abs=1e-10)
    assert log_w_shift.item() != pytest.approx(0.0, abs=1e-3)
    # ... so their gradients are identical, while the repaired weighting really changes the gradient.
    torch.testing.assert_close(wcl_grad, bare_grad, rtol=1e-10, atol=1e-12)
    assert (wcl_grad - scaled_grad).abs().max().item() > 1e-3


def test_scaled_weights_change_the_loss_when_distances_differ() -> None:
    # B = 6 with distinct scores: every anchor has two negatives at different |Δ|, so wcl_scaled ≠ cl.
    embeddings, scores = random_batch(seed=2, batch=6, dim=3)
    cl = PairwiseContrastiveLoss(Unweighted())(embeddings, scores).item()
    scaled = PairwiseContrastiveLoss(WEIGHTINGS["wcl_scaled"])(embeddings, scores).item()
    assert abs(cl - scaled) > 1e-3


def test_half_precision_is_upcast() -> None:
    embeddings, scores = random_batch(seed=4, batch=6, dim=5)
    half = embeddings.to(torch.bfloat16)
    loss = PairwiseContrastiveLoss(WEIGHTINGS["wcl_scaled"])
    got = loss(half, scores.float())
    assert got.dtype == torch.float32
    expected = loss(half.float(), scores.float())
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize(
    ("embeddings", "scores"),
    [(torch.zeros(4), torch.zeros(4)), (torch.zeros(4, 2), torch.zeros(3))],
    ids=["1d-embeddings", "length-mismatch"],
)
def test_shape_errors(embeddings: torch.Tensor, scores: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        PairwiseContrastiveLoss()(embeddings, scores)


def test_weighting_options_are_validated() -> None:
    with pytest.raises(ValueError, match="eps"):
        LiteralWeighting(eps=0.0)
    with pytest.raises(ValueError, match="weight_max"):
        ScaledWeighting(weight_max=0.5)
