"""Change labels at every boundary, inter-patient pair sampling and intra-patient pair selection."""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learner.config import PairConfig
from learner.data.manifest import ScanRecord, manifest_from_frame
from learner.data.pairs import (
    BALANCED,
    PAIR_COLUMNS,
    class_quotas,
    inter_patient_pairs,
    intra_patient_pairs,
    pair_class_counts,
    pair_count,
    split_pairs,
    write_pair_table,
)
from learner.data.scales import ScoreScale, get_scale

SF = get_scale("sf")
MMSE = get_scale("mmse")
DET, STABLE, IMP = 0, 1, 2


def _records(rows: list[tuple[str, str, str, float, str | None]], scale: ScoreScale = SF) -> list[ScanRecord]:
    """(patient, scan, visit, score, site) rows → validated records (files are not checked)."""
    frame = pd.DataFrame(
        {
            "patient_id": [r[0] for r in rows],
            "scan_id": [r[1] for r in rows],
            "path": [f"{r[1]}.mp4" for r in rows],
            "visit": [r[2] for r in rows],
            "score": [str(r[3]) for r in rows],
            "site": [r[4] or "" for r in rows],
        }
    )
    return manifest_from_frame(frame, scale, root=Path("/none"), check_files=False).records


def _sf_label(earlier: float, later: float) -> int:
    """Hand-written S/F rule: the paper's bins <180, [180,275], (275,430], >430; movement between bins."""
    bin_of = lambda s: (s >= 180.0) + (s > 275.0) + (s > 430.0)  # noqa: E731
    return int(np.sign(bin_of(later) - bin_of(earlier))) + 1


SF_BOUNDARY_CASES = [
    (180.0, 180.0, STABLE),
    (179.99, 180.0, IMP),  # 180 itself belongs to 180–275: the paper's lowest bin is a strict "< 180"
    (180.0, 179.99, DET),
    (180.0, 180.01, STABLE),
    (180.01, 180.0, STABLE),
    (274.99, 275.0, STABLE),
    (275.0, 275.01, IMP),
    (275.01, 275.0, DET),
    (275.01, 430.0, STABLE),
    (429.99, 430.0, STABLE),
    (430.0, 430.01, IMP),
    (430.01, 430.0, DET),
    (181.0, 274.0, STABLE),
    (0.0, 179.99, STABLE),
    (0.0, 180.0, IMP),
    (0.0, 500.0, IMP),
    (500.0, 0.0, DET),
]
MMSE_BOUNDARY_CASES = [
    (20.0, 21.99, STABLE),
    (20.0, 22.0, IMP),
    (22.0, 20.0, DET),
    (21.99, 20.0, STABLE),
    (20.0, 18.01, STABLE),
    (20.0, 18.0, DET),
    (20.0, 20.0, STABLE),
    (0.0, 30.0, IMP),
]


@pytest.mark.parametrize(("earlier", "later", "expected"), SF_BOUNDARY_CASES)
def test_sf_labels_around_every_edge(earlier: float, later: float, expected: int) -> None:
    assert _sf_label(earlier, later) == expected  # the hand rule agrees with the table
    assert SF.change_label(earlier, later) == expected


@pytest.mark.parametrize(("earlier", "later", "expected"), MMSE_BOUNDARY_CASES)
def test_mmse_labels_around_the_threshold(earlier: float, later: float, expected: int) -> None:
    assert MMSE.change_label(earlier, later) == expected


@pytest.mark.parametrize(
    ("scale", "earlier", "later", "expected"),
    [
        (get_scale("mmse", threshold=3.0), 20.0, 22.0, STABLE),
        (get_scale("mmse", threshold=3.0), 20.0, 23.0, IMP),
        (get_scale("mmse", threshold=3.0), 20.0, 17.0, DET),
        (get_scale("mmse_binned"), 16.0, 17.0, STABLE),  # 17 is in the ≤ 17 bin
        (get_scale("mmse_binned"), 17.0, 18.0, IMP),
        (get_scale("mmse_binned"), 18.0, 23.0, STABLE),
        (get_scale("mmse_binned"), 23.0, 24.0, IMP),
        (get_scale("mmse_binned"), 24.0, 23.0, DET),
        (ScoreScale("lower_better", 0.0, 10.0, higher_is_better=False, threshold=1.0), 5.0, 3.0, IMP),
        (ScoreScale("lower_better", 0.0, 10.0, higher_is_better=False, threshold=1.0), 3.0, 5.0, DET),
        (ScoreScale("lower_better", 0.0, 10.0, higher_is_better=False, threshold=1.0), 3.0, 3.5, STABLE),
    ],
)
def test_other_scales_and_direction(scale: ScoreScale, earlier: float, later: float, expected: int) -> None:
    assert scale.change_label(earlier, later) == expected


@pytest.mark.parametrize(("scale", "cases"), [(SF, SF_BOUNDARY_CASES), (MMSE, MMSE_BOUNDARY_CASES)])
def test_pair_tables_carry_the_boundary_labels(
    scale: ScoreScale, cases: list[tuple[float, float, int]]
) -> None:
    # one patient per case, two visits: earlier score then later score
    rows = []
    for k, (earlier, later, _) in enumerate(cases):
        rows += [
            (f"p{k:02d}", f"p{k:02d}a", "1", earlier, None),
            (f"p{k:02d}", f"p{k:02d}b", "2", later, None),
        ]
    # MMSE cases use non-integer scores on purpose, so validate them on a float scale with the same rule
    rule = ScoreScale(
        "test", 0.0, 500.0, bins=scale.bins, threshold=scale.threshold, upper_edges=scale.upper_edges
    )
    frame, no_pair = intra_patient_pairs(_records(rows, rule), rule)
    assert no_pair == []
    assert frame["label"].tolist() == [expected for _, _, expected in cases]
    assert frame["label_name"].tolist() == [("deteriorated", "stable", "improved")[e] for _, _, e in cases]
    assert frame["first_score"].tolist() == [e for e, _, _ in cases]


# --- inter-patient pairs --------------------------------------------------------------------------------

HAND = [  # patients A (2 scans), B (1), C (2): 5² − (2² + 1² + 2²) = 16 ordered different-patient pairs
    ("A", "a1", "1", 100.0, None),
    ("A", "a2", "2", 200.0, None),
    ("B", "b1", "1", 300.0, None),
    ("C", "c1", "1", 450.0, None),
    ("C", "c2", "2", 450.0, None),
]


def _all_inter_pairs(records: list[ScanRecord]) -> dict[tuple[str, str], int]:
    """Slow reference: every ordered different-patient pair and its hand-rule label."""
    return {
        (f.scan_id, s.scan_id): _sf_label(f.score, s.score)
        for f, s in itertools.product(records, records)
        if f.patient_id != s.patient_id
    }


def test_inter_pairs_are_distinct_cross_patient_and_labelled() -> None:
    records = _records(HAND)
    reference = _all_inter_pairs(records)
    assert len(reference) == 16
    frame = inter_patient_pairs(records, SF, count=10, seed=0)
    assert list(frame.columns) == list(PAIR_COLUMNS)
    keys = list(zip(frame["first_scan_id"], frame["second_scan_id"], strict=True))
    assert len(keys) == 10
    assert len(set(keys)) == 10
    assert (frame["first_patient_id"] != frame["second_patient_id"]).all()
    assert [reference[k] for k in keys] == frame["label"].tolist()
    scores = {r.scan_id: r.score for r in records}
    assert frame["first_score"].tolist() == [scores[k[0]] for k in keys]


def test_inter_pairs_are_seeded() -> None:
    records = _records(HAND)
    first = inter_patient_pairs(records, SF, count=8, seed=3)
    pd.testing.assert_frame_equal(first, inter_patient_pairs(records, SF, count=8, seed=3))
    draws = {tuple(inter_patient_pairs(records, SF, count=8, seed=s)["first_scan_id"]) for s in range(6)}
    assert len(draws) > 1


def test_asking_for_more_pairs_than_exist_returns_all(caplog: pytest.LogCaptureFixture) -> None:
    records = _records(HAND)
    with caplog.at_level(logging.WARNING, logger="learner.data.pairs"):
        frame = inter_patient_pairs(records, SF, count=100, seed=0)
    assert set(zip(frame["first_scan_id"], frame["second_scan_id"], strict=True)) == set(
        _all_inter_pairs(records)
    )
    assert "only 16 exist" in caplog.text


def test_inter_pairs_are_uniform_over_valid_pairs() -> None:
    records = _records(HAND)
    seen: Counter[tuple[str, str]] = Counter()
    for seed in range(480):
        frame = inter_patient_pairs(records, SF, count=3, seed=seed)
        seen.update(zip(frame["first_scan_id"], frame["second_scan_id"], strict=True))
    assert set(seen) == set(_all_inter_pairs(records))
    # 1440 draws over 16 pairs: 90 expected each; ±45 is > 4.7 standard deviations
    assert all(45 <= n <= 135 for n in seen.values()), seen


def test_single_patient_or_no_records_give_no_pairs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="learner.data.pairs"):
        frame = inter_patient_pairs(_records(HAND[:2]), SF, count=5, seed=0)
    assert len(frame) == 0
    assert "only 0 exist" in caplog.text
    empty = inter_patient_pairs([], SF, count=0, seed=0)
    assert list(empty.columns) == list(PAIR_COLUMNS)
    assert len(empty) == 0


def test_balanced_pairs_with_plentiful_classes() -> None:
    rows = [(f"p{i:02d}", f"s{i:02d}", "1", 50.0 + 15.0 * i, None) for i in range(30)]
    records = _records(rows)
    frame = inter_patient_pairs(records, SF, count=31, seed=1, mix=BALANCED)
    assert pair_class_counts(frame) == {"deteriorated": 11, "stable": 10, "improved": 10}
    reference = _all_inter_pairs(records)
    keys = list(zip(frame["first_scan_id"], frame["second_scan_id"], strict=True))
    assert len(set(keys)) == 31
    assert [reference[k] for k in keys] == frame["label"].tolist()


def test_balanced_pairs_take_all_of_a_rare_class(caplog: pytest.LogCaptureFixture) -> None:
    # six healthy patients (S/F 450) and one sick (100): 30 stable, 6 deteriorated, 6 improved pairs
    rows = [(f"p{i}", f"s{i}", "1", 450.0, None) for i in range(6)] + [("q", "sq", "1", 100.0, None)]
    records = _records(rows)
    assert Counter(_all_inter_pairs(records).values()) == {STABLE: 30, DET: 6, IMP: 6}
    with caplog.at_level(logging.WARNING, logger="learner.data.pairs"):
        frame = inter_patient_pairs(records, SF, count=30, seed=0, mix=BALANCED)
    assert pair_class_counts(frame) == {"deteriorated": 6, "stable": 18, "improved": 6}
    assert "only 6 deteriorated" in caplog.text
    assert "only 6 improved" in caplog.text


@pytest.mark.parametrize(
    ("available", "total", "expected"),
    [
        ([100, 100, 100], 10, [4, 3, 3]),
        ([5, 100, 100], 30, [5, 13, 12]),
        ([2, 3, 100], 10, [2, 3, 5]),
        ([2, 3, 4], 100, [2, 3, 4]),
        ([0, 0, 0], 5, [0, 0, 0]),
        ([0, 7, 7], 7, [0, 4, 3]),
    ],
)
def test_balanced_quotas(available: list[int], total: int, expected: list[int]) -> None:
    assert class_quotas(np.array(available), total).tolist() == expected


@pytest.mark.parametrize(
    ("available", "total", "mix", "expected"),
    [
        ([100, 100, 100], 30, (0.1, 0.8, 0.1), [3, 24, 3]),
        ([100, 100, 100], 11, (0.1, 0.8, 0.1), [1, 9, 1]),  # 1.1, 8.8, 1.1: the largest remainder, stable
        ([100, 10, 100], 30, (0.1, 0.8, 0.1), [10, 10, 10]),  # stable short: the rest by the other shares
        ([100, 10, 100], 30, (0.0, 1.0, 0.0), [0, 10, 0]),  # a share of 0 never gets any
    ],
)
def test_quotas_follow_a_stated_class_mix(
    available: list[int], total: int, mix: tuple[float, ...], expected: list[int]
) -> None:
    assert class_quotas(np.array(available), total, mix).tolist() == expected


def test_a_stated_class_mix_draws_those_shares_and_the_config_checks_it() -> None:
    from pydantic import ValidationError

    from learner.config import PairConfig

    rows = [(f"p{i:02d}", f"s{i:02d}", "1", 50.0 + 15.0 * i, None) for i in range(30)]
    frame = inter_patient_pairs(_records(rows), SF, count=40, seed=1, mix=(0.1, 0.8, 0.1))
    assert pair_class_counts(frame) == {"deteriorated": 4, "stable": 32, "improved": 4}
    assert PairConfig(class_mix=[0.1, 0.8, 0.1]).class_mix == [0.1, 0.8, 0.1]
    with pytest.raises(ValidationError, match="summing to 1"):
        PairConfig(class_mix=[0.5, 0.6, 0.1])
    with pytest.raises(ValidationError, match="not both"):
        PairConfig(class_mix=[0.2, 0.6, 0.2], balanced=True)


def test_pair_count_follows_the_config() -> None:
    assert pair_count(701, PairConfig(), "train") == 2103  # the paper's 3 per scan
    assert pair_count(194, PairConfig(), "val") == 582
    assert pair_count(10, PairConfig(per_scan=2.5), "train") == 25
    assert pair_count(701, PairConfig(count_train=50), "train") == 50
    assert pair_count(194, PairConfig(count_train=50), "val") == 582
    with pytest.raises(ValueError, match="not 'test'"):
        pair_count(10, PairConfig(), "test")


# --- intra-patient pairs --------------------------------------------------------------------------------

SITES = [  # A: L1 at visits 1-3, R1 at visits 1 and 3; B: one visit; C: L1 then R1 (no site twice)
    ("A", "a3L", "2021-01-09", 450.0, "L1"),
    ("A", "a1L", "2021-01-01", 300.0, "L1"),
    ("A", "a1R", "2021-01-01", 300.0, "R1"),
    ("A", "a2L", "2021-01-05", 150.0, "L1"),
    ("A", "a3R", "2021-01-09", 200.0, "R1"),
    ("B", "b1L", "2021-01-01", 300.0, "L1"),
    ("C", "c1L", "2021-02-01", 300.0, "L1"),
    ("C", "c2R", "2021-03-01", 300.0, "R1"),
]


@pytest.mark.parametrize(
    ("mode", "match_site", "expected", "no_pair"),
    [
        ("consecutive", True, [("a1L", "a2L"), ("a2L", "a3L"), ("a1R", "a3R")], ["B", "C"]),
        ("all", True, [("a1L", "a2L"), ("a1L", "a3L"), ("a2L", "a3L"), ("a1R", "a3R")], ["B", "C"]),
        (
            "consecutive",
            False,
            [("a1L", "a2L"), ("a1R", "a2L"), ("a2L", "a3L"), ("a2L", "a3R"), ("c1L", "c2R")],
            ["B"],
        ),
        (
            "all",
            False,
            [
                ("a1L", "a2L"),
                ("a1R", "a2L"),
                ("a1L", "a3L"),
                ("a1L", "a3R"),
                ("a1R", "a3L"),
                ("a1R", "a3R"),
                ("a2L", "a3L"),
                ("a2L", "a3R"),
                ("c1L", "c2R"),
            ],
            ["B"],
        ),
    ],
)
def test_intra_pair_selection(
    mode: str, match_site: bool, expected: list[tuple[str, str]], no_pair: list[str]
) -> None:
    records = _records(SITES)
    frame, without = intra_patient_pairs(records, SF, mode=mode, match_site=match_site)
    assert list(frame.columns) == [*PAIR_COLUMNS, "site"]
    keys = list(zip(frame["first_scan_id"], frame["second_scan_id"], strict=True))
    assert sorted(keys) == sorted(expected)
    assert without == no_pair
    assert (frame["first_patient_id"] == frame["second_patient_id"]).all()
    scores = {r.scan_id: r.score for r in records}
    assert frame["label"].tolist() == [_sf_label(scores[a], scores[b]) for a, b in keys]
    sites = {r.scan_id: r.site for r in records}
    assert frame["site"].tolist() == [sites[a] if sites[a] == sites[b] else None for a, b in keys]


def test_intra_pairs_without_sites_group_by_patient() -> None:
    rows = [("A", "x2", "2", 100.0, None), ("A", "x1", "1", 300.0, None), ("A", "x3", "3", 200.0, None)]
    frame, without = intra_patient_pairs(_records(rows), SF, match_site=True)
    assert list(zip(frame["first_scan_id"], frame["second_scan_id"], strict=True)) == [
        ("x1", "x2"),
        ("x2", "x3"),
    ]
    assert frame["label"].tolist() == [DET, IMP]  # 300 → 100 falls two bins, 100 → 200 rises one
    assert without == []


def test_pair_table_written_atomically(tmp_path: Path) -> None:
    frame = inter_patient_pairs(_records(HAND), SF, count=6, seed=2)
    path = write_pair_table(frame, tmp_path / "pairs" / "train.csv")
    back = pd.read_csv(path, dtype={"first_scan_id": str, "second_scan_id": str})
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.csv"]
    counts = pair_class_counts(frame)
    assert counts == {name: int((frame["label"] == k).sum()) for k, name in enumerate(counts)}
    assert sum(counts.values()) == 6


def test_class_edges_are_the_bins_or_threshold_bands() -> None:
    assert get_scale("sf").class_edges() == (180.0, 275.0, 430.0)
    assert get_scale("mmse_binned").class_edges() == (17.0, 23.0)
    assert get_scale("mmse", threshold=4).class_edges() == (4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0)
    bands = ScoreScale("custom", low=1.0, high=2.0, threshold=0.5)
    assert bands.class_edges() == (1.5,)  # (−inf, 1.5] and (1.5, inf): within a band |Δ| < 0.5


def test_within_patient_pairs_join_the_train_and_val_pairs_only_when_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    train = _records(
        [("A", "a1", "1", 300.0, "z1"), ("A", "a2", "2", 150.0, "z1"), ("A", "a3", "2", 160.0, "z2"),
         ("B", "b1", "1", 400.0, "z1"), ("C", "c1", "1", 200.0, "z1")]
    )  # fmt: skip
    val = _records([("D", "d1", "1", 300.0, None), ("E", "e1", "1", 100.0, None)])
    by_split = {"train": train, "val": val, "test": []}
    paper, _ = split_pairs(by_split, SF, PairConfig(per_scan=1.0), seed=0)
    assert not (paper["train"]["first_patient_id"] == paper["train"]["second_patient_id"]).any()

    with caplog.at_level(logging.WARNING, logger="learner.data.pairs"):
        within, _ = split_pairs(by_split, SF, PairConfig(per_scan=1.0, within_patient=True), seed=0)
    assert within["train"].iloc[: len(paper["train"])].equals(paper["train"])  # the same inter-patient draw
    added = within["train"].iloc[len(paper["train"]) :]
    # A's one site seen on two visits (z1): 300 → 150 falls a bin; z2 was scanned once, so no pair
    assert list(zip(added["first_scan_id"], added["second_scan_id"], added["label"], strict=True)) == [
        ("a1", "a2", DET)
    ]
    assert list(within["train"].columns) == list(PAIR_COLUMNS)
    assert within["val"].equals(paper["val"])  # no val patient has two visits: warned, nothing added
    assert "no val patient has scans from two visits" in caplog.text


def test_class_mix_within_takes_the_shares_of_the_train_and_val_visit_pairs() -> None:
    from learner.config import PairConfig
    from learner.data.pairs import within_class_mix
    from learner.errors import ConfigError

    # train: A falls a bin (300 → 150), B and C stay, D rises (150 → 300); 30 single-visit patients
    train = _records(
        [("A", "a1", "1", 300.0, None), ("A", "a2", "2", 150.0, None),
         ("B", "b1", "1", 300.0, None), ("B", "b2", "2", 310.0, None),
         ("C", "c1", "1", 200.0, None), ("C", "c2", "2", 210.0, None),
         ("D", "d1", "1", 150.0, None), ("D", "d2", "2", 300.0, None)]
        + [(f"p{i:02d}", f"s{i:02d}", "1", 50.0 + 15.0 * i, None) for i in range(30)]
    )  # fmt: skip
    test = _records([("T", "t1", "1", 100.0, None), ("T", "t2", "2", 450.0, None)])  # never read
    by_split = {"train": train, "val": [], "test": test}
    assert within_class_mix(by_split, SF, PairConfig(class_mix="within")) == (0.25, 0.5, 0.25)
    pairs, _ = split_pairs(by_split, SF, PairConfig(count_train=40, class_mix="within"), seed=0)
    assert pair_class_counts(pairs["train"]) == {"deteriorated": 10, "stable": 20, "improved": 10}
    with pytest.raises(ConfigError, match="no train or val patient has scans from two visits"):
        within_class_mix({"train": train[8:], "val": []}, SF, PairConfig(class_mix="within"))
