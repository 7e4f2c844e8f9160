"""The pretraining objective: the ``loss`` config section as λ·MSE + (1 − λ)·contrastive (Section 2.3.1).

This is the only losses module that reads a :class:`~learner.config.LossConfig`; the maths modules take
plain arguments (``temperature``, ``floor``, ``eps``, ``weight_max``, ``sigma``, ``edges``).

``loss.name`` joins terms with ``+``:

* ``mse`` — Eq. 1 alone, weight 1 (the paper's MSE baseline);
* ``mse+<c>`` — λ·MSE + (1 − λ)·c with λ = ``loss.lam`` (paper: 0.9), c one of :data:`LOSSES`:
  ``cl`` Eq. 2, ``wcl`` Eq. 3 literally, ``wcl_scaled`` the repaired Eq. 3
  (:mod:`learner.losses.contrastive`); ``rnc`` Rank-N-Contrast (:mod:`learner.losses.rank_n_contrast`);
  ``yaware`` y-Aware InfoNCE and ``supcon_bins`` SupCon over the scale's classes
  (:mod:`learner.losses.infonce`);
* ``<c>`` — the contrastive term alone, weight 1 (the regression head then gets no gradient).

Terms may appear in any order, each at most once, with at most one contrastive term. A new contrastive
term is an entry of :data:`LOSSES`: a factory ``(LossConfig, ScoreLabels) → (embeddings (B, D),
scores_std (B,)[, ref_embeddings (N, D), ref_scores (N,)]) → scalar``. Terms with a temperature run at
their authors' τ and feature similarity unless the config sets one (:data:`AUTHORS_SETTINGS`).
:class:`ScoreLabels` carries what a term may need to know about the scores beyond the config (the train
standardisation and the scale's class edges, in score units); the registry translates it into
standardised units for the maths classes.

A self-supervised objective (:data:`SELF_SUPERVISED`: ``vicreg``) stands alone in ``loss.name``: it sees two
views of each scan and no scores, so it is a :class:`ViewObjective` built by :func:`build_view_objective`
(:func:`build_objective` refuses it with that hint).

Example::

    objective = build_objective(cfg.loss, ScoreLabels(standardiser, scale.class_edges()))  # "mse+wcl"
    out = objective(embeddings, pred_std, target_std)  # optionally + memory embeddings, memory scores
    out.total.backward(); log(out.terms)              # {"mse": …, "wcl": …}, detached
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from learner.config import FeatureSimilarity, LossConfig, Reduction
from learner.data.scales import ClassEdges
from learner.errors import ConfigError
from learner.losses.contrastive import (
    LiteralWeighting,
    PairwiseContrastiveLoss,
    ScaledWeighting,
    Unweighted,
    Weighting,
)
from learner.losses.infonce import SupConBinsLoss, YAwareInfoNCELoss
from learner.losses.rank_n_contrast import RankNContrastLoss
from learner.losses.regression import ScoreStandardiser, mse_loss
from learner.losses.selection import select_pairs, trusted_select_pairs
from learner.losses.self_supervised import VICRegLoss
from learner.losses.similarity import ExpCosine, ShiftedCosine, SimilarityMapping
from learner.losses.within_patient import WithinPatientLoss

MSE = "mse"
WITHIN_PATIENT = "within_patient"
"""The within-patient term's key in ``Objective.weights`` and ``LossOutput.terms``."""


class ContrastiveLoss(Protocol):
    """(embeddings (B, D), scores_std (B,)[, ref_embeddings (N, D), ref_scores (N,)]) → scalar.

    The references are passed only when a cross-batch memory is on (``loss.memory``)."""

    def __call__(self, embeddings: Tensor, scores_std: Tensor, /, *refs: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class ScoreLabels:
    """What a term may need to know about the scores, in SCORE units (the losses see standardised ones).

    Attributes:
        standardiser: the train split's standardisation (identity by default).
        class_edges: the score scale's class edges (clinical bins, or threshold bands), ascending;
            ``scale.class_edges()`` is a :class:`~learner.data.scales.ClassEdges` that carries the side of
            each edge (an edge value in the lower class unless it is an upper edge, e.g. S/F 180), and
            ``supcon_bins`` keeps it, so its classes are the scale's bins; a plain tuple puts every edge value
            in the lower class. None when unknown (``supcon_bins`` then refuses to build).
        checked_finite: every score the terms will see was checked finite where it was loaded (the
            device-data path), so the pair selection skips its per-batch check, a host sync on a GPU.
    """

    standardiser: ScoreStandardiser = field(default_factory=lambda: ScoreStandardiser(0.0, 1.0))
    class_edges: tuple[float, ...] | None = None
    checked_finite: bool = False

    def standardised_edges(self) -> ClassEdges | None:
        """``class_edges`` in standardised units, (e − mean) / std, with their sides (std > 0 keeps them)."""
        if self.class_edges is None:
            return None
        upper = self.class_edges.upper if isinstance(self.class_edges, ClassEdges) else ()
        return ClassEdges((float(self.standardiser.standardise(edge)) for edge in self.class_edges), upper)


ContrastiveFactory = Callable[[LossConfig, ScoreLabels], ContrastiveLoss]

AUTHORS_SETTINGS: dict[str, tuple[float, FeatureSimilarity]] = {
    "exp_cosine": (1.0, "cosine"),  # CL / wCL with exp(cos / τ): the paper gives no τ; 1 keeps exp(cos)
    "rnc": (2.0, "neg_l2"),  # Zha et al. 2023, Rank-N-Contrast: −‖u_i − u_j‖₂ / 2 (their code's default)
    "yaware": (0.1, "cosine"),  # Dufumier et al. 2021, y-Aware InfoNCE: cosine / 0.1
    "supcon_bins": (0.1, "cosine"),  # Khosla et al. 2020, SupCon: cosine / 0.1 (0.07 in their code)
}
"""The temperature τ and the feature similarity each τ-using term runs at when ``loss.temperature`` /
``loss.feature_similarity`` are unset: its authors' published settings (source in each comment)."""


def temperature_of(loss_cfg: LossConfig, term: str) -> float:
    """``loss.temperature`` if set, else the authors' τ of ``term`` (:data:`AUTHORS_SETTINGS`)."""
    return loss_cfg.temperature if loss_cfg.temperature is not None else AUTHORS_SETTINGS[term][0]


def feature_similarity_of(loss_cfg: LossConfig, term: str) -> FeatureSimilarity:
    """``loss.feature_similarity`` if set, else the authors' choice for ``term``."""
    chosen = loss_cfg.feature_similarity
    return chosen if chosen is not None else AUTHORS_SETTINGS[term][1]


SIMILARITIES: dict[str, Callable[[LossConfig], SimilarityMapping]] = {
    "shifted_cosine": lambda loss_cfg: ShiftedCosine(floor=loss_cfg.sim_floor),
    "exp_cosine": lambda loss_cfg: ExpCosine(temperature=temperature_of(loss_cfg, "exp_cosine")),
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
    """A factory of the :class:`PairwiseContrastiveLoss` with ``weighting`` and the config's similarity
    (Algorithm 1's pair selection, without its per-batch finiteness check on ``checked_finite`` labels)."""
    return lambda loss_cfg, labels: PairwiseContrastiveLoss(
        weighting(loss_cfg),
        similarity_from_config(loss_cfg),
        selector=trusted_select_pairs if labels.checked_finite else select_pairs,
        reduction=loss_cfg.reduction,
    )


def _supcon_bins(loss_cfg: LossConfig, labels: ScoreLabels) -> SupConBinsLoss:
    edges = labels.standardised_edges()
    if edges is None:
        raise ConfigError(
            "loss term 'supcon_bins' needs the score scale's class edges: "
            "build_objective(loss_cfg, ScoreLabels(standardiser, scale.class_edges()))"
        )
    return SupConBinsLoss(
        edges,
        temperature_of(loss_cfg, "supcon_bins"),
        feature_similarity_of(loss_cfg, "supcon_bins"),
        upper=edges.upper,
    )


LOSSES: dict[str, ContrastiveFactory] = {
    "cl": _pairwise(lambda cfg: Unweighted()),
    "wcl": _pairwise(lambda cfg: LiteralWeighting(eps=cfg.eps, weight_max=cfg.weight_max)),
    "wcl_scaled": _pairwise(lambda cfg: ScaledWeighting(eps=cfg.eps, weight_max=cfg.weight_max)),
    "rnc": lambda cfg, labels: RankNContrastLoss(
        temperature_of(cfg, "rnc"), feature_similarity_of(cfg, "rnc")
    ),
    "yaware": lambda cfg, labels: YAwareInfoNCELoss(
        cfg.kernel_sigma, temperature_of(cfg, "yaware"), feature_similarity_of(cfg, "yaware")
    ),
    "supcon_bins": _supcon_bins,
}
"""Contrastive term name → its factory ``(LossConfig, ScoreLabels) → ContrastiveLoss``; a new term joins
``loss.name`` by an entry here."""

SUMMABLE: tuple[str, ...] = (MSE, "cl", "wcl", "wcl_scaled")
"""The terms that ``loss.reduction=sum`` applies to: the paper's Eqs. 1–3, which it writes as sums."""


LOSS_LABELS: dict[str, str] = {"mse": "MSE", "cl": "CL", "wcl": "wCL", "wcl_scaled": "wCL (scaled)"}
"""A term's name → its spelling in the paper (tables, figures); other terms are shown as they are named."""


def loss_label(name: str) -> str:
    """``mse+wcl`` → ``MSE + wCL`` (the paper's spelling; unknown terms are shown as they are)."""
    return " + ".join(LOSS_LABELS.get(part, part) for part in name.split("+"))


def available_losses() -> list[str]:
    """Every term accepted in ``loss.name``: ``mse`` and the registered contrastive terms."""
    return sorted([MSE, *LOSSES])


@dataclass(frozen=True)
class LossOutput:
    """``total`` (scalar, with gradient) and each term's unweighted value (scalars, detached, for logging);
    ``weighted``: each term times its weight, with gradient (they sum to ``total``), for measuring how much
    of the update each term drives."""

    total: Tensor
    terms: dict[str, Tensor]
    weighted: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Objective:
    """λ·MSE + (1 − λ)·C (Section 2.3.1, Eqs. 1–3): ``weights`` maps each term of ``loss.name`` to its
    weight, MSE first (``mse`` alone: 1; a contrastive term alone: 1); ``contrastive`` computes C.

    ``reduction`` ``mean`` averages Eq. 1 over the batch and Eqs. 2–3 over anchors and pairs, so the loss
    scale and λ's balance do not change with B; ``sum`` is the paper's Eqs. 1–3 literally.

    ``within`` (beyond the paper, ``loss.within_patient`` = μ > 0) adds μ·W, W the within-patient term on
    the predictions (:mod:`learner.losses.within_patient`), weight key :data:`WITHIN_PATIENT`; it needs the
    batch members' ``groups`` and ``visits``.
    """

    weights: dict[str, float]
    contrastive: ContrastiveLoss | None = None
    reduction: Reduction = "mean"
    within: WithinPatientLoss | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The term names in evaluation order, MSE first (the keys of ``LossOutput.terms``)."""
        return tuple(self.weights)

    def __call__(
        self,
        embeddings: Tensor,
        pred_std: Tensor,
        target_std: Tensor,
        ref_embeddings: Tensor | None = None,
        ref_scores: Tensor | None = None,
        *,
        groups: Tensor | None = None,
        visits: Tensor | None = None,
    ) -> LossOutput:
        """Evaluate every term on one (global) batch.

        Args:
            embeddings: encoder outputs U, shape (B, D).
            pred_std: head predictions Y in standardised units, shape (B,).
            target_std: standardised ground-truth scores, shape (B,).
            ref_embeddings: a cross-batch memory's embeddings (N, D), extra contrastive candidates
                (detached), or None.
            ref_scores: their standardised scores (N,), or None.
            groups, visits: (B,) integer track (patient and site) and visit codes of the members; needed by
                the within-patient term only.
        """
        if (ref_embeddings is None) != (ref_scores is None):
            raise ValueError("pass ref_embeddings and ref_scores together, or neither")
        values: dict[str, Tensor] = {}
        for name in self.weights:
            if name == MSE:
                values[name] = mse_loss(pred_std, target_std, reduction=self.reduction)
            elif name == WITHIN_PATIENT and self.within is not None:
                if groups is None or visits is None:
                    raise ValueError("the within-patient term needs the members' groups and visits")
                values[name] = self.within(pred_std, target_std, groups, visits)
            elif self.contrastive is not None:
                refs = () if ref_embeddings is None or ref_scores is None else (ref_embeddings, ref_scores)
                values[name] = self.contrastive(embeddings, target_std, *refs)
        weighted = {name: weight * values[name] for name, weight in self.weights.items()}
        total = torch.stack(list(weighted.values())).sum()
        return LossOutput(total, {name: value.detach() for name, value in values.items()}, weighted)

    def __repr__(self) -> str:
        return " + ".join(f"{weight:g}·{name}" for name, weight in self.weights.items())


def parse_loss_name(name: str) -> tuple[str, ...]:
    """The terms of a ``loss.name`` (``mse``, ``mse+cl``, ``rnc+mse``, …), validated, in the written order.

    Raises:
        ConfigError: an empty, unknown or repeated term, or more than one contrastive term (the message names
            ``loss.name`` and lists the available terms).
    """
    names = [part.strip() for part in name.split("+")]
    where = f"loss.name={name!r}"
    available = ", ".join(available_losses())
    for term in names:
        if term in SELF_SUPERVISED:
            raise ConfigError(
                f"{where}: {term} is self-supervised (two views, no scores); use loss.name={term}"
            )
        if not term:
            raise ConfigError(f"{where}: empty term (join terms with '+'); available: {available}")
        if term != MSE and term not in LOSSES:
            raise ConfigError(f"{where}: unknown term {term!r}; available: {available}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: a term is repeated; use each of {available} at most once")
    contrastive = [term for term in names if term != MSE]
    if len(contrastive) > 1:
        raise ConfigError(f"{where}: at most one contrastive term, got {', '.join(contrastive)}")
    return tuple(names)


def build_objective(loss_cfg: LossConfig, labels: ScoreLabels | None = None) -> Objective:
    """Parse ``loss_cfg.name`` (``mse``, ``mse+cl``, ``mse+wcl``, ``rnc``, …) into an Objective.

    Args:
        loss_cfg: the ``loss`` section.
        labels: the train standardisation and the scale's class edges (score units); needed by
            ``supcon_bins`` only.

    Raises:
        ConfigError: a bad ``loss.name`` (see :func:`parse_loss_name`), or ``supcon_bins`` without class
            edges.
    """
    names = parse_loss_name(loss_cfg.name)
    contrastive = [name for name in names if name != MSE]
    if loss_cfg.reduction == "sum" and any(name not in SUMMABLE for name in names):
        raise ConfigError(
            f"loss.reduction=sum is the paper's Eqs. 1–3 as sums, for {', '.join(SUMMABLE)}; "
            f"{', '.join(n for n in names if n not in SUMMABLE)} is its authors' mean "
            "(use loss.reduction=mean)"
        )
    weights: dict[str, float] = {}
    if MSE in names:
        weights[MSE] = loss_cfg.lam if contrastive else 1.0
    for name in contrastive:
        weights[name] = 1.0 - loss_cfg.lam if MSE in names else 1.0
    term = LOSSES[contrastive[0]](loss_cfg, labels or ScoreLabels()) if contrastive else None
    within = None
    if loss_cfg.within_patient > 0:
        if MSE not in names:
            raise ConfigError(
                f"loss.within_patient acts on the regression head, which loss.name={loss_cfg.name!r} "
                "does not train; add mse to loss.name"
            )
        weights[WITHIN_PATIENT] = loss_cfg.within_patient
        within = WithinPatientLoss(loss_cfg.within_patient_term)
    return Objective(weights, term, loss_cfg.reduction, within)


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
