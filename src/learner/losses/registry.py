"""The pretraining objective: the ``loss`` config section as λ·MSE + (1 − λ)·contrastive (Section 2.3.1).

This is the only losses module that reads a :class:`~learner.config.LossConfig`; the maths modules take
plain arguments (``temperature``, ``floor``, ``eps``, ``weight_max``).

``loss.name`` joins terms with ``+``:

* ``mse`` — Eq. 1 alone, weight 1 (the paper's MSE baseline);
* ``mse+<c>`` — λ·MSE + (1 − λ)·c with λ = ``loss.lam`` (paper: 0.9), c one of :data:`LOSSES`
  (``cl`` Eq. 2, ``wcl`` Eq. 3 literally, ``wcl_scaled`` the repaired Eq. 3; see
  :mod:`learner.losses.contrastive`);
* ``<c>`` — the contrastive term alone, weight 1 (the regression head then gets no gradient).

Terms may appear in any order, each at most once, with at most one contrastive term. A new contrastive
term is added with :func:`register_loss`: a factory ``LossConfig → (embeddings (B, D), scores_std (B,)) →
scalar``.

A self-supervised objective (:data:`SELF_SUPERVISED`: ``vicreg``) stands alone in ``loss.name``: it sees two
views of each scan and no scores, so it is a :class:`ViewObjective` built by :func:`build_view_objective`
(:func:`build_objective` refuses it with that hint).

Example::

    objective = build_objective(cfg.loss)             # "mse+wcl", λ = 0.9
    out = objective(embeddings, pred_std, target_std)
    out.total.backward(); log(out.terms)              # {"mse": …, "wcl": …}, detached
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import Tensor

from learner.config import LossConfig
from learner.errors import ConfigError
from learner.losses.contrastive import (
    LiteralWeighting,
    PairwiseContrastiveLoss,
    ScaledWeighting,
    Unweighted,
    Weighting,
)
from learner.losses.regression import mse_loss
from learner.losses.self_supervised import VICRegLoss
from learner.losses.similarity import ExpCosine, ShiftedCosine, SimilarityMapping

MSE = "mse"

ContrastiveLoss = Callable[[Tensor, Tensor], Tensor]
"""(embeddings (B, D), scores_std (B,)) → scalar."""

ContrastiveFactory = Callable[[LossConfig], ContrastiveLoss]

SIMILARITIES: dict[str, Callable[[LossConfig], SimilarityMapping]] = {
    "shifted_cosine": lambda loss_cfg: ShiftedCosine(floor=loss_cfg.sim_floor),
    "exp_cosine": lambda loss_cfg: ExpCosine(temperature=loss_cfg.temperature),
}
"""``loss.similarity`` → the cos → log s mapping, with its option from the config."""


def similarity_from_config(loss_cfg: LossConfig) -> SimilarityMapping:
    """The mapping ``loss_cfg.similarity`` names, with its option (``sim_floor`` or ``temperature``).

    Raises:
        ConfigError: an unknown ``loss.similarity`` (the message lists the available ones).
    """
    if loss_cfg.similarity not in SIMILARITIES:
        available = ", ".join(sorted(SIMILARITIES))
        raise ConfigError(f"unknown loss.similarity {loss_cfg.similarity!r}; available: {available}")
    return SIMILARITIES[loss_cfg.similarity](loss_cfg)


def _pairwise(weighting: Callable[[LossConfig], Weighting]) -> ContrastiveFactory:
    """A factory of the :class:`PairwiseContrastiveLoss` with ``weighting`` and the config's similarity."""
    return lambda loss_cfg: PairwiseContrastiveLoss(weighting(loss_cfg), similarity_from_config(loss_cfg))


LOSSES: dict[str, ContrastiveFactory] = {
    "cl": _pairwise(lambda cfg: Unweighted()),
    "wcl": _pairwise(lambda cfg: LiteralWeighting(eps=cfg.eps, weight_max=cfg.weight_max)),
    "wcl_scaled": _pairwise(lambda cfg: ScaledWeighting(eps=cfg.eps, weight_max=cfg.weight_max)),
}


def register_loss(name: str, factory: ContrastiveFactory) -> None:
    """Make ``name`` usable in ``loss.name`` (as ``"mse+" + name``); unique, and without ``+``."""
    if name == MSE or name in LOSSES:
        raise ValueError(f"loss {name!r} is already registered")
    if not name or "+" in name or name != name.strip():
        raise ValueError(f"loss name {name!r} must be non-empty, without '+' or surrounding spaces")
    LOSSES[name] = factory


def available_losses() -> list[str]:
    """Every term accepted in ``loss.name``: ``mse`` and the registered contrastive terms."""
    return sorted([MSE, *LOSSES])


@dataclass(frozen=True)
class LossOutput:
    """``total`` (scalar, with gradient) and each term's unweighted value (scalars, detached, for logging)."""

    total: Tensor
    terms: dict[str, Tensor]


@dataclass(frozen=True)
class WeightedTerm:
    """One term of the objective: name, weight in the total, and (embeddings, pred, target) → scalar."""

    name: str
    weight: float
    compute: Callable[[Tensor, Tensor, Tensor], Tensor]


class Objective:
    """Σ_k weight_k · term_k over the parsed terms (λ·MSE + (1 − λ)·contrastive)."""

    def __init__(self, terms: tuple[WeightedTerm, ...]) -> None:
        self.terms = terms

    @property
    def names(self) -> tuple[str, ...]:
        """The term names in evaluation order, MSE first (the keys of ``LossOutput.terms``)."""
        return tuple(term.name for term in self.terms)

    def __call__(self, embeddings: Tensor, pred_std: Tensor, target_std: Tensor) -> LossOutput:
        """Evaluate every term on one (global) batch.

        Args:
            embeddings: encoder outputs U, shape (B, D).
            pred_std: head predictions Y in standardised units, shape (B,).
            target_std: standardised ground-truth scores, shape (B,).
        """
        values = {term.name: term.compute(embeddings, pred_std, target_std) for term in self.terms}
        total = sum(term.weight * values[term.name] for term in self.terms)
        if not isinstance(total, Tensor):  # the int start of sum(): an Objective without terms
            raise ValueError("an Objective needs at least one term")
        return LossOutput(total=total, terms={name: value.detach() for name, value in values.items()})

    def __repr__(self) -> str:
        return " + ".join(f"{term.weight:g}·{term.name}" for term in self.terms)


def build_objective(loss_cfg: LossConfig) -> Objective:
    """Parse ``loss_cfg.name`` (``mse``, ``mse+cl``, ``mse+wcl``, ``wcl_scaled``, …) into an Objective.

    Raises:
        ConfigError: an empty, unknown or repeated term, or more than one contrastive term (the message names
            ``loss.name`` and lists the available terms).
    """
    names = [part.strip() for part in loss_cfg.name.split("+")]
    where = f"loss.name={loss_cfg.name!r}"
    available = ", ".join(available_losses())
    for name in names:
        if name in SELF_SUPERVISED:
            raise ConfigError(
                f"{where}: {name} is self-supervised (two views, no scores); use loss.name={name}"
            )
        if not name:
            raise ConfigError(f"{where}: empty term (join terms with '+'); available: {available}")
        if name != MSE and name not in LOSSES:
            raise ConfigError(f"{where}: unknown term {name!r}; available: {available}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: a term is repeated; use each of {available} at most once")
    contrastive = [name for name in names if name != MSE]
    if len(contrastive) > 1:
        raise ConfigError(f"{where}: at most one contrastive term, got {', '.join(contrastive)}")
    terms: list[WeightedTerm] = []
    if MSE in names:
        terms.append(WeightedTerm(MSE, loss_cfg.lam if contrastive else 1.0, _mse_term))
    for name in contrastive:
        weight = 1.0 - loss_cfg.lam if MSE in names else 1.0
        terms.append(WeightedTerm(name, weight, partial(_contrastive_term, LOSSES[name](loss_cfg))))
    return Objective(tuple(terms))


def _mse_term(embeddings: Tensor, pred_std: Tensor, target_std: Tensor) -> Tensor:
    return mse_loss(pred_std, target_std)


def _contrastive_term(
    loss: ContrastiveLoss, embeddings: Tensor, pred_std: Tensor, target_std: Tensor
) -> Tensor:
    return loss(embeddings, target_std)


# ---- self-supervised objectives: two views of each scan, no scores, no regression head ----

SELF_SUPERVISED: dict[str, Callable[[LossConfig], VICRegLoss]] = {
    "vicreg": lambda loss_cfg: VICRegLoss(),  # Bardes et al. 2022, the paper's coefficients
}
"""``loss.name`` → a two-view loss with ``terms(view_a, view_b)`` and ``combine(terms)``."""


class ViewObjective:
    """A self-supervised objective on two views (B, D) of the same B scans; terms are logged unweighted."""

    def __init__(self, name: str, loss: VICRegLoss) -> None:
        self.loss = loss
        self.names = (name,)

    def __call__(self, view_a: Tensor, view_b: Tensor) -> LossOutput:
        terms = self.loss.terms(view_a, view_b)
        return LossOutput(self.loss.combine(terms), {k: v.detach() for k, v in terms.items()})

    def __repr__(self) -> str:
        return repr(self.loss)


def build_view_objective(loss_cfg: LossConfig) -> ViewObjective | None:
    """The self-supervised objective ``loss_cfg.name`` names, or None when it names a label objective."""
    name = loss_cfg.name.strip()
    return ViewObjective(name, SELF_SUPERVISED[name](loss_cfg)) if name in SELF_SUPERVISED else None
