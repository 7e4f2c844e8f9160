"""Patient-level train/val/test splits (Section 2.1, Table 1).

Every scan of a patient lands in the patient's split, so no patient leaks across splits. Sizes are exact
patient counts (the paper's LUS split: 160/44/17) or ratios (ADNI 2:1:1 → ``(0.5, 0.25, 0.25)``), turned
into counts by largest remainder. Only patients with at least ``test_min_visits`` distinct visits may go
to test, because only test patients form intra-patient (sequential) pairs.

The assignment is a function of the patient set, their scores and visits, and the seed — never of the row
order. Patients are ranked (by mean score when stratified, else at random), then each split draws one
patient from each of ``k`` equal slices of the ranking (systematic sampling), so a stratified split covers
the whole score range.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter

import numpy as np

from learner.config import SplitConfig
from learner.data.manifest import SPLITS, Manifest, ScanRecord
from learner.errors import LearnerError, RunDirError
from learner.layout import RunLayout

TABLE_1_PATIENTS: tuple[int, int, int] = (160, 44, 17)
"""The paper's LUS cohort (Table 1): train / val / test patients."""


def split_counts(n_patients: int, cfg: SplitConfig) -> dict[str, int]:
    """Patients per split: ``cfg.counts`` (which must add up to ``n_patients``) or ``cfg.ratios`` rounded
    by largest remainder (ties go to the earlier split: train, then val, then test)."""
    if cfg.counts is not None:
        if sum(cfg.counts) != n_patients:
            listed = "+".join(str(c) for c in cfg.counts)
            raise LearnerError(
                f"data.split.counts {listed}={sum(cfg.counts)} but the manifest has {n_patients} patients"
            )
        return dict(zip(SPLITS, cfg.counts, strict=True))
    assert cfg.ratios is not None  # SplitConfig guarantees one of counts/ratios
    raw = np.asarray(cfg.ratios, dtype=float) / sum(cfg.ratios) * n_patients
    counts = np.floor(raw).astype(int)
    by_remainder = np.argsort(-(raw - counts), kind="stable")
    counts[by_remainder[: n_patients - counts.sum()]] += 1
    return dict(zip(SPLITS, (int(c) for c in counts), strict=True))


def assign_splits(manifest: Manifest, cfg: SplitConfig, seed: int) -> dict[str, str]:
    """A fresh patient → split mapping (sorted by patient ID), ignoring any split column in the file.

    Raises :class:`LearnerError` when fewer patients have ``cfg.test_min_visits`` visits than the test
    split needs, or when ``cfg.counts`` does not add up to the number of patients.
    """
    patients = manifest.patients()
    ids = sorted(patients)
    targets = split_counts(len(ids), cfg)
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(len(ids))  # drawn per sorted ID, so row order cannot matter
    if cfg.stratify:
        mean_score = np.array([_mean_score(patients[p]) for p in ids])
        ranking = np.lexsort((tiebreak, mean_score))
    else:
        ranking = np.argsort(tiebreak)
    ranked = [ids[k] for k in ranking]

    eligible = [p for p in ranked if len({r.visit_order for r in patients[p]}) >= cfg.test_min_visits]
    if len(eligible) < targets["test"]:
        raise LearnerError(_too_few_longitudinal(patients, targets, len(eligible), cfg))
    test = _systematic_sample(eligible, targets["test"], rng)
    rest = [p for p in ranked if p not in test]
    val = _systematic_sample(rest, targets["val"], rng)
    mapping = {p: "test" for p in test} | {p: "val" for p in val}
    return {p: mapping.get(p, "train") for p in ids}


def _mean_score(records: list[ScanRecord]) -> float:
    """A patient's mean score, the same in any row order: ``math.fsum`` rounds the exact sum once, where a
    running sum (``np.mean``) rounds at each step, so that two patients tied up to rounding could swap
    places in the ranking when the rows were reordered."""
    return math.fsum(r.score for r in records) / len(records)


CROSS_SECTIONAL_DOC = "docs/data.md#cross-sectional-data-few-longitudinal-patients"


def _too_few_longitudinal(
    patients: dict[str, list[ScanRecord]], targets: dict[str, int], eligible: int, cfg: SplitConfig
) -> str:
    """The split error with concrete numbers: patients per number of distinct visits, and a split that
    the manifest can meet (every eligible patient in test; the rest in the configured train:val
    proportion)."""
    visits = Counter(len({r.visit_order for r in records}) for records in patients.values())
    spread = ", ".join(f"{n} visit{'s' if n != 1 else ''}: {visits[n]}" for n in sorted(visits))
    head = (
        f"the test split needs {targets['test']} patients with ≥ {cfg.test_min_visits} visits "
        f"(data.split.test_min_visits) but only {eligible} of {len(patients)} patients have that many "
        f"(patients by distinct visits: {spread})"
    )
    if eligible == 0:
        return f"{head}; no patient can give test pairs: pretrain and embed only ({CROSS_SECTIONAL_DOC})"
    rest = len(patients) - eligible
    train_share = targets["train"] / max(targets["train"] + targets["val"], 1)
    train = round(rest * train_share)
    counts = f"{train},{rest - train},{eligible}"
    lower = f" or lower --test-min-visits to {cfg.test_min_visits - 1}," if cfg.test_min_visits > 2 else ""
    return f"{head}; e.g. --counts {counts} (data.split.counts=[{counts}]),{lower} see {CROSS_SECTIONAL_DOC}"


def resolve_splits(manifest: Manifest, cfg: SplitConfig, seed: int) -> tuple[dict[str, str], bool]:
    """The split to use and whether it came from the manifest's own (complete) ``split`` column."""
    if cfg.use_manifest_split and manifest.has_complete_split:
        return {
            r.patient_id: str(r.split) for r in sorted(manifest.records, key=lambda r: r.patient_id)
        }, True
    return assign_splits(manifest, cfg, seed), False


def read_splits(run_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Patient → split of a pretraining run (its ``splits.csv``, :attr:`RunLayout.splits`).

    Raises:
        RunDirError: no such file, or not the columns ``patient_id`` and ``split``.
    """
    path = RunLayout(run_dir).splits
    if not path.is_file():
        raise RunDirError(f"{path}: not found; is {run_dir} a finished pretraining run?")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"patient_id", "split"} <= set(rows[0]):
        raise RunDirError(f"{path}: expected the columns patient_id and split")
    return {row["patient_id"]: row["split"] for row in rows}


def _systematic_sample(ranked: list[str], k: int, rng: np.random.Generator) -> set[str]:
    """One random item from each of ``k`` contiguous, near-equal slices of ``ranked`` (k ≤ len(ranked))."""
    bounds = np.arange(k + 1) * len(ranked) // k if k else np.zeros(1, dtype=int)
    picks = rng.integers(bounds[:-1], bounds[1:])
    return {ranked[i] for i in picks}
