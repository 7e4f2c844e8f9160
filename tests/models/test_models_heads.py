"""Regression head θ_M, ScoreRegressor, and the pair classifier heads of Table 4."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learner.models.heads import PairClassifierHead, RegressionHead, ScoreRegressor
from learner.models.tsm_resnet import TSMResNet18


def test_regression_head_is_linear_relu_linear_by_hand() -> None:
    head = RegressionHead(in_dim=2, hidden=2, dropout=0.0)
    head.load_state_dict(
        {
            "mlp.0.weight": torch.tensor([[1.0, -1.0], [2.0, 0.0]]),
            "mlp.0.bias": torch.tensor([0.0, -1.0]),
            "mlp.3.weight": torch.tensor([[1.0, 3.0]]),
            "mlp.3.bias": torch.tensor([0.5]),
        }
    )
    # x1 = (1, 2): hidden (−1, 1) → ReLU (0, 1) → 0·1 + 1·3 + 0.5 = 3.5
    # x2 = (3, 1): hidden (2, 5) → ReLU (2, 5) → 2·1 + 5·3 + 0.5 = 17.5
    prediction = head(torch.tensor([[1.0, 2.0], [3.0, 1.0]]))
    assert prediction.shape == (2,)
    torch.testing.assert_close(prediction, torch.tensor([3.5, 17.5]))


def test_regression_head_dropout_acts_only_in_training() -> None:
    head = RegressionHead(in_dim=8, hidden=64, dropout=0.5)
    x = torch.rand(4, 8, generator=torch.Generator().manual_seed(0))
    head.eval()
    assert torch.equal(head(x), head(x))
    head.train()
    assert not torch.equal(head(x), head.eval()(x))


def test_score_regressor_returns_embeddings_and_head_predictions() -> None:
    encoder = TSMResNet18(in_channels=1, size="tiny")
    model = ScoreRegressor(encoder, RegressionHead(encoder.embed_dim, hidden=16)).eval()
    clips = torch.rand(3, 2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        embeddings, predictions = model(clips)
        torch.testing.assert_close(embeddings, encoder(clips))
        torch.testing.assert_close(predictions, model.head(embeddings))
    assert embeddings.shape == (3, encoder.embed_dim)
    assert predictions.shape == (3,)


@pytest.mark.parametrize(("kind", "hidden_layers"), [("mlp", 1), ("mlp_large", 3)])
def test_pair_classifier_depths_match_table4(kind: str, hidden_layers: int) -> None:
    head = PairClassifierHead(in_dim=10, kind=kind, hidden=7, dropout=0.1)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == hidden_layers + 1
    widths = [(10, 7)] + [(7, 7)] * (hidden_layers - 1) + [(7, 3)]
    assert [(m.in_features, m.out_features) for m in linears] == widths
    assert head(torch.zeros(5, 10)).shape == (5, 3)


def test_unknown_pair_classifier_lists_the_kinds() -> None:
    with pytest.raises(ValueError, match="mlp, mlp_large"):
        PairClassifierHead(in_dim=4, kind="svm", hidden=8)
