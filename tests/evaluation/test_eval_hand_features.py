"""The ceiling study's hand features and the Euclidean pair distance, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from learner.evaluation.embedding_analysis import distance_vs_change, euclidean_distances_for_pairs
from learner.evaluation.hand_features import (
    HAND_FEATURES,
    column_variance,
    depth_profile,
    lower_half_brightness,
    mean_frame,
)

# one clip (M = 1) of two 2×2 grey frames (T = 2, C = 1):
#   frame 0 = [[0, 1],      frame 1 = [[4, 9],
#              [2, 3]]                 [6, 1]]
FRAMES = [[[0.0, 1.0], [2.0, 3.0]], [[4.0, 9.0], [6.0, 1.0]]]
CLIP = torch.tensor(FRAMES).reshape(1, 2, 1, 2, 2)


def test_each_feature_matches_the_hand_computed_value() -> None:
    # mean frame [[2, 5], [4, 2]], flattened row by row
    assert mean_frame(CLIP).tolist() == [[2.0, 5.0, 4.0, 2.0]]
    # row means of the mean frame: (2 + 5) / 2, (4 + 2) / 2
    assert depth_profile(CLIP).tolist() == [[3.5, 3.0]]
    # the lower row (row 1) of both frames: (2 + 3 + 6 + 1) / 4
    assert lower_half_brightness(CLIP).tolist() == [[3.0]]
    # column means: frame 0 (1, 2) → variance 0.25; frame 1 (5, 5) → 0; averaged over frames
    assert column_variance(CLIP).tolist() == [[0.125]]


def test_channels_are_averaged_and_clips_kept_apart() -> None:
    rgb = CLIP.repeat(1, 1, 3, 1, 1)  # a grey clip repeated for RGB weights
    batch = torch.cat([rgb, 2 * rgb])  # (2, T, 3, H, W)
    for name, feature in HAND_FEATURES.items():
        grey = feature(CLIP)
        got = feature(batch)
        assert got.shape == (2, grey.shape[1]), name
        torch.testing.assert_close(got[0], grey[0])
    # doubling the pixels doubles every mean and quadruples the variance
    assert lower_half_brightness(batch)[1].item() == 6.0
    assert column_variance(batch)[1].item() == 0.5


def test_odd_height_counts_the_middle_row_as_lower() -> None:
    clip = torch.arange(3.0).reshape(1, 1, 1, 3, 1)  # rows 0, 1, 2
    assert lower_half_brightness(clip).tolist() == [[1.5]]


def test_a_clip_of_the_wrong_rank_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(M, T, C, H, W\)"):
        mean_frame(torch.zeros(2, 3, 4, 4))


def test_euclidean_distance_of_a_scalar_feature_is_its_absolute_change() -> None:
    pairs = pd.DataFrame(
        {
            "first_scan_id": ["a", "b", "a"],
            "second_scan_id": ["b", "c", "c"],
            "first_patient_id": ["p", "p", "q"],
        }
    )
    features = np.array([[1.0], [4.0], [0.5]], dtype=np.float32)  # a, b, c
    ids = ["a", "b", "c"]
    np.testing.assert_allclose(euclidean_distances_for_pairs(pairs, features, ids), [3.0, 3.5, 0.5])
    # the latent changes per pair are (1, 3, 4): ranks (1, 2, 3) against the distances' (2, 3, 1)
    analysis = distance_vs_change(
        pairs, features, ids, {"a": 0.0, "b": 1.0, "c": 4.0}, n_boot=0, distance="euclidean"
    )
    np.testing.assert_allclose(analysis.change, [1.0, 3.0, 4.0])
    assert analysis.rho == pytest.approx(1 - 6 * (1 + 1 + 4) / (3 * (9 - 1)))  # -0.5
    with pytest.raises(ValueError, match="unknown distance"):
        distance_vs_change(pairs, features, ids, n_boot=0, distance="manhattan")
