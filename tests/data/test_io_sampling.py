"""TSN segment sampling: deterministic centres in eval, uniform frames within segments in train; the
whole-scan resampling to a fixed grid against SciPy and a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given, settings
from hypothesis import strategies as st

from learner.data.sampling import resample_volume, sampling_source, segment_indices


@pytest.mark.parametrize(
    ("n", "t", "expected"),
    [
        (10, 3, [1, 4, 8]),  # segments [0,3) [3,6) [6,10)
        (8, 4, [1, 3, 5, 7]),  # segments of 2 → the upper middle
        (5, 5, [0, 1, 2, 3, 4]),
        (2, 4, [0, 0, 1, 1]),  # fewer frames than segments: frames repeat in order
        (1, 3, [0, 0, 0]),
        (7, 1, [3]),
    ],
)
def test_eval_takes_the_centre_of_each_segment(n: int, t: int, expected: list[int]) -> None:
    first = segment_indices(n, t, train=False)
    np.testing.assert_array_equal(first, expected)
    again = segment_indices(n, t, train=False, generator=np.random.default_rng(123))
    np.testing.assert_array_equal(again, expected)  # eval ignores any generator


def test_train_draws_uniformly_within_segments_and_covers_every_frame() -> None:
    n, t, draws = 10, 3, 3000
    rng = np.random.default_rng(0)
    samples = np.stack([segment_indices(n, t, train=True, generator=rng) for _ in range(draws)])  # (draws, T)
    seen = [set(samples[:, k].tolist()) for k in range(t)]
    assert seen == [{0, 1, 2}, {3, 4, 5}, {6, 7, 8, 9}]  # contiguous, disjoint, covering all 10 frames
    for k, frames in enumerate(seen):
        counts = np.bincount(samples[:, k], minlength=n)[sorted(frames)]
        expected = draws / len(frames)
        assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts  # uniform within a segment


def test_train_is_reproducible_from_the_generator() -> None:
    first = segment_indices(100, 8, train=True, generator=np.random.default_rng(7))
    second = segment_indices(100, 8, train=True, generator=np.random.default_rng(7))
    other = segment_indices(100, 8, train=True, generator=np.random.default_rng(8))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), t=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_indices_are_in_range_ordered_and_distinct_when_possible(n: int, t: int, seed: int) -> None:
    for train in (False, True):
        idx = segment_indices(n, t, train=train, generator=np.random.default_rng(seed))
        assert idx.shape == (t,)
        assert idx.min() >= 0
        assert idx.max() < n
        assert np.all(np.diff(idx) >= 0)
        if n >= t:
            assert len(set(idx.tolist())) == t  # one frame from each of T disjoint segments


def test_invalid_requests_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_frames"):
        segment_indices(0, 4, train=False)
    with pytest.raises(ValueError, match="Generator"):
        segment_indices(10, 4, train=True, generator=None)


def test_resample_halving_the_depth_averages_slice_pairs() -> None:
    # align_corners=False: output slice k samples input position (k + ½)·4/2 − ½ = 0.5, 2.5
    volume = np.stack([np.full((2, 3), value, dtype=np.uint8) for value in (0, 10, 100, 200)])
    resampled = resample_volume(volume, (2, 2, 3))
    assert resampled.dtype == np.float32
    np.testing.assert_array_equal(resampled, np.stack([np.full((2, 3), 5.0), np.full((2, 3), 150.0)]))


@pytest.mark.parametrize("grid", [(3, 5, 6), (12, 5, 6), (4, 9, 3), (1, 1, 1)])
def test_resample_matches_scipy_zoom(grid: tuple[int, int, int]) -> None:
    volume = np.random.default_rng(0).integers(0, 256, (7, 5, 6)).astype(np.uint8)
    factors = [g / s for g, s in zip(grid, volume.shape, strict=True)]
    expected = scipy.ndimage.zoom(volume.astype(np.float64), factors, order=1, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(resample_volume(volume, grid), expected, atol=1e-3)


def test_resample_keeps_colour_channels_separate() -> None:
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (6, 4, 4, 3)).astype(np.uint8)
    resampled = resample_volume(colour, (3, 4, 4))
    assert resampled.shape == (3, 4, 4, 3)
    for channel in range(3):
        np.testing.assert_allclose(resampled[..., channel], resample_volume(colour[..., channel], (3, 4, 4)))


def test_sampling_source_segments_is_the_cache_and_resample_is_the_grid() -> None:
    cached = np.random.default_rng(2).integers(0, 256, (9, 4, 4)).astype(np.uint8)
    assert sampling_source(cached, 4, "segments") is cached
    np.testing.assert_array_equal(sampling_source(cached, 4, "resample"), resample_volume(cached, (4, 4, 4)))
    with pytest.raises(ValueError, match="unknown sampling 'nearest'; available: segments, resample"):
        sampling_source(cached, 4, "nearest")
    with pytest.raises(ValueError, match="volume must be"):
        resample_volume(cached[0], (1, 4, 4))
