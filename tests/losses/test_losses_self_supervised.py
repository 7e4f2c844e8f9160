"""VICReg against a hand computation and a literal Python loop; gradcheck; adversarial batches; registry."""

from __future__ import annotations

import math

import pytest
import torch

from learner.config import LossConfig
from learner.errors import ConfigError
from learner.losses.registry import ViewObjective, build_objective, build_view_objective
from learner.losses.self_supervised import VICRegLoss


def reference_terms(view_a: torch.Tensor, view_b: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4):
    """s, (v(Z) + v(Z'))/2 and c(Z) + c(Z') as loops over rows and dimensions in Python floats."""
    a, b = view_a.tolist(), view_b.tolist()
    n, d = len(a), len(a[0])
    s = sum((a[i][j] - b[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def column_mean(z: list[list[float]], j: int) -> float:
        return sum(z[i][j] for i in range(n)) / n

    def cov(z: list[list[float]], j: int, k: int) -> float:
        mj, mk = column_mean(z, j), column_mean(z, k)
        return sum((z[i][j] - mj) * (z[i][k] - mk) for i in range(n)) / (n - 1)

    def v(z: list[list[float]]) -> float:
        return sum(max(0.0, gamma - math.sqrt(cov(z, j, j) + eps)) for j in range(d)) / d

    def c(z: list[list[float]]) -> float:
        return sum(cov(z, j, k) ** 2 for j in range(d) for k in range(d) if j != k) / d

    return s, (v(a) + v(b)) / 2, c(a) + c(b)


def test_hand_computed_batch() -> None:
    # a: dim 0 = (1, −1) has std √2 ≥ 1 (no penalty), dim 1 = (0, 0) has std √ε = 0.01 → v(a) = 0.99/2;
    # b: dims (1, −1) and (2, 0) both std √2 → v(b) = 0, but they are perfectly correlated: cov = [[2, 2],
    # [2, 2]] → c(b) = (2² + 2²)/2 = 4, c(a) = 0; s = (0 + 2² + 0 + 0)/4 = 1.
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    b = torch.tensor([[1.0, 2.0], [-1.0, 0.0]])
    terms = VICRegLoss().terms(a, b)
    assert terms["invariance"].item() == pytest.approx(1.0)
    assert terms["variance"].item() == pytest.approx(0.2475)
    assert terms["covariance"].item() == pytest.approx(4.0)
    assert VICRegLoss()(a, b).item() == pytest.approx(25 * 1.0 + 25 * 0.2475 + 4.0)
    custom = VICRegLoss(invariance_weight=1, variance_weight=2, covariance_weight=3)
    assert custom(a, b).item() == pytest.approx(1.0 + 2 * 0.2475 + 3 * 4.0)


@pytest.mark.parametrize("n", [2, 5, 16])
@pytest.mark.parametrize("d", [1, 3, 8])
@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_matches_the_literal_loop(n: int, d: int, gamma: float) -> None:
    generator = torch.Generator().manual_seed(n * 100 + d)
    a = torch.randn(n, d, generator=generator, dtype=torch.float64) * 0.8
    b = a + 0.3 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    terms = VICRegLoss(gamma=gamma).terms(a, b)
    expected = reference_terms(a, b, gamma=gamma)
    got = (terms["invariance"].item(), terms["variance"].item(), terms["covariance"].item())
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_gradcheck() -> None:
    generator = torch.Generator().manual_seed(0)
    a = (0.5 * torch.randn(6, 4, generator=generator, dtype=torch.float64)).requires_grad_()
    b = (0.5 * torch.randn(6, 4, generator=generator, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(VICRegLoss(), (a, b))


ADVERSARIAL = {
    "collapsed": lambda: (torch.ones(8, 16), torch.ones(8, 16)),
    "zeros": lambda: (torch.zeros(4, 8), torch.zeros(4, 8)),
    "two rows": lambda: (torch.tensor([[1.0, 2.0], [1.0, 2.0]]), torch.tensor([[0.0, 0.0], [5.0, 5.0]])),
    "one dimension": lambda: (torch.randn(8, 1), torch.randn(8, 1)),
    "large": lambda: (1e3 * torch.randn(16, 32), 1e3 * torch.randn(16, 32)),
    "tiny": lambda: (1e-20 * torch.randn(16, 32), torch.zeros(16, 32)),
    "outlier": lambda: (torch.cat([torch.zeros(7, 8), torch.full((1, 8), 1e4)]), torch.zeros(8, 8)),
    "non-negative, post-ReLU": lambda: (torch.relu(torch.randn(16, 512)), torch.relu(torch.randn(16, 512))),
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_loss_and_gradients_are_finite_on_adversarial_batches(name: str) -> None:
    torch.manual_seed(0)
    a, b = (x.requires_grad_() for x in ADVERSARIAL[name]())
    loss = VICRegLoss()(a, b)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(a.grad).all()
    assert torch.isfinite(b.grad).all()


def test_identical_views_have_no_invariance_term_and_collapse_is_penalised() -> None:
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    assert VICRegLoss().terms(z, z)["invariance"].item() == 0.0
    collapsed = VICRegLoss().terms(torch.ones(8, 4), torch.ones(8, 4))
    assert collapsed["variance"].item() == pytest.approx(1 - math.sqrt(1e-4))  # every dimension's std is √ε


@pytest.mark.parametrize(
    ("a", "b"),
    [((4, 3), (4, 2)), ((1, 3), (1, 3)), ((4,), (4,))],
)
def test_bad_shapes_and_weights_are_value_errors(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="two views of shape"):
        VICRegLoss()(torch.zeros(a), torch.zeros(b))
    with pytest.raises(ValueError, match=">= 0"):
        VICRegLoss(covariance_weight=-1)


def test_registry_builds_vicreg_alone_and_refuses_it_in_a_label_objective() -> None:
    objective = build_view_objective(LossConfig(name="vicreg"))
    assert isinstance(objective, ViewObjective)
    assert objective.names == ("vicreg",)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    out = objective(a, b)
    assert set(out.terms) == {"invariance", "variance", "covariance"}
    torch.testing.assert_close(out.total, VICRegLoss()(a, b))
    assert build_view_objective(LossConfig(name="mse+wcl")) is None
    with pytest.raises(ConfigError, match=r"vicreg is self-supervised .* use loss\.name=vicreg"):
        build_objective(LossConfig(name="mse+vicreg"))
