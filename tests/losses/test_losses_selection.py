"""The Algorithm 1 miner: hand-written masks, a slow mid-rank reference, the plain rule, ties, order."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from learner.losses.selection import select_pairs


def reference_selection(scores: list[float]) -> tuple[list[list[bool]], list[list[bool]]]:
    """The mid-rank rule written out: rank the others, average the ranks of each tie group, compare."""
    batch = len(scores)
    centre = batch / 2  # (K + 1) / 2 with K = B − 1
    positive = [[False] * batch for _ in range(batch)]
    negative = [[False] * batch for _ in range(batch)]
    for i in range(batch):
        others = [j for j in range(batch) if j != i]
        distance = {j: abs(scores[i] - scores[j]) for j in others}
        ordered = sorted(others, key=lambda j: distance[j])
        for j in others:
            ranks = [rank for rank, k in enumerate(ordered, start=1) if distance[k] == distance[j]]
            mid_rank = sum(ranks) / len(ranks)
            positive[i][j] = mid_rank < centre
            negative[i][j] = mid_rank > centre
    return positive, negative


def as_lists(mask: torch.Tensor) -> list[list[bool]]:
    return [[bool(v) for v in row] for row in mask]


def test_hand_written_masks_odd_number_of_others() -> None:
    # B = 4, K = 3: one positive, one negative, and the middle-ranked member in neither set.
    sel = select_pairs(torch.tensor([0.0, 1.0, 3.0, 6.0]))
    # anchor 0: d = (1, 3, 6) → + {1}, − {3}; anchor 1: d = (1, 2, 5) → + {0}, − {3};
    # anchor 2: d = (3, 2, 3) → + {1}, and 0 and 3 tie at ranks 2–3 (mid-rank 2.5 > 2) → − {0, 3};
    # anchor 3: d = (6, 5, 3) → + {2}, − {0}.
    assert as_lists(sel.positive) == [
        [False, True, False, False],
        [True, False, False, False],
        [False, True, False, False],
        [False, False, True, False],
    ]
    assert as_lists(sel.negative) == [
        [False, False, False, True],
        [False, False, False, True],
        [True, False, False, True],
        [True, False, False, False],
    ]
    assert sel.distance[2].tolist() == [3.0, 2.0, 0.0, 3.0]


def test_hand_written_masks_even_number_of_others_with_ties() -> None:
    # B = 5, K = 4, centre 2.5. Anchor 2 (score 2): members 1 and 3 tie at d = 1 (ranks 1–2, mid-rank 1.5)
    # → both positive; 0 and 4 tie at d = 2 (mid-rank 3.5) → both negative.
    sel = select_pairs(torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]))
    assert as_lists(sel.positive)[2] == [False, True, False, True, False]
    assert as_lists(sel.negative)[2] == [True, False, False, False, True]
    # Anchor 0: d = (1, 2, 3, 4), no ties → the two closest and the two farthest.
    assert as_lists(sel.positive)[0] == [False, True, True, False, False]
    assert as_lists(sel.negative)[0] == [False, False, False, True, True]


def test_three_members_tied_closest_are_all_positives() -> None:
    # Anchor 0 with K = 4: d = (0, 0, 0, 10); the tie group holds ranks 1–3 (mid-rank 2 < 2.5).
    sel = select_pairs(torch.tensor([5.0, 5.0, 5.0, 5.0, 15.0]))
    assert as_lists(sel.positive)[0] == [False, True, True, True, False]
    assert as_lists(sel.negative)[0] == [False, False, False, False, True]
    # The odd one out sees all four at d = 10: every mid-rank is the centre → no pairs at all.
    assert not sel.positive[4].any()
    assert not sel.negative[4].any()


@pytest.mark.parametrize("scores", [[3.0, 3.0, 3.0, 3.0, 3.0], [1.0, 2.0], [7.0]], ids=["equal", "b2", "b1"])
def test_degenerate_batches_select_nothing(scores: list[float]) -> None:
    sel = select_pairs(torch.tensor(scores))
    assert not sel.positive.any()
    assert not sel.negative.any()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=10))
def test_matches_slow_reference_and_never_splits_ties(values: list[int]) -> None:
    scores = [float(v) for v in values]
    sel = select_pairs(torch.tensor(scores))
    positive, negative = reference_selection(scores)
    assert as_lists(sel.positive) == positive
    assert as_lists(sel.negative) == negative
    batch = len(scores)
    for i in range(batch):
        # Documented: ≥ 2 distinct distances → at least one positive and one negative; otherwise neither.
        distinct = len({abs(scores[i] - scores[j]) for j in range(batch) if j != i})
        assert any(positive[i]) == (distinct >= 2)
        assert any(negative[i]) == (distinct >= 2)
        assert not positive[i][i]
        assert not negative[i][i]
        for j in range(batch):
            assert not (positive[i][j] and negative[i][j])
            for k in range(batch):
                same_distance = j != i and k != i and abs(scores[i] - scores[j]) == abs(scores[i] - scores[k])
                if same_distance:
                    assert not (positive[i][j] and negative[i][k]), (scores, i, j, k)
                    assert positive[i][j] == positive[i][k]
                    assert negative[i][j] == negative[i][k]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=2, max_size=12, unique=True))
def test_without_ties_equals_the_papers_sorted_halves(scores: list[float]) -> None:
    # Algorithm 1 with the anchor excluded: sort the others by |Δ|, the first ⌊K/2⌋ are positives, the
    # last ⌊K/2⌋ negatives. Only valid when no two others share a distance, so skip batches with ties.
    batch = len(scores)
    half = (batch - 1) // 2
    sel = select_pairs(torch.tensor(scores, dtype=torch.float64))
    for i in range(batch):
        others = sorted((abs(scores[i] - scores[j]), j) for j in range(batch) if j != i)
        if len({d for d, _ in others}) < len(others):
            continue
        expected_pos = {j for _, j in others[:half]}
        expected_neg = {j for _, j in others[len(others) - half :]}
        assert set(torch.nonzero(sel.positive[i]).flatten().tolist()) == expected_pos
        assert set(torch.nonzero(sel.negative[i]).flatten().tolist()) == expected_neg


def test_permuting_the_batch_permutes_the_masks() -> None:
    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 4, (12,), generator=generator).float()  # many ties
    perm = torch.randperm(12, generator=generator)
    sel = select_pairs(scores)
    permuted = select_pairs(scores[perm])
    assert torch.equal(permuted.positive, sel.positive[perm][:, perm])
    assert torch.equal(permuted.negative, sel.negative[perm][:, perm])


def test_invariant_to_standardisation() -> None:
    scores = torch.tensor([12.0, 15.0, 15.0, 20.0, 27.0, 30.0])
    sel = select_pairs(scores)
    standardised = select_pairs(2.0 * scores - 7.0)  # exact in float32: same distances up to a factor 2
    assert torch.equal(sel.positive, standardised.positive)
    assert torch.equal(sel.negative, standardised.negative)


def test_huge_scores_do_not_overflow() -> None:
    sel = select_pairs(torch.tensor([3e38, -3e38, 0.0, 1.0]))  # |Δ| = 6e38 overflows float32, not float64
    assert torch.isfinite(sel.distance).all()
    assert as_lists(sel.negative)[0] == [False, True, False, False]


@pytest.mark.parametrize(
    ("scores", "match"),
    [(torch.tensor([1.0, float("nan")]), "finite"), (torch.zeros(2, 2), r"\(B,\)")],
    ids=["nan", "2d"],
)
def test_bad_scores_are_rejected(scores: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select_pairs(scores)
