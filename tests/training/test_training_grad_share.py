"""The per-epoch share of the update the contrastive term drives (issue 20 item 4), against separate
backward passes that accumulate each weighted term's gradient by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learner.config import LossConfig
from learner.losses.registry import build_objective
from learner.training.epoch import contrastive_gradient_share


def _model_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 4))
    return model, torch.randn(8, 5), torch.randn(8)


@pytest.mark.parametrize("lam", [0.9, 0.5, 0.1])
def test_share_matches_separate_backward_passes(lam: float) -> None:
    model, x, target = _model_and_batch()
    objective = build_objective(LossConfig(name="mse+cl", lam=lam))

    def loss_parts() -> dict[str, torch.Tensor]:
        u = model(x)
        return objective(u, u[:, 0], target).weighted

    share = contrastive_gradient_share(model, objective(model(x), model(x)[:, 0], target))
    assert all(p.grad is None for p in model.parameters())  # measured, not accumulated
    norms = []
    for name in ("mse", "cl"):
        model.zero_grad(set_to_none=True)
        loss_parts()[name].backward()
        norms.append(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters())).item())
    assert share == pytest.approx(norms[1] / (norms[0] + norms[1]), rel=1e-5)
    assert 0.0 < share < 1.0


def test_no_share_for_a_single_term() -> None:
    model, x, target = _model_and_batch()
    u = model(x)
    assert (
        contrastive_gradient_share(model, build_objective(LossConfig(name="mse"))(u, u[:, 0], target)) is None
    )
