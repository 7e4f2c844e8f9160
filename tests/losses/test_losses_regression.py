"""Eq. 1 (batch-averaged MSE) and the train-split score standardiser."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from learner.errors import CheckpointError
from learner.losses.regression import ScoreStandardiser, mse_loss


def test_mse_matches_float64_recomputation() -> None:
    pred = torch.tensor([0.5, -1.25, 2.0, 0.0], requires_grad=True)
    target = torch.tensor([0.0, -1.0, 3.5, 0.1])
    expected = sum((p - t) ** 2 for p, t in zip(pred.tolist(), target.tolist(), strict=True)) / 4
    loss = mse_loss(pred, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert pred.grad is not None
    np.testing.assert_allclose(pred.grad.numpy(), 2 * (pred.detach() - target).numpy() / 4, rtol=1e-6)


def test_mse_upcasts_half_precision() -> None:
    pred = torch.tensor([300.0, -300.0], dtype=torch.float16)  # 600² overflows float16 (max 65504)
    loss = mse_loss(pred, torch.zeros(2, dtype=torch.float16))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(90000.0)


def test_mse_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(B,\)"):
        mse_loss(torch.zeros(3), torch.zeros(4))


def test_fit_uses_population_statistics() -> None:
    standardiser = ScoreStandardiser.fit([1.0, 2.0, 3.0, 4.0])
    assert standardiser.mean == 2.5
    assert standardiser.std == pytest.approx(math.sqrt(1.25))  # (2.25 + 0.25 + 0.25 + 2.25) / 4


def test_fit_floors_the_std_of_a_constant_split() -> None:
    standardiser = ScoreStandardiser.fit(np.full(5, 28.0), min_std=0.5)
    assert (standardiser.mean, standardiser.std) == (28.0, 0.5)
    assert standardiser.standardise(29.0) == pytest.approx(2.0)


@pytest.mark.parametrize("scores", [[], [1.0, float("inf")]], ids=["empty", "inf"])
def test_fit_rejects_bad_scores(scores: list[float]) -> None:
    with pytest.raises(ValueError, match="standardiser"):
        ScoreStandardiser.fit(scores)


def test_round_trips_for_tensors_arrays_and_floats() -> None:
    standardiser = ScoreStandardiser(mean=250.0, std=80.0)
    tensor = torch.tensor([100.0, 250.0, 490.0], dtype=torch.float64)
    assert standardiser.standardise(tensor).tolist() == pytest.approx([-1.875, 0.0, 3.0])
    torch.testing.assert_close(standardiser.destandardise(standardiser.standardise(tensor)), tensor)
    array = np.array([[12.0, 30.0]])
    np.testing.assert_allclose(standardiser.destandardise(standardiser.standardise(array)), array)
    assert standardiser.destandardise(standardiser.standardise(7.5)) == pytest.approx(7.5)


def test_dict_round_trip_through_json() -> None:
    standardiser = ScoreStandardiser.fit([180.0, 275.0, 430.0])
    restored = ScoreStandardiser.from_dict(json.loads(json.dumps(standardiser.to_dict())))
    assert restored == standardiser


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"mean": 1.0}, "missing key 'std'"),
        ({"mean": 1.0, "std": "wide"}, "'std' is not a number"),
        ({"mean": 1.0, "std": 0.0}, "invalid"),
        ({"mean": 1.0, "std": 1.0, "scale": "sf"}, "unknown keys"),
    ],
    ids=["missing", "not-number", "zero-std", "extra"],
)
def test_from_dict_errors_name_the_key(data: dict[str, object], match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        ScoreStandardiser.from_dict(data)
