"""VICReg, a self-supervised objective on two views of each scan (no scores, no negatives).

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022. For two batches of embeddings Z, Z' (n, d) of the same n scans, row i of each being a
different view of scan i:

    s(Z, Z')  = 1/(n·d) Σ_i ‖z_i − z'_i‖²                       invariance: the two views agree
    v(Z)      = 1/d Σ_j max(0, γ − √(Var(z^j) + ε))             variance: every dimension keeps std ≥ γ
    c(Z)      = 1/d Σ_{j≠k} C(Z)_jk²,  C(Z) = 1/(n−1) Σ_i (z_i − z̄)(z_i − z̄)ᵀ    covariance: decorrelation
    L         = λ·s(Z, Z') + μ·(v(Z) + v(Z'))/2 + ν·(c(Z) + c(Z'))

with Var the unbiased variance of dimension j over the batch, γ = 1, ε = 1e-4 and λ = μ = 25, ν = 1 (the
paper's values). The normalisations are those of the authors' reference implementation, for which these
coefficients were tuned: s is averaged over the n·d entries (the paper's Eq. 5 omits 1/d) and the variance
term is the mean over the two branches (the paper's Eq. 6 sums them).

The variance and covariance terms are what prevent collapse without negatives, so the loss works at
small batch sizes (n ≥ 2; Var needs two rows). Departure from the paper: VICReg computes the loss on the
output of an "expander" MLP (8192-8192-8192); here it is computed on the encoder's embeddings U directly,
so the encoder alone carries the objective and its checkpoint is exactly what ``model.init`` reads.
"""

from __future__ import annotations

import torch
from torch import Tensor

VICREG_TERMS: tuple[str, ...] = ("invariance", "variance", "covariance")


def invariance(view_a: Tensor, view_b: Tensor) -> Tensor:
    """s(Z, Z'): the mean over all n·d entries of (z − z')²; views (n, d) → scalar."""
    return (view_a - view_b).pow(2).mean()


def variance(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """v(Z): the mean over the d dimensions of max(0, γ − √(Var + ε)), Var unbiased over the n rows."""
    std = torch.sqrt(z.var(dim=0) + eps)  # (d,)
    return torch.relu(gamma - std).mean()


def covariance(z: Tensor) -> Tensor:
    """c(Z): the sum of the squared off-diagonal entries of the (d, d) covariance matrix, divided by d."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)  # (d, d)
    off_diagonal = cov.pow(2).sum() - cov.diagonal().pow(2).sum()
    return off_diagonal / d


class VICRegLoss:
    """L = λ·s + μ·(v(Z) + v(Z'))/2 + ν·(c(Z) + c(Z')) on two views (n, d) of the same n scans.

    Args:
        invariance_weight: λ (paper: 25).
        variance_weight: μ (paper: 25).
        covariance_weight: ν (paper: 1).
        gamma: γ, the target standard deviation of every dimension (paper: 1).
        eps: ε under the square root (paper: 1e-4); keeps the gradient of a collapsed dimension finite.

    Shape:
        view_a, view_b: (n, d) with n ≥ 2; returns a scalar.

    Example::

        loss = VICRegLoss()
        value = loss(encoder(clips_a), encoder(clips_b))   # (n, D) each
        loss.terms(z_a, z_b)                               # {"invariance": s, "variance": …, "covariance": …}
    """

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
    ) -> None:
        weights = (invariance_weight, variance_weight, covariance_weight)
        if any(w < 0 for w in weights):
            raise ValueError(f"VICReg weights should be >= 0, got {weights}")
        if gamma <= 0 or eps <= 0:
            raise ValueError(f"gamma and eps should be > 0, got gamma={gamma}, eps={eps}")
        self.weights = dict(zip(VICREG_TERMS, weights, strict=True))
        self.gamma, self.eps = gamma, eps

    def terms(self, view_a: Tensor, view_b: Tensor) -> dict[str, Tensor]:
        """The unweighted terms: ``invariance`` s(Z, Z'), ``variance`` (v(Z) + v(Z'))/2, ``covariance``
        c(Z) + c(Z').

        Raises:
            ValueError: the views differ in shape, are not 2-D, or have fewer than 2 rows.
        """
        if view_a.shape != view_b.shape or view_a.ndim != 2 or view_a.shape[0] < 2:
            raise ValueError(
                f"VICReg needs two views of shape (n, d) with n >= 2, got {tuple(view_a.shape)} "
                f"and {tuple(view_b.shape)}"
            )
        return {
            "invariance": invariance(view_a, view_b),
            "variance": (variance(view_a, self.gamma, self.eps) + variance(view_b, self.gamma, self.eps)) / 2,
            "covariance": covariance(view_a) + covariance(view_b),
        }

    def combine(self, terms: dict[str, Tensor]) -> Tensor:
        """λ·s + μ·v + ν·c from :meth:`terms`."""
        w = self.weights
        return (
            w["invariance"] * terms["invariance"]
            + w["variance"] * terms["variance"]
            + w["covariance"] * terms["covariance"]
        )

    def __call__(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        return self.combine(self.terms(view_a, view_b))

    def __repr__(self) -> str:
        return f"VICRegLoss({', '.join(f'{k}={v:g}' for k, v in self.weights.items())}, gamma={self.gamma:g})"
