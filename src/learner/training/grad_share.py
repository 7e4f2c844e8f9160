"""How much of an update the contrastive term drives, on one batch: ‖∇_θ (1 − λ)·C‖ / (‖∇_θ λ·MSE‖ +
‖∇_θ (1 − λ)·C‖), the ``grad_share_contrastive`` column of ``metrics.csv`` (each epoch's first batch).

:func:`contrastive_gradient_share` is the loader path's (a float, one host sync); the device-data path
(:mod:`learner.training.device_epoch`) keeps :func:`contrastive_gradient_norms` on the device and divides
with :func:`gradient_share` at the epoch's end.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from learner.losses.registry import WITHIN_PATIENT, LossOutput
from learner.training.distributed import mean_over_ranks


def contrastive_gradient_share(model: nn.Module, out: LossOutput) -> float | None:
    """‖∇_θ (1 − λ)·C‖ / (‖∇_θ λ·MSE‖ + ‖∇_θ (1 − λ)·C‖) over every trainable parameter, on one batch: the
    share of the update the contrastive term drives (0: MSE alone, 1: C alone). None unless the objective
    has exactly two terms. Two extra backward passes through the batch's graph (kept for the update); they
    read gradients without accumulating them, so the update and the RNG are untouched."""
    norms = contrastive_gradient_norms(model, out)
    return None if norms is None else gradient_share(*(float(n) for n in norms))


def contrastive_gradient_norms(model: nn.Module, out: LossOutput) -> torch.Tensor | None:
    """(‖∇_θ λ·MSE‖, ‖∇_θ (1 − λ)·C‖) as a (2,) float32 tensor left on the device (no host sync), or None
    where :func:`contrastive_gradient_share` is None: that share before its division.

    Distributed, each rank's gradient of a term covers only its slice of the global batch (scaled by the
    world size: :mod:`learner.training.distributed`); their mean over the ranks, the gradient DDP applies,
    is the single process's, so the norms are taken of that mean (an all-reduce per parameter tensor, on the
    epoch's first batch only)."""
    if len(out.weighted) != 2 or WITHIN_PATIENT in out.weighted:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    norms = []
    for value in out.weighted.values():  # MSE first, then the contrastive term
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        # every rank has the same graph, so the same parameters without a gradient and the same reductions
        parts = [mean_over_ranks(g.float()).norm() for g in grads if g is not None]
        norms.append(torch.linalg.vector_norm(torch.stack(parts)))
    return torch.stack(norms)


def gradient_share(mse: float, contrastive: float) -> float:
    """contrastive / (mse + contrastive) of two gradient norms; NaN when both are 0."""
    return contrastive / (mse + contrastive) if mse + contrastive > 0 else math.nan
