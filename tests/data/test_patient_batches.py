"""PatientBatchSampler: batches of visit pairs for the within-patient term, every scan once an epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from learner.data.manifest import ScanRecord
from learner.data.patient_batches import PIECE, PatientBatchSampler, longitudinal_tracks, visit_codes


def record(patient: str, visit: int, site: str = "L1") -> ScanRecord:
    return ScanRecord(
        patient_id=patient, scan_id=f"{patient}-{visit}-{site}", path=Path("x"), visit=str(visit),
        visit_order=float(visit), score=float(visit), split="train", site=site,
    )  # fmt: skip


def two_visit_cohort(patients: int) -> list[ScanRecord]:
    return [
        record(f"P{p}", visit, site) for p in range(patients) for site in ("L1", "R1") for visit in (1, 2)
    ]


def test_every_scan_comes_once_and_each_piece_is_one_track_on_two_visits() -> None:
    records = two_visit_cohort(10)  # 20 tracks of 2 visits, 40 scans
    sampler = PatientBatchSampler(records, batch_size=8, seed=3)
    order = list(sampler)
    assert len(order) == len(sampler) == 40
    assert sorted(order) == list(range(40))
    tracks, visits = visit_codes(records)
    for start in range(0, len(order), PIECE):
        a, b = order[start : start + PIECE]
        assert tracks[a] == tracks[b]
        assert visits[a] != visits[b]


def test_the_order_is_a_function_of_seed_and_epoch() -> None:
    records = two_visit_cohort(10)
    sampler = PatientBatchSampler(records, batch_size=8, seed=3)
    first = list(sampler)
    assert list(PatientBatchSampler(records, batch_size=8, seed=3)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(PatientBatchSampler(records, batch_size=8, seed=4)) != first


def test_single_visit_patients_fill_batches_and_a_remainder_is_dropped() -> None:
    records = two_visit_cohort(3) + [record(f"S{i}", 1) for i in range(7)]  # 12 + 7 scans
    sampler = PatientBatchSampler(records, batch_size=4, seed=0)
    order = list(sampler)
    assert len(order) == 16
    assert len(set(order)) == 16
    assert longitudinal_tracks(records) == 6


def test_ranks_split_each_global_batch_into_whole_pieces() -> None:
    records = two_visit_cohort(12)
    whole = PatientBatchSampler(records, batch_size=8, seed=1).global_order()
    ranks = [list(PatientBatchSampler(records, batch_size=8, seed=1, world_size=2, rank=r)) for r in (0, 1)]
    rebuilt = [
        i for batch in range(len(whole) // 8) for r in (0, 1) for i in ranks[r][4 * batch : 4 * batch + 4]
    ]
    assert rebuilt == whole
    tracks, _ = visit_codes(records)
    for order in ranks:
        assert all(tracks[order[i]] == tracks[order[i + 1]] for i in range(0, len(order), PIECE))


def test_a_local_batch_that_cuts_a_pair_is_refused() -> None:
    with pytest.raises(ValueError, match="whole pieces"):
        PatientBatchSampler(two_visit_cohort(4), batch_size=6, seed=0, world_size=2)
