"""The within-patient term (loss.within_patient) against hand-computed float64 values, and its place in the
objective."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learner.config import LossConfig
from learner.errors import ConfigError
from learner.losses.registry import WITHIN_PATIENT, build_objective
from learner.losses.within_patient import WithinPatientLoss, within_patient_pairs

# six members: track 0 on visits 0, 1, 1; track 1 on visits 2, 3; track 2 once
GROUPS = torch.tensor([0, 0, 0, 1, 1, 2])
VISITS = torch.tensor([0, 1, 1, 2, 3, 4])
PRED = torch.tensor([0.5, -0.2, 0.1, 1.0, 1.4, 0.3], dtype=torch.float64)
TARGET = torch.tensor([0.7, 0.0, 0.0, 0.9, 0.9, -1.0], dtype=torch.float64)


def test_pairs_join_one_track_across_visits_only() -> None:
    first, second = within_patient_pairs(GROUPS, VISITS)
    assert list(zip(first.tolist(), second.tolist(), strict=True)) == [(0, 1), (0, 2), (3, 4)]


def test_the_difference_term_is_the_mse_of_the_changes() -> None:
    pairs = [(0, 1), (0, 2), (3, 4)]
    p, y = PRED.numpy(), TARGET.numpy()
    expected = np.mean([((p[j] - p[i]) - (y[j] - y[i])) ** 2 for i, j in pairs])
    value = WithinPatientLoss("difference")(PRED, TARGET, GROUPS, VISITS)
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_the_rank_term_is_ranknet_over_pairs_whose_scores_differ() -> None:
    p, y = PRED.numpy(), TARGET.numpy()
    ordered = [(0, 1), (0, 2)]  # (3, 4) has equal scores: no order to learn
    expected = np.mean([math.log1p(math.exp(-np.sign(y[j] - y[i]) * (p[j] - p[i]))) for i, j in ordered])
    value = WithinPatientLoss("rank")(PRED, TARGET, GROUPS, VISITS)
    assert value.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("term", ["difference", "rank"])
def test_a_batch_without_a_pair_gives_zero_and_a_gradient(term: str) -> None:
    pred = PRED.clone().requires_grad_(True)
    value = WithinPatientLoss(term)(pred, TARGET, torch.arange(6), VISITS)  # type: ignore[arg-type]
    value.backward()
    assert value.item() == 0.0
    assert pred.grad is not None
    assert not pred.grad.any()


def test_the_objective_adds_mu_times_the_term_and_logs_it() -> None:
    cfg = LossConfig(name="mse+wcl", within_patient=0.5)
    objective = build_objective(cfg)
    assert objective.weights[WITHIN_PATIENT] == 0.5
    embeddings = torch.randn(6, 8, dtype=torch.float64)
    out = objective(embeddings, PRED, TARGET, groups=GROUPS, visits=VISITS)
    without = build_objective(LossConfig(name="mse+wcl"))(embeddings, PRED, TARGET)
    term = WithinPatientLoss("difference")(PRED, TARGET, GROUPS, VISITS)
    assert out.total.item() == pytest.approx(without.total.item() + 0.5 * term.item(), rel=1e-12)
    assert out.terms[WITHIN_PATIENT].item() == pytest.approx(term.item())
    with pytest.raises(ValueError, match="groups and visits"):
        objective(embeddings, PRED, TARGET)


def test_the_term_needs_the_regression_head() -> None:
    with pytest.raises(ConfigError, match=r"add mse to loss\.name"):
        build_objective(LossConfig(name="wcl", within_patient=1.0))
