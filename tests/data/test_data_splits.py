"""Patient-level splits: sizes, the test-visit rule, stratification, determinism and no leakage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from learner.config import SplitConfig
from learner.data.manifest import Manifest, load_manifest, manifest_from_frame
from learner.data.scales import get_scale
from learner.data.splits import assign_splits, resolve_splits, split_counts
from learner.errors import LearnerError

SF = get_scale("sf")
ROOT = Path("/nonexistent")  # files are not checked here


def _manifest(
    visits: list[int], mean_scores: list[float] | None = None, split: list[str] | None = None
) -> Manifest:
    """Patient ``p{i}`` with ``visits[i]`` visits (one scan each), scores around ``mean_scores[i]``."""
    rows = []
    for i, n in enumerate(visits):
        base = mean_scores[i] if mean_scores is not None else 100.0 + (7.0 * i) % 390
        for v in range(n):
            pid = f"p{i:03d}"
            rows.append(
                {
                    "patient_id": pid,
                    "scan_id": f"{pid}_{v}",
                    "path": f"{pid}_{v}.mp4",
                    "visit": str(v),
                    "score": str(base + v % 2),
                }
            )
    frame = pd.DataFrame(rows)
    if split is not None:
        frame["split"] = [split[int(pid[1:])] for pid in frame["patient_id"]]
    return manifest_from_frame(frame, SF, root=ROOT, check_files=False)


@pytest.mark.parametrize(
    ("n", "ratios", "expected"),
    [
        (4, (0.5, 0.25, 0.25), (2, 1, 1)),
        (5, (0.5, 0.25, 0.25), (3, 1, 1)),  # remainder .5/.25/.25 → train
        (7, (0.5, 0.25, 0.25), (3, 2, 2)),  # 3.5/1.75/1.75: floors 3,1,1; the two left go to the .75s
        (639, (2, 1, 1), (319, 160, 160)),  # ADNI-1 2:1:1 (Table 1's 320/160/159 needs --counts)
        (0, (0.5, 0.25, 0.25), (0, 0, 0)),
        (10, (1, 0, 0), (10, 0, 0)),
    ],
)
def test_split_counts_from_ratios(
    n: int, ratios: tuple[float, float, float], expected: tuple[int, ...]
) -> None:
    counts = split_counts(n, SplitConfig(ratios=ratios))
    assert tuple(counts.values()) == expected
    assert list(counts) == ["train", "val", "test"]


def test_split_counts_exact_and_mismatch() -> None:
    assert split_counts(221, SplitConfig(counts=(160, 44, 17))) == {"train": 160, "val": 44, "test": 17}
    with pytest.raises(LearnerError, match=r"160\+44\+17=221 but the manifest has 200 patients"):
        split_counts(200, SplitConfig(counts=(160, 44, 17)))


def test_paper_lus_split_sizes() -> None:
    # 221 patients; only test patients need sequential scans: give 30 patients 2+ visits.
    visits = [3 if i % 7 == 0 else 1 for i in range(221)]
    manifest = _manifest(visits)
    mapping = assign_splits(manifest, SplitConfig(counts=(160, 44, 17)), seed=0)
    assert [list(mapping.values()).count(s) for s in ("train", "val", "test")] == [160, 44, 17]
    assert all(visits[int(p[1:])] >= 2 for p, s in mapping.items() if s == "test")


def test_too_few_eligible_test_patients() -> None:
    manifest = _manifest([2, 2, 1, 1, 1, 1, 1, 1])
    with pytest.raises(LearnerError, match=r"needs 4 patients with ≥ 2 visits .* only 2 of 8"):
        assign_splits(manifest, SplitConfig(ratios=(0.25, 0.25, 0.5)), seed=0)


def test_the_split_error_gives_the_visit_counts_and_a_split_that_works() -> None:
    """Cross-sectional data (issue 13): 8 one-visit patients, 2 with two visits, 3 with three."""
    manifest = _manifest([1] * 8 + [2, 2] + [3] * 3)
    with pytest.raises(LearnerError) as error:
        assign_splits(manifest, SplitConfig(ratios=(0.4, 0.2, 0.4), test_min_visits=3), seed=0)
    message = str(error.value)
    assert "needs 5 patients with ≥ 3 visits" in message  # 13 patients at 0.4/0.2/0.4: 5/3/5
    assert "only 3 of 13 patients" in message
    assert "(patients by distinct visits: 1 visit: 8, 2 visits: 2, 3 visits: 3)" in message
    # every eligible patient in test, the other 10 as train:val 5:3 (round(10 · 5/8) = 6)
    assert "e.g. --counts 6,4,3 (data.split.counts=[6,4,3])" in message
    assert "lower --test-min-visits to 2" in message
    assert "docs/data.md#cross-sectional-data-few-longitudinal-patients" in message
    mapping = assign_splits(manifest, SplitConfig(counts=(6, 4, 3), test_min_visits=3), seed=0)
    assert sorted(p for p, s in mapping.items() if s == "test") == ["p010", "p011", "p012"]
    with pytest.raises(LearnerError, match="no patient can give test pairs: pretrain and embed only"):
        assign_splits(_manifest([1] * 6), SplitConfig(), seed=0)


def test_stratified_test_split_spans_the_score_range() -> None:
    # 40 patients with distinct mean scores; 10 test patients → one from each block of 4 by score rank.
    scores = list(np.random.default_rng(3).permutation(40) * 10.0 + 50.0)
    manifest = _manifest([2] * 40, mean_scores=scores)
    mapping = assign_splits(manifest, SplitConfig(ratios=(0.5, 0.25, 0.25), stratify=True), seed=5)
    rank = {f"p{i:03d}": r for r, i in enumerate(np.argsort(scores))}
    blocks = sorted(rank[p] // 4 for p, s in mapping.items() if s == "test")
    assert blocks == list(range(10))


def test_seed_changes_the_split() -> None:
    manifest = _manifest([2] * 20)
    cfg = SplitConfig(ratios=(0.5, 0.25, 0.25), stratify=False)
    splits = {tuple(assign_splits(manifest, cfg, seed).items()) for seed in range(5)}
    assert len(splits) > 1


def test_resolve_keeps_a_complete_file_split() -> None:
    file_split = ["test", "train", "val", "train"]
    manifest = _manifest([2, 1, 1, 1], split=file_split)
    mapping, from_file = resolve_splits(manifest, SplitConfig(), seed=0)
    assert from_file
    assert mapping == {f"p{i:03d}": s for i, s in enumerate(file_split)}
    fresh, from_file = resolve_splits(manifest, SplitConfig(use_manifest_split=False), seed=0)
    assert not from_file
    assert fresh == assign_splits(manifest, SplitConfig(), seed=0)


def test_resolve_assigns_without_a_split_column() -> None:
    manifest = _manifest([2, 2, 1, 1])
    mapping, from_file = resolve_splits(manifest, SplitConfig(), seed=1)
    assert not from_file
    assert sorted(mapping) == ["p000", "p001", "p002", "p003"]


@st.composite
def _split_cases(draw: st.DrawFn) -> tuple[list[int], list[float], SplitConfig, int]:
    n = draw(st.integers(1, 24))
    visits = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    scores = draw(st.lists(st.floats(0, 499, allow_nan=False), min_size=n, max_size=n))
    stratify = draw(st.booleans())
    min_visits = draw(st.integers(1, 3))
    if draw(st.booleans()):
        cut = sorted(draw(st.lists(st.integers(0, n), min_size=2, max_size=2)))
        counts = (cut[0], cut[1] - cut[0], n - cut[1])
        cfg = SplitConfig(counts=counts, stratify=stratify, test_min_visits=min_visits)
    else:
        ratios = draw(st.tuples(st.floats(0.05, 1), st.floats(0, 1), st.floats(0, 1)))
        cfg = SplitConfig(ratios=ratios, stratify=stratify, test_min_visits=min_visits)
    return visits, scores, cfg, draw(st.integers(0, 2**31))


@settings(max_examples=60, deadline=None)
@given(_split_cases())
def test_split_properties(case: tuple[list[int], list[float], SplitConfig, int]) -> None:
    visits, scores, cfg, seed = case
    manifest = _manifest(visits, mean_scores=scores)
    expected = split_counts(len(visits), cfg)
    eligible = sum(v >= cfg.test_min_visits for v in visits)
    if eligible < expected["test"]:
        event("too few eligible test patients")
        with pytest.raises(LearnerError, match=f"only {eligible} of {len(visits)}"):
            assign_splits(manifest, cfg, seed)
        return
    mapping = assign_splits(manifest, cfg, seed)
    # every patient exactly once; no scan of a patient can be elsewhere since splits are per patient
    assert sorted(mapping) == sorted({r.patient_id for r in manifest.records})
    assert {s: list(mapping.values()).count(s) for s in ("train", "val", "test")} == expected
    if cfg.ratios is not None:
        total = sum(cfg.ratios)
        for name, ratio in zip(("train", "val", "test"), cfg.ratios, strict=True):
            assert abs(expected[name] - ratio / total * len(visits)) < 1
    for patient, split in mapping.items():
        if split == "test":
            assert visits[int(patient[1:])] >= cfg.test_min_visits
    split_manifest = manifest.with_splits(mapping)
    by_patient = {(r.patient_id, r.split) for r in split_manifest.records}
    assert len(by_patient) == len(mapping)  # no leakage: one split per patient
    # deterministic, and independent of the row order
    assert assign_splits(manifest, cfg, seed) == mapping
    shuffled = manifest.frame.sample(frac=1.0, random_state=seed % 1000).reset_index(drop=True)
    reordered = manifest_from_frame(shuffled, SF, root=ROOT, check_files=False)
    assert assign_splits(reordered, cfg, seed) == mapping


def _near_ties(tmp_path: Path) -> Path:
    """24 patients whose mean scores tie up to float rounding: each A-patient has three differently scored
    scans at visit 1 and one at visit 2, each B-patient two scans scored A's mean (summed in file order)."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(12):
        scores = rng.uniform(100, 450, 4).round(1)
        for k, score in enumerate(scores):
            rows.append((f"A{i:02d}", f"A{i}_{k}", 1 + (k == 3), repr(float(score))))
        for k in range(2):
            rows.append((f"B{i:02d}", f"B{i}_{k}", 1 + k, repr(float(np.mean(scores)))))
    frame = pd.DataFrame(rows, columns=["patient_id", "scan_id", "visit", "score"])
    frame["path"] = frame["scan_id"] + ".mp4"
    for cell in frame["path"]:
        (tmp_path / cell).touch()
    path = tmp_path / "manifest.csv"
    frame.to_csv(path, index=False)
    return path


def test_the_stratified_split_does_not_depend_on_the_row_order(tmp_path: Path) -> None:
    """A patient's mean score is summed exactly (``math.fsum``): ``np.mean`` summed the scans in file order,
    so reversing the rows moved near-tied patients in the ranking and changed the split."""
    path = _near_ties(tmp_path)
    manifest = load_manifest(path, SF)
    frame = pd.read_csv(path, dtype=str)
    reversed_path = tmp_path / "reversed.csv"
    frame.iloc[::-1].to_csv(reversed_path, index=False)
    reversed_manifest = load_manifest(reversed_path, SF)
    cfg = SplitConfig(counts=(12, 6, 6))
    for seed in range(8):
        assert assign_splits(reversed_manifest, cfg, seed) == assign_splits(manifest, cfg, seed)


RATIOS = "'ratios' must be finite and non-negative with a positive sum, got "


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--counts", "-1,22,3", "'counts' must be non-negative whole numbers, got (-1, 22, 3)"),
        ("--ratios", "nan,1,1", RATIOS + "(nan, 1.0, 1.0)"),
        ("--ratios", "1,inf,1", RATIOS + "(1.0, inf, 1.0)"),
        ("--ratios", "0,0,0", RATIOS + "(0.0, 0.0, 0.0)"),
    ],
)
def test_data_split_refuses_negative_counts_and_non_finite_ratios(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]], flag: str, value: str, message: str
) -> None:
    """``--counts -1,22,3`` once ended in numpy's "low >= high" traceback, ``--ratios nan,1,1`` in a silent
    split of every patient into train; both are one-line config errors naming the key, exit code 2."""
    out = tmp_path / "split.csv"
    code, _, err = cli(["data", "split", str(_near_ties(tmp_path)), "-o", str(out), flag, value])
    assert code == 2
    assert err.strip() == f"error: invalid config value for 'data.split': Value error, {message}"
    assert not out.exists()
