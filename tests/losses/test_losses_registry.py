"""``loss.name`` parsing into λ·MSE + (1 − λ)·contrastive, its errors, a new term, the reduction and the
authors' temperatures."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from learner.config import LossConfig, load_config
from learner.errors import ConfigError
from learner.losses import registry
from learner.losses.contrastive import LiteralWeighting, PairwiseContrastiveLoss, ScaledWeighting, Unweighted
from learner.losses.infonce import SupConBinsLoss, YAwareInfoNCELoss
from learner.losses.rank_n_contrast import RankNContrastLoss
from learner.losses.registry import available_losses, build_objective
from learner.losses.regression import ScoreStandardiser
from learner.losses.similarity import ExpCosine, ShiftedCosine


def batch() -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(6, 4, generator=generator, requires_grad=True)
    pred = torch.randn(6, generator=generator, requires_grad=True)
    target = torch.tensor([-1.0, -0.5, 0.0, 0.2, 1.0, 1.5])
    return embeddings, pred, target


def plain_mse(pred: Tensor, target: Tensor) -> float:
    return sum((p - t) ** 2 for p, t in zip(pred.tolist(), target.tolist(), strict=True)) / len(target)


def test_available_losses() -> None:
    assert available_losses() == ["cl", "mse", "rnc", "supcon_bins", "wcl", "wcl_scaled", "yaware"]


def test_mse_alone_has_weight_one() -> None:
    embeddings, pred, target = batch()
    objective = build_objective(LossConfig(name="mse", lam=0.3))
    out = objective(embeddings, pred, target)
    assert objective.names == ("mse",)
    assert out.total.item() == pytest.approx(plain_mse(pred, target), rel=1e-6)
    assert set(out.terms) == {"mse"}


@pytest.mark.parametrize(
    ("name", "weighting"),
    [("mse+cl", Unweighted()), ("wcl+mse", LiteralWeighting()), (" mse + wcl_scaled ", ScaledWeighting())],
)
def test_mse_plus_contrastive_is_lambda_weighted(name: str, weighting: object) -> None:
    embeddings, pred, target = batch()
    objective = build_objective(LossConfig(name=name, lam=0.7))
    out = objective(embeddings, pred, target)
    contrastive = PairwiseContrastiveLoss(weighting)(embeddings, target).item()  # type: ignore[arg-type]
    expected = 0.7 * plain_mse(pred, target) + 0.3 * contrastive
    assert objective.names[0] == "mse"
    assert len(objective.names) == 2
    assert out.total.item() == pytest.approx(expected, rel=1e-6)
    assert out.terms[objective.names[1]].item() == pytest.approx(contrastive, rel=1e-6)
    assert all(not value.requires_grad for value in out.terms.values())
    out.total.backward()
    assert embeddings.grad is not None
    assert pred.grad is not None
    assert embeddings.grad.abs().sum().item() > 0


def test_contrastive_alone_and_config_options_reach_the_loss() -> None:
    embeddings, pred, target = batch()
    cfg = LossConfig(name="wcl", similarity="exp_cosine", temperature=0.5, eps=0.3, weight_max=4.0)
    out = build_objective(cfg)(embeddings, pred, target)
    expected = PairwiseContrastiveLoss(LiteralWeighting(eps=0.3, weight_max=4.0), ExpCosine(0.5))
    assert out.total.item() == pytest.approx(expected(embeddings, target).item(), rel=1e-6)
    assert set(out.terms) == {"wcl"}
    out.total.backward()
    assert pred.grad is None  # the head is not part of a contrastive-only objective


def test_default_config_is_the_papers_objective() -> None:
    embeddings, pred, target = batch()
    objective = build_objective(load_config().loss)
    assert repr(objective) == "0.9·mse + 0.1·wcl"
    expected = (
        0.9 * plain_mse(pred, target)
        + 0.1
        * PairwiseContrastiveLoss(LiteralWeighting(eps=0.1, weight_max=10.0), ShiftedCosine(1e-4))(
            embeddings, target
        ).item()
    )
    assert objective(embeddings, pred, target).total.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        (
            "mse+foo",
            r"loss\.name='mse\+foo': unknown term 'foo'; "
            r"available: cl, mse, rnc, supcon_bins, wcl, wcl_scaled, yaware",
        ),
        ("", "empty term"),
        ("mse+", "empty term"),
        ("mse+mse", "repeated"),
        ("cl+wcl", "at most one contrastive term, got cl, wcl"),
        ("MSE", "unknown term 'MSE'"),
    ],
)
def test_bad_names_are_config_errors(name: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_objective(LossConfig(name=name))


def test_a_new_term_joins_by_an_entry_in_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    def mean_norm(loss_cfg: LossConfig, labels: registry.ScoreLabels) -> registry.ContrastiveLoss:
        return lambda embeddings, scores: embeddings.norm(dim=1).mean() * loss_cfg.eps

    monkeypatch.setitem(registry.LOSSES, "norm", mean_norm)
    embeddings, pred, target = batch()
    out = build_objective(LossConfig(name="mse+norm", lam=0.5, eps=2.0))(embeddings, pred, target)
    expected = 0.5 * plain_mse(pred, target) + 0.5 * 2.0 * embeddings.norm(dim=1).mean().item()
    assert out.total.item() == pytest.approx(expected, rel=1e-6)
    assert "norm" in available_losses()


def test_sum_reduction_is_eqs_1_to_3_as_printed() -> None:
    embeddings, pred, target = batch()
    objective = build_objective(LossConfig(name="mse+cl", lam=0.9, reduction="sum"))
    literal_cl = PairwiseContrastiveLoss(Unweighted(), reduction="sum")(embeddings, target).item()
    squared = plain_mse(pred, target) * len(target)  # Eq. 1: Σ_i, not the mean
    out = objective(embeddings, pred, target)
    assert out.total.item() == pytest.approx(0.9 * squared + 0.1 * literal_cl, rel=1e-6)
    assert out.terms["mse"].item() == pytest.approx(squared, rel=1e-6)
    with pytest.raises(ConfigError, match=r"loss\.reduction=sum .* rnc is its authors' mean"):
        build_objective(LossConfig(name="mse+rnc", reduction="sum"))


@pytest.mark.parametrize(
    ("name", "temperature", "similarity"),
    [("rnc", 2.0, "neg_l2"), ("yaware", 0.1, "cosine"), ("supcon_bins", 0.1, "cosine")],
)
def test_unset_temperature_is_the_authors(name: str, temperature: float, similarity: str) -> None:
    term = build_objective(LossConfig(name=f"mse+{name}"), LABELS).contrastive
    assert term is not None
    assert (term.temperature, term.similarity) == (temperature, similarity)  # type: ignore[attr-defined]
    chosen = build_objective(
        LossConfig(name=f"mse+{name}", temperature=0.5, feature_similarity="neg_l2"), LABELS
    )
    assert (chosen.contrastive.temperature, chosen.contrastive.similarity) == (0.5, "neg_l2")  # type: ignore[union-attr]
    exp = build_objective(LossConfig(name="mse+cl", similarity="exp_cosine")).contrastive
    assert exp.similarity.temperature == 1.0  # type: ignore[union-attr]


LABELS = registry.ScoreLabels(ScoreStandardiser(mean=10.0, std=2.0), class_edges=(9.0, 10.0, 12.0))
"""Edges 9, 10, 12 in score units → −0.5, 0, 1 in standardised units."""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("rnc", lambda: RankNContrastLoss(temperature=0.5, similarity="neg_l2")),
        ("yaware", lambda: YAwareInfoNCELoss(sigma=0.3, temperature=0.5, similarity="neg_l2")),
        ("supcon_bins", lambda: SupConBinsLoss((-0.5, 0.0, 1.0), temperature=0.5, similarity="neg_l2")),
    ],
)
def test_label_aware_terms_combine_with_mse_by_lambda(name: str, expected: Callable[[], nn.Module]) -> None:
    embeddings, pred, target = batch()
    cfg = LossConfig(
        name=f"mse+{name}", lam=0.7, temperature=0.5, kernel_sigma=0.3, feature_similarity="neg_l2"
    )
    objective = build_objective(cfg, LABELS)
    contrastive = expected()(embeddings, target).item()
    out = objective(embeddings, pred, target)
    assert out.total.item() == pytest.approx(0.7 * plain_mse(pred, target) + 0.3 * contrastive, rel=1e-6)
    assert out.terms[name].item() == pytest.approx(contrastive, rel=1e-6)
    ref_u, ref_s = torch.randn(5, 4), torch.randn(5)
    with_memory = objective(embeddings, pred, target, ref_u, ref_s)
    assert with_memory.terms[name].item() == pytest.approx(
        expected()(embeddings, target, ref_u, ref_s).item(), rel=1e-6
    )
    with_memory.total.backward()
    assert embeddings.grad is not None
    assert torch.isfinite(embeddings.grad).all()


def test_score_labels_standardise_the_class_edges() -> None:
    assert LABELS.standardised_edges() == (-0.5, 0.0, 1.0)
    assert registry.ScoreLabels().standardised_edges() is None


def test_supcon_bins_needs_class_edges_but_its_name_parses_without() -> None:
    assert registry.parse_loss_name("mse+supcon_bins") == ("mse", "supcon_bins")
    with pytest.raises(ConfigError, match="supcon_bins' needs the score scale's class edges"):
        build_objective(LossConfig(name="mse+supcon_bins"))


def test_objective_refuses_half_a_memory() -> None:
    embeddings, pred, target = batch()
    with pytest.raises(ValueError, match="together"):
        build_objective(LossConfig(name="mse+cl"))(embeddings, pred, target, torch.zeros(2, 4))
