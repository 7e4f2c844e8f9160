"""Heads on an encoder: the score regressor θ_M (Alg. 1) and the health-change classifier (Section 2.4).

Models never compute their own loss: :class:`ScoreRegressor` returns the embeddings (for the contrastive
term) and the score predictions (for the MSE term) and the loss modules combine them.
"""

from __future__ import annotations

from torch import Tensor, nn

from learner.models.encoder import Encoder

CLASSIFIER_DEPTHS: dict[str, int] = {"mlp": 1, "mlp_large": 3}
"""Hidden layers of the pair classifier per kind: Table 4's "MLP" and "MLP Large" (3 hidden layers)."""


def mlp(in_dim: int, hidden: int, out_dim: int, *, hidden_layers: int, dropout: float) -> nn.Sequential:
    """``hidden_layers`` × (Linear → ReLU → Dropout), then Linear: (N, in_dim) → (N, out_dim)."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class RegressionHead(nn.Module):
    """θ_M in Alg. 1: embedding (N, in_dim) → health-score prediction (N,), Linear → ReLU → Linear.

    Args:
        in_dim: D, the encoder's ``embed_dim``.
        hidden: width of the hidden layer (``model.head_hidden``).
        dropout: dropout after the hidden activation (``model.dropout``).
    """

    def __init__(self, in_dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.mlp = mlp(in_dim, hidden, 1, hidden_layers=1, dropout=dropout)

    def forward(self, embeddings: Tensor) -> Tensor:
        """(N, in_dim) → (N,)."""
        scores: Tensor = self.mlp(embeddings)
        return scores.squeeze(-1)


class ScoreRegressor(nn.Module):
    """Encoder θ_V + regression head θ_M, the network Alg. 1 pretrains.

    Args:
        encoder: clips (N, T, C, H, W) → embeddings (N, D).
        head: embeddings (N, D) → predictions (N,).
    """

    def __init__(self, encoder: Encoder, head: RegressionHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, clips: Tensor) -> tuple[Tensor, Tensor]:
        """Clips (N, T, C, H, W) → (embeddings U (N, D), predictions Y = θ_M(U) (N,))."""
        embeddings = self.encoder(clips)
        return embeddings, self.head(embeddings)


class PairClassifierHead(nn.Module):
    """The three-way health-change classifier on a pair feature (Section 2.4, Table 4).

    Args:
        in_dim: the pair feature's width (D for the difference u_{t+1} − u_t, 2·D for concatenation).
        kind: ``mlp`` (one hidden layer) or ``mlp_large`` (three hidden layers).
        hidden: width of every hidden layer (``classifier.hidden``).
        dropout: dropout after every hidden activation (``classifier.dropout``).
        num_classes: 3 (deteriorated / stable / improved).

    Raises:
        ValueError: unknown ``kind`` (the message lists the available ones).
    """

    def __init__(
        self, in_dim: int, kind: str, hidden: int, dropout: float = 0.0, num_classes: int = 3
    ) -> None:
        super().__init__()
        if kind not in CLASSIFIER_DEPTHS:
            available = ", ".join(CLASSIFIER_DEPTHS)
            raise ValueError(f"unknown pair classifier head {kind!r}; available: {available}")
        self.mlp = mlp(in_dim, hidden, num_classes, hidden_layers=CLASSIFIER_DEPTHS[kind], dropout=dropout)

    def forward(self, features: Tensor) -> Tensor:
        """Pair features (N, in_dim) → logits (N, num_classes)."""
        logits: Tensor = self.mlp(features)
        return logits
