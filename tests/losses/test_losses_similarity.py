"""Cosine matrix and the cos → log s mappings: references, edge embeddings, gradients, registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_similarity

from learner.config import LossConfig
from learner.errors import ConfigError
from learner.losses.registry import similarity_from_config
from learner.losses.similarity import ExpCosine, ShiftedCosine, cosine_matrix

# Rows: a generic vector, its duplicate, its opposite, a zero vector, an orthogonal one.
EDGE = torch.tensor(
    [[1.0, 2.0, 2.0], [1.0, 2.0, 2.0], [-1.0, -2.0, -2.0], [0.0, 0.0, 0.0], [2.0, -1.0, 0.0]],
    dtype=torch.float64,
)


def test_cosine_matrix_matches_sklearn_including_zero_rows() -> None:
    rng = np.random.default_rng(0)
    u = np.concatenate([rng.normal(size=(5, 4)), np.zeros((1, 4))])
    expected = cosine_similarity(u)  # sklearn also gives 0 for a zero row
    got = cosine_matrix(torch.from_numpy(u)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_shifted_cosine_values_on_edge_embeddings() -> None:
    log_s = ShiftedCosine(floor=1e-4)(cosine_matrix(EDGE))
    assert log_s[0, 1].item() == pytest.approx(0.0, abs=1e-12)  # identical: s = 1
    assert log_s[0, 2].item() == pytest.approx(math.log(1e-4))  # opposite: s = 0 → floor
    assert log_s[0, 3].item() == pytest.approx(math.log(0.5))  # zero vector: cos 0
    assert log_s[0, 4].item() == pytest.approx(math.log(0.5))  # orthogonal
    assert bool((log_s <= 0).all())


def test_shifted_cosine_matches_float64_formula() -> None:
    u = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rows = u.tolist()
    log_s = ShiftedCosine(floor=0.05)(cosine_matrix(u))
    for i, a in enumerate(rows):
        for j, b in enumerate(rows):
            cos = sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
                sum(x * x for x in a) * sum(y * y for y in b)
            )
            expected = math.log(min(max((1 + cos) / 2, 0.05), 1.0))
            assert log_s[i, j].item() == pytest.approx(expected, abs=1e-12)


def test_exp_cosine_is_computed_in_log_space() -> None:
    log_s = ExpCosine(temperature=1e-3)(cosine_matrix(EDGE.float()))
    # Opposite embeddings: (−1 − 1) / 1e-3 = −2000 exactly; exp(−2000) underflows, so exp-then-log gives −inf.
    assert log_s[0, 2].item() == pytest.approx(-2000.0)
    assert log_s[0, 3].item() == pytest.approx(-1000.0)
    assert bool(torch.isfinite(log_s).all())


@pytest.mark.parametrize("mapping", [ShiftedCosine(floor=1e-4), ExpCosine(temperature=0.1)], ids=repr)
def test_gradients_are_finite_for_edge_embeddings(mapping: ShiftedCosine | ExpCosine) -> None:
    u = EDGE.clone().requires_grad_(True)
    weights = torch.linspace(-1, 1, 25, dtype=torch.float64).reshape(5, 5)  # any upstream gradient
    (mapping(cosine_matrix(u)) * weights).sum().backward()
    assert u.grad is not None
    assert bool(torch.isfinite(u.grad).all())


def test_floor_clamp_kills_the_gradient_of_opposite_pairs() -> None:
    # The documented price of clamping before the log: a pair below the floor gets no gradient.
    u = torch.tensor([[1.0, 0.0], [-1.0, 1e-3]], dtype=torch.float64, requires_grad=True)
    ShiftedCosine(floor=1e-4)(cosine_matrix(u))[0, 1].backward()
    assert u.grad is not None
    assert torch.equal(u.grad, torch.zeros_like(u))
    # exp_cosine has no clamp, so the same pair still receives gradient.
    v = u.detach().clone().requires_grad_(True)
    ExpCosine(temperature=1.0)(cosine_matrix(v))[0, 1].backward()
    assert v.grad is not None
    assert v.grad.abs().sum().item() > 0


def test_registry_and_config() -> None:
    assert similarity_from_config(LossConfig(similarity="exp_cosine", temperature=0.3)) == ExpCosine(0.3)
    assert similarity_from_config(LossConfig(sim_floor=0.02)) == ShiftedCosine(floor=0.02)
    with pytest.raises(ConfigError, match=r"unknown loss\.similarity 'dot'; available: exp_cosine, shifted"):
        similarity_from_config(LossConfig.model_construct(similarity="dot"))  # skips the config's check
    with pytest.raises(ValueError, match="floor"):
        ShiftedCosine(floor=0.0)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        cosine_matrix(torch.zeros(2, 3, 4))
