"""Where a score on a bin edge goes: the paper's S/F bins "[> 430, 275-430, 180-275, < 180]" (Section 2.1),
and the one rule that the change labels, ``supcon_bins`` and the export share."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from learner.data.scales import ChangeLabel, ScoreScale, get_scale
from learner.errors import ConfigError

SF = get_scale("sf")

# score → the paper's bin: "< 180" and "> 430" are strict, so 180 is in 180–275 and 430 in 275–430; 275 is
# named by both middle bins (the one ambiguous edge) and stays in the lower one, 180–275.
PAPER_BINS = {179.9: "< 180", 180.0: "180-275", 180.1: "180-275", 275.0: "180-275", 275.1: "275-430",
              430.0: "275-430", 430.1: "> 430"}  # fmt: skip
BIN_NAMES = ["< 180", "180-275", "275-430", "> 430"]


def test_sf_bins_are_the_papers() -> None:
    scores = list(PAPER_BINS)
    assert [BIN_NAMES[b] for b in SF.bin_of(scores)] == list(PAPER_BINS.values())
    assert [BIN_NAMES[int(SF.bin_of(s))] for s in scores] == list(PAPER_BINS.values())  # one score at a time


@pytest.mark.parametrize(
    ("earlier", "later", "expected"),
    [
        (180.0, 181.0, ChangeLabel.STABLE),  # both in 180–275
        (179.9, 180.0, ChangeLabel.IMPROVED),  # < 180 → 180–275
        (180.0, 179.9, ChangeLabel.DETERIORATED),
        (180.0, 180.1, ChangeLabel.STABLE),
        (180.0, 275.0, ChangeLabel.STABLE),
        (275.0, 275.1, ChangeLabel.IMPROVED),
        (275.1, 430.0, ChangeLabel.STABLE),
        (430.0, 430.1, ChangeLabel.IMPROVED),
        (430.1, 430.0, ChangeLabel.DETERIORATED),
    ],
)
def test_sf_change_labels_at_the_edges(earlier: float, later: float, expected: ChangeLabel) -> None:
    assert SF.change_label(earlier, later) == expected
    assert SF.change_labels([earlier], [later]).tolist() == [int(expected)]


def test_class_edges_carry_the_side_of_each_edge() -> None:
    from learner.data.scales import ClassEdges

    edges = SF.class_edges()
    assert isinstance(edges, ClassEdges)
    assert edges == (180.0, 275.0, 430.0)
    assert edges.upper == (True, False, False)
    assert edges.sides() == ["upper", "lower", "lower"]
    assert edges.classes(list(PAPER_BINS)).tolist() == SF.bin_of(list(PAPER_BINS)).tolist()
    back = pickle.loads(pickle.dumps(edges))
    assert (back, back.upper) == (edges, edges.upper)


def test_other_scales_keep_an_edge_value_in_the_lower_bin() -> None:
    binned = get_scale("mmse_binned")
    assert binned.class_edges().upper == (False, False)
    assert binned.bin_of([17, 18, 23, 24]).tolist() == [0, 1, 1, 2]
    assert get_scale("mmse", threshold=4).class_edges().upper == (False,) * 7
    custom = ScoreScale("custom", low=0.0, high=10.0, bins=(3.0, 6.0))
    assert custom.bin_of([3.0, 3.1, 6.0, 6.1]).tolist() == [0, 1, 1, 2]
    upper = ScoreScale("custom", low=0.0, high=10.0, bins=(3.0, 6.0), upper_edges=(3.0, 6.0))
    assert upper.bin_of([2.9, 3.0, 5.9, 6.0]).tolist() == [0, 1, 1, 2]


def test_upper_edges_must_be_bin_edges() -> None:
    from learner.data.scales import ClassEdges

    with pytest.raises(ConfigError, match="upper_edges"):
        ScoreScale("custom", low=0.0, high=10.0, bins=(3.0,), upper_edges=(4.0,))
    with pytest.raises(ConfigError, match="upper_edges"):
        ScoreScale("custom", low=0.0, high=10.0, threshold=1.0, upper_edges=(4.0,))
    with pytest.raises(ValueError, match="sides"):
        ClassEdges((1.0, 2.0), (True,))


def test_bin_of_keeps_its_shape() -> None:
    scores = np.array([[179.9, 180.0], [430.0, 430.1]])
    assert SF.bin_of(scores).tolist() == [[0, 1], [2, 3]]
