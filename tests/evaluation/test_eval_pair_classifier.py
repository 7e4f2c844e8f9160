"""Pair features, the pair classifier's training / early stopping / determinism, and save/load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from learner.config import ClassifierConfig
from learner.errors import CheckpointError, ConfigError, LearnerError
from learner.evaluation.pair_classifier import (
    FittedPairClassifier,
    fit_pair_classifier,
    inverse_frequency_weights,
    pair_features,
)

SCAN_IDS = ["a", "b", "c"]
EMBEDDINGS = np.array([[1.0, 2.0], [4.0, 0.0], [-1.0, 5.0]], dtype=np.float32)
PAIRS = pd.DataFrame({"first_scan_id": ["a", "c"], "second_scan_id": ["b", "a"]})


def test_difference_is_second_minus_first() -> None:
    features = pair_features(PAIRS, EMBEDDINGS, SCAN_IDS, combine="difference")
    np.testing.assert_array_equal(features, [[3.0, -2.0], [2.0, -3.0]])
    assert features.dtype == np.float32


def test_concatenate_is_first_then_second() -> None:
    features = pair_features(PAIRS, EMBEDDINGS, SCAN_IDS, combine="concatenate")
    np.testing.assert_array_equal(features, [[1.0, 2.0, 4.0, 0.0], [-1.0, 5.0, 1.0, 2.0]])


def test_pair_feature_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"'sum'.*concatenate, difference"):
        pair_features(PAIRS, EMBEDDINGS, SCAN_IDS, combine="sum")
    missing = pd.DataFrame({"first_scan_id": ["a", "zz"], "second_scan_id": ["b", "b"]})
    with pytest.raises(LearnerError, match=r"1 pair\(s\).*first_scan_id 'zz' in pair row 1"):
        pair_features(missing, EMBEDDINGS, SCAN_IDS)
    with pytest.raises(LearnerError, match="'b' more than once"):
        pair_features(PAIRS, EMBEDDINGS, ["a", "b", "b"])


def _toy_problem(seed: int, n_scans: int, n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Difference features whose label is the sign of a coordinate difference (|Δ| < 0.5 → stable)."""
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n_scans, 6)).astype(np.float32)
    ids = [f"s{i}" for i in range(n_scans)]
    first, second = rng.integers(0, n_scans, size=(2, 4 * n_pairs))
    delta = embeddings[second, 0] - embeddings[first, 0]
    keep = np.flatnonzero((first != second) & (np.abs(np.abs(delta) - 0.5) > 0.15))[:n_pairs]
    pairs = pd.DataFrame(
        {"first_scan_id": [ids[i] for i in first[keep]], "second_scan_id": [ids[i] for i in second[keep]]}
    )
    labels = np.where(delta[keep] > 0.5, 2, np.where(delta[keep] < -0.5, 0, 1))
    return pair_features(pairs, embeddings, ids, combine="difference"), labels


@pytest.mark.parametrize("kind", ["mlp", "mlp_large"])
def test_both_heads_learn_a_separable_problem(kind: str) -> None:
    train_X, train_y = _toy_problem(0, n_scans=80, n_pairs=400)
    val_X, val_y = _toy_problem(1, n_scans=30, n_pairs=100)
    test_X, test_y = _toy_problem(2, n_scans=30, n_pairs=150)
    cfg = ClassifierConfig(head=kind, hidden=32, dropout=0.0, lr=1e-2, batch_size=32, epochs=60, patience=15)
    fitted = fit_pair_classifier(train_X, train_y, val_X, val_y, cfg, seed=0)
    assert np.mean(fitted.predict(test_X) == test_y) > 0.9
    assert set(np.unique(test_y)) == {0, 1, 2}  # the problem really has three classes


def _noisy_problem() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(4)
    features = rng.normal(size=(140, 10)).astype(np.float32)
    labels = rng.integers(0, 3, 140)  # pure noise: the head can only overfit
    return features[:80], labels[:80], features[80:], labels[80:]


def test_early_stopping_restores_the_best_epoch() -> None:
    train_X, train_y, val_X, val_y = _noisy_problem()
    cfg = ClassifierConfig(hidden=64, dropout=0.0, lr=1e-2, batch_size=16, epochs=200, patience=5)
    fitted = fit_pair_classifier(train_X, train_y, val_X, val_y, cfg, seed=0)
    val_losses = [entry["val_loss"] for entry in fitted.history]
    assert len(val_losses) < cfg.epochs  # it stopped early...
    assert len(val_losses) == fitted.best_epoch + cfg.patience + 1  # ...patience epochs after the best
    assert fitted.best_epoch == int(np.argmin(val_losses))
    probabilities = fitted.predict_proba(val_X).astype(np.float64)
    restored_loss = -np.mean(np.log(probabilities[np.arange(len(val_y)), val_y]))
    assert restored_loss == pytest.approx(val_losses[fitted.best_epoch], rel=1e-5)
    assert restored_loss < val_losses[-1]


def test_class_weights_are_inverse_frequency_and_weight_the_val_loss() -> None:
    np.testing.assert_allclose(inverse_frequency_weights(np.array([0, 0, 0, 1])), [4 / 9, 4 / 3, 4 / 3])
    train_X, train_y, val_X, val_y = _noisy_problem()
    train_y = np.where(train_y == 2, 1, train_y)  # classes 0 and 1 only, unbalanced toward 1
    cfg = ClassifierConfig(hidden=16, lr=1e-2, epochs=3, patience=10, class_weights=True)
    fitted = fit_pair_classifier(train_X, train_y, val_X, val_y, cfg, seed=0)
    weights = inverse_frequency_weights(train_y)
    np.testing.assert_allclose(fitted.meta.class_weights, weights)
    probabilities = fitted.predict_proba(val_X).astype(np.float64)
    w = weights[val_y].astype(np.float64)
    weighted_loss = -np.sum(w * np.log(probabilities[np.arange(len(val_y)), val_y])) / w.sum()
    assert weighted_loss == pytest.approx(fitted.history[fitted.best_epoch]["val_loss"], rel=1e-5)


def test_training_is_deterministic_and_leaves_global_rng_alone() -> None:
    train_X, train_y, val_X, val_y = _noisy_problem()
    cfg = ClassifierConfig(hidden=16, dropout=0.3, lr=1e-2, epochs=4, patience=10)
    state = torch.random.get_rng_state()
    first = fit_pair_classifier(train_X, train_y, val_X, val_y, cfg, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = fit_pair_classifier(train_X, train_y, val_X, val_y, cfg, seed=7)
    other = fit_pair_classifier(train_X, train_y, val_X, val_y, cfg, seed=8)
    assert first.history == second.history
    np.testing.assert_array_equal(first.predict_proba(val_X), second.predict_proba(val_X))
    assert not np.array_equal(first.predict_proba(val_X), other.predict_proba(val_X))


def test_save_load_round_trip(tmp_path) -> None:
    train_X, train_y, val_X, val_y = _noisy_problem()
    cfg = ClassifierConfig(head="mlp_large", combine="concatenate", hidden=16, epochs=3)
    fitted = fit_pair_classifier(train_X, train_y, val_X, val_y, cfg, seed=1, encoder_fingerprint="enc-123")
    fitted.save(tmp_path / "clf")
    loaded = FittedPairClassifier.load(tmp_path / "clf", encoder_fingerprint="enc-123")
    np.testing.assert_array_equal(loaded.predict_proba(val_X), fitted.predict_proba(val_X))
    np.testing.assert_array_equal(loaded.scaler.mean, fitted.scaler.mean)
    assert loaded.meta == fitted.meta
    assert loaded.meta.kind == "mlp_large"
    assert loaded.meta.combine == "concatenate"
    assert (loaded.history, loaded.best_epoch) == (fitted.history, fitted.best_epoch)
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == [
        "classifier.json",
        "classifier.safetensors",
    ]

    with pytest.raises(CheckpointError, match="encoder 'enc-123', not on 'other'"):
        FittedPairClassifier.load(tmp_path / "clf", encoder_fingerprint="other")
    with pytest.raises(CheckpointError, match="not found"):
        FittedPairClassifier.load(tmp_path / "nothing")
    record = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    record["meta"]["hidden"] = 17
    (tmp_path / "clf" / "classifier.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="do not fit the head"):
        FittedPairClassifier.load(tmp_path / "clf")
