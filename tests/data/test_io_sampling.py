"""TSN segment sampling: deterministic centres in eval, uniform frames within segments in train."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learner.data.sampling import segment_indices


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
