"""Manifest reading, validation (one test per problem kind), splits column and atomic writing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from learner.data.manifest import (
    ROWS_SHOWN,
    Problem,
    load_manifest,
    manifest_from_frame,
    validate_manifest,
    write_manifest,
)
from learner.data.scales import get_scale
from learner.errors import ManifestError

SF = get_scale("sf")


def _clean_frame() -> pd.DataFrame:
    """Two patients, five scans; P1 has integer visits, P2 ISO dates (allowed: kinds differ by patient)."""
    return pd.DataFrame(
        {
            "patient_id": ["P1", "P1", "P1", "P2", "P2"],
            "scan_id": ["a", "b", "c", "d", "e"],
            "path": ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4"],
            "visit": ["2", "1", "3", "1970-01-11", "1970-01-02"],
            "score": ["300", "250.5", "480", "100", "0"],
            "site": ["L1", "", "R1", "L1", "L1"],
            "modality": ["video", "video", "", "image", "volume"],
            "note": ["x", "y", "z", "w", "v"],
        }
    )


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "manifest.csv", files: bool = True) -> Path:
    if files:
        for cell in frame.get("path", []):
            if cell:
                (tmp_path / cell).touch()
    path = tmp_path / name
    frame.to_csv(path, index=False) if path.suffix == ".csv" else frame.to_parquet(path, index=False)
    return path


def test_clean_manifest_becomes_records(tmp_path: Path) -> None:
    manifest = load_manifest(_write(tmp_path, _clean_frame()), SF)
    assert [r.scan_id for r in manifest.records] == ["a", "b", "c", "d", "e"]
    assert [r.row for r in manifest.records] == [1, 2, 3, 4, 5]
    first = manifest.records[0]
    assert first.path == tmp_path / "a.mp4"
    assert first.path.is_absolute()
    assert first.extra == {"note": "x"}
    # integer visits are their own order; ISO dates count days since 1970-01-01
    assert [r.visit_order for r in manifest.records] == [2.0, 1.0, 3.0, 10.0, 1.0]
    assert [r.score for r in manifest.records] == [300.0, 250.5, 480.0, 100.0, 0.0]
    assert manifest.records[1].site is None
    assert manifest.records[2].modality is None
    assert manifest.root == tmp_path
    assert not manifest.has_complete_split


def test_manifest_without_extra_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every column consumed: each record's extra is empty (pandas 3.0 gives no records for a column-less
    frame, so the records were once cut short there: an IndexError on the GPU machine's pandas 3.0.6)."""
    to_dict = pd.DataFrame.to_dict

    def pandas_3_0(self: pd.DataFrame, *args: object, **kwargs: object) -> object:
        return [] if len(self.columns) == 0 else to_dict(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(pd.DataFrame, "to_dict", pandas_3_0)
    manifest = load_manifest(_write(tmp_path, _clean_frame().drop(columns="note")), SF)
    assert [r.scan_id for r in manifest.records] == ["a", "b", "c", "d", "e"]
    assert all(r.extra == {} for r in manifest.records)


def test_patients_sorted_by_visit_order(tmp_path: Path) -> None:
    manifest = load_manifest(_write(tmp_path, _clean_frame()), SF)
    patients = manifest.patients()
    assert list(patients) == ["P1", "P2"]
    assert [r.scan_id for r in patients["P1"]] == ["b", "a", "c"]
    assert [r.scan_id for r in patients["P2"]] == ["e", "d"]


def _set(row: int, column: str, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Mutation: set data row ``row`` (1-based) of ``column``."""

    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row - 1, column] = value
        return frame

    return mutate


def _with_split(values: list[str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame["split"] = values
        return frame

    return mutate


# Each kind of problem: a mutation of the clean frame and the exact (row, column, message part) it yields.
PROBLEM_KINDS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], list[tuple[int | None, str, str]]]] = {
    "missing column": (lambda f: f.drop(columns=["score"]), [(None, "score", "required column is missing")]),
    "empty required value": (_set(2, "patient_id", " "), [(2, "patient_id", "empty value")]),
    "duplicate scan id": (
        _set(4, "scan_id", "b"),
        [(4, "scan_id", "duplicate scan_id 'b' (first at row 2)")],
    ),
    "non-finite score": (_set(3, "score", "inf"), [(3, "score", "not finite")]),
    "NaN score": (_set(3, "score", "nan"), [(3, "score", "not finite")]),
    "out-of-range score": (_set(5, "score", "500.5"), [(5, "score", "outside the sf range [0, 500]")]),
    "negative score": (_set(1, "score", "-1"), [(1, "score", "outside the sf range")]),
    "score not a number": (_set(1, "score", "high"), [(1, "score", "'high' is not a number")]),
    "unparseable visit": (_set(2, "visit", "2021-13-01"), [(2, "visit", "neither an ISO date")]),
    "mixed visit kinds": (
        _set(2, "visit", "2021-01-01"),
        [(2, "visit", "patient 'P1' mixes integer and date visits (integer: rows 1, 3; date: row 2)")],
    ),
    "patient in two splits": (
        _with_split(["train", "train", "test", "val", "val"]),
        [(3, "split", "patient 'P1' is in more than one split (train: rows 1, 2; test: row 3)")],
    ),
    "unknown split": (
        _with_split(["train", "train", "train", "holdout", "holdout"]),
        [(4, "split", "unknown value 'holdout'"), (5, "split", "unknown value 'holdout'")],
    ),
    "partly filled split": (
        _with_split(["train", "train", "train", "", "val"]),
        [(None, "split", "split is empty on 1 of 5 rows"), (4, "split", "empty split while other rows")],
    ),
    "unknown modality": (_set(1, "modality", "xray"), [(1, "modality", "unknown value 'xray'")]),
    "missing file": (
        _set(5, "path", "nowhere/e.mp4"),
        [(None, "path", "1 of 5 files missing (row 5)"), (5, "path", "file not found")],
    ),
}


@pytest.mark.parametrize("kind", list(PROBLEM_KINDS))
def test_each_problem_kind_is_reported_with_its_row(tmp_path: Path, kind: str) -> None:
    for cell in _clean_frame()["path"]:
        (tmp_path / cell).touch()
    mutate, expected = PROBLEM_KINDS[kind]
    problems = validate_manifest(mutate(_clean_frame()), SF, tmp_path)
    assert [(p.row, p.key) for p in problems] == [(row, key) for row, key, _ in expected]
    for problem, (_, _, message) in zip(problems, expected, strict=True):
        assert message in problem.message


def test_clean_frame_has_no_problems(tmp_path: Path) -> None:
    for cell in _clean_frame()["path"]:
        (tmp_path / cell).touch()
    assert validate_manifest(_clean_frame(), SF, tmp_path) == []


def test_integer_scale_rejects_fractional_scores(tmp_path: Path) -> None:
    frame = _clean_frame()
    frame["score"] = ["20", "20.5", "30", "0", "31"]
    problems = validate_manifest(frame, get_scale("mmse"), tmp_path, check_files=False)
    assert [(p.row, p.key) for p in problems] == [(2, "score"), (5, "score")]
    assert "not an integer" in problems[0].message


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    frame = _clean_frame()
    for mutate, _ in (
        PROBLEM_KINDS[k] for k in ("non-finite score", "unparseable visit", "duplicate scan id")
    ):
        frame = mutate(frame)
    path = _write(tmp_path, frame)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, SF)
    assert [p.split(",")[0] for p in caught.value.problems] == ["row 2", "row 3", "row 4"]
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert "3 problem(s)" in message


def test_missing_files_are_counted_then_listed(tmp_path: Path) -> None:
    n = ROWS_SHOWN + 3
    frame = pd.DataFrame(
        {
            "patient_id": [f"P{i}" for i in range(n)],
            "scan_id": [f"s{i}" for i in range(n)],
            "path": [f"s{i}.mp4" for i in range(n)],
            "visit": ["1"] * n,
            "score": ["200"] * n,
        }
    )
    (tmp_path / "s0.mp4").touch()  # one present, the rest missing
    problems = validate_manifest(frame, SF, tmp_path)
    assert str(problems[0]).startswith(f"manifest, column 'path': {n - 1} of {n} files missing")
    assert [p.row for p in problems[1:]] == list(range(2, 2 + ROWS_SHOWN))
    assert validate_manifest(frame, SF, tmp_path, check_files=False) == []


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    elsewhere = tmp_path / "data"
    elsewhere.mkdir()
    frame = _clean_frame()
    frame.loc[0, "path"] = str(elsewhere / "abs.mp4")
    (elsewhere / "abs.mp4").touch()
    manifest = load_manifest(_write(tmp_path, frame), SF)
    assert manifest.records[0].path == elsewhere / "abs.mp4"


def test_problem_text_names_row_and_column() -> None:
    assert str(Problem(7, "score", "bad")) == "row 7, column 'score': bad"
    assert str(Problem(None, "path", "3 missing")) == "manifest, column 'path': 3 missing"


@pytest.mark.parametrize("name", ["m.csv", "m.parquet"])
def test_split_manifest_round_trips_and_rebases_paths(tmp_path: Path, name: str) -> None:
    manifest = load_manifest(_write(tmp_path, _clean_frame(), name=name), SF)
    split = manifest.with_splits({"P1": "train", "P2": "test"})
    assert [r.split for r in split.records] == ["train"] * 3 + ["test"] * 2
    assert manifest.records[0].split is None  # the original is unchanged
    out = write_manifest(split, tmp_path / "sub" / name)
    reread = load_manifest(out, SF)
    assert reread.has_complete_split
    assert [r.path for r in reread.records] == [r.path.resolve() for r in manifest.records]
    assert [r.split for r in reread.records] == [r.split for r in split.records]
    assert [r.extra["note"] for r in reread.records] == ["x", "y", "z", "w", "v"]
    assert [r.visit_order for r in reread.records] == [r.visit_order for r in manifest.records]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [name]  # no temp file left behind


def test_with_splits_requires_every_patient(tmp_path: Path) -> None:
    manifest = load_manifest(_write(tmp_path, _clean_frame()), SF)
    with pytest.raises(ManifestError, match="'P2'"):
        manifest.with_splits({"P1": "train"})
    with pytest.raises(ManifestError, match="unknown split 'dev'"):
        manifest.with_splits({"P1": "train", "P2": "dev"})


def test_by_split(tmp_path: Path) -> None:
    manifest = load_manifest(_write(tmp_path, _clean_frame()), SF).with_splits({"P1": "val", "P2": "test"})
    assert [r.scan_id for r in manifest.by_split("val")] == ["a", "b", "c"]
    assert manifest.by_split("train") == []
    with pytest.raises(ValueError, match="unknown split"):
        manifest.by_split("dev")


def test_parquet_with_typed_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "patient_id": ["P1", "P1"],
            "scan_id": ["a", "b"],
            "path": ["a.nii", "b.nii"],
            "visit": np.array([1, 2], dtype=np.int64),
            "score": np.array([28.0, 25.0]),
            "split": [None, None],
        }
    )
    manifest = load_manifest(_write(tmp_path, frame, name="m.parquet"), get_scale("mmse"))
    assert [(r.visit_order, r.score, r.split) for r in manifest.records] == [
        (1.0, 28.0, None),
        (2.0, 25.0, None),
    ]


def test_unreadable_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(tmp_path / "none.csv", SF)
    (tmp_path / "m.xlsx").touch()
    with pytest.raises(ManifestError, match=r"unsupported manifest type '\.xlsx'"):
        load_manifest(tmp_path / "m.xlsx", SF)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "empty.csv", SF)


def test_manifest_from_frame_without_files(tmp_path: Path) -> None:
    manifest = manifest_from_frame(_clean_frame(), SF, root=tmp_path, check_files=False)
    assert len(manifest.records) == 5
    assert manifest.source == tmp_path


def test_latent_column_is_read_and_checked(tmp_path: Path) -> None:
    from learner.data.provenance import latent_values

    frame = _clean_frame().assign(latent=["0.1", "0.25", "-1e-3", "0.5", "1"])
    manifest = load_manifest(_write(tmp_path, frame), SF)
    assert [r.latent for r in manifest.records] == [0.1, 0.25, -0.001, 0.5, 1.0]
    assert latent_values(manifest) == {"a": 0.1, "b": 0.25, "c": -0.001, "d": 0.5, "e": 1.0}
    assert latent_values(load_manifest(_write(tmp_path, _clean_frame(), "plain.csv"), SF)) is None  # real
    bad = _clean_frame().assign(latent=["0.1", "high", "", "inf", "1"])
    with pytest.raises(ManifestError) as caught:
        load_manifest(_write(tmp_path, bad, "bad.csv"), SF)
    text = "\n".join(caught.value.problems)
    assert "row 2, column 'latent': 'high' is not a number" in text
    assert "row 4, column 'latent': 'inf' is not a finite number" in text
    assert "row 3, column 'latent'" not in text  # optional: an empty cell is no value, not a problem


def test_patient_ids_written_differently_are_one_patient_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import unicodedata

    nfc = unicodedata.normalize("NFC", "Müller")
    nfd = unicodedata.normalize("NFD", "Müller")
    frame = _clean_frame()
    frame["patient_id"] = [nfc, nfd, nfc + "\u200b", " P2", "P2  "]  # NFD, a zero-width space, spaces
    with caplog.at_level("WARNING", logger="learner"):
        manifest = load_manifest(_write(tmp_path, frame), SF)
    assert {r.patient_id for r in manifest.records} == {nfc, "P2"}
    assert len(manifest.patients()) == 2
    assert "1 patient ID(s) written differently are one patient" in caplog.text  # spaces: stripped silently
    assert ascii(nfd) in caplog.text  # the invisible difference shown


def test_one_file_for_two_patients_is_refused(tmp_path: Path) -> None:
    frame = _clean_frame()
    frame.loc[3, "path"] = "a.mp4"  # P2's scan d points at P1's file
    problems = validate_manifest(frame, SF, tmp_path, check_files=False)
    assert [(p.row, p.key) for p in problems] == [(4, "path")]
    assert "file 'a.mp4' is also patient 'P1''s scan (row 1)" in problems[0].message


def test_one_file_written_absolute_and_relative_is_still_one_file(tmp_path: Path) -> None:
    """The same clip, relative on one row and absolute on another (or through a symbolic link), is one file:
    comparing the cells as written let it sit in train and in test."""
    frame = _clean_frame()
    frame.loc[3, "path"] = str(tmp_path / "a.mp4")  # P2's scan d is P1's a.mp4, written absolute
    (tmp_path / "a.mp4").touch()
    (tmp_path / "link.mp4").symlink_to(tmp_path / "a.mp4")
    frame.loc[4, "path"] = "sub/../link.mp4"  # and P2's scan e is the same file through a link
    (tmp_path / "sub").mkdir()
    problems = validate_manifest(frame, SF, tmp_path, check_files=False)
    assert [(p.row, p.key) for p in problems] == [(4, "path"), (5, "path")]
    assert f"file {str(tmp_path / 'a.mp4')!r} is also patient 'P1''s scan (row 1" in problems[0].message
    assert "file 'sub/../link.mp4' is also patient 'P1''s scan (row 1" in problems[1].message


def test_whole_float_visits_of_a_parquet_survive_data_split(tmp_path: Path) -> None:
    """Parquet stores visits 1.0, 2.0 (an integer column with nulls elsewhere becomes float): they read as
    integers, and the CSV that ``learner data split`` writes (cells ``1.0``) loads with the same visits."""
    from learner import api

    frame = _clean_frame().iloc[:3].assign(visit=np.array([2.0, 1.0, 3.0]))
    parquet = load_manifest(_write(tmp_path, frame, name="m.parquet"), SF)
    api.split_manifest(parquet, tmp_path / "split.csv", counts=(1, 0, 0))
    assert "2.0" in pd.read_csv(tmp_path / "split.csv", dtype=str)["visit"].tolist()  # as pandas writes it
    reread = load_manifest(tmp_path / "split.csv", SF)
    assert [r.visit_order for r in reread.records] == [r.visit_order for r in parquet.records] == [2, 1, 3]
    assert [r.scan_id for r in reread.patients()["P1"]] == ["b", "a", "c"]


@pytest.mark.parametrize(("visit", "order"), [("3.0", 3.0), ("+3.00", 3.0), ("-2.0", -2.0), ("7.", 7.0)])
def test_a_whole_decimal_visit_is_an_integer_visit(tmp_path: Path, visit: str, order: float) -> None:
    frame = _clean_frame()
    frame.loc[0, "visit"] = visit
    manifest = manifest_from_frame(frame, SF, root=tmp_path, check_files=False)
    assert manifest.records[0].visit_order == order  # and no "mixes integer and date visits" for P1


@pytest.mark.parametrize("visit", ["1.5", "2.000001", "1.0e3", "."])
def test_a_fractional_visit_is_refused(tmp_path: Path, visit: str) -> None:
    problems = validate_manifest(_set(2, "visit", visit)(_clean_frame()), SF, tmp_path, check_files=False)
    assert [(p.row, p.key) for p in problems] == [(2, "visit")]
    assert f"visit {visit!r} is neither an ISO date (YYYY-MM-DD) nor an integer" in problems[0].message


def test_rows_are_numbered_by_line_after_blank_lines(tmp_path: Path) -> None:
    """Row r is on line r + 1 even below blank lines (pandas drops them, so the rows after them were once
    numbered one short); blank lines, whitespace-only ones and rows of empty cells hold no scan."""
    lines = _write(tmp_path, _clean_frame()).read_text().splitlines()
    lines[3:3] = ["", "   ", ",,,,,,,"]  # three blank rows between data rows 2 and 3 (now 6)
    lines[7] = lines[7].replace(",100,", ",high,")  # data row 4 of the frame: line 8, row 7
    path = tmp_path / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, SF)
    assert caught.value.problems == ["row 7, column 'score': score 'high' is not a number"]
    assert lines[8 - 1].startswith("P2,d,")  # row 7 is line 8

    lines[7] = lines[7].replace(",high,", ",100,")
    lines.append("P3,a,f.mp4,1,200,,,")  # row 9: a repeated scan_id names the first row by its number
    (tmp_path / "f.mp4").touch()
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, SF)
    assert caught.value.problems == ["row 9, column 'scan_id': duplicate scan_id 'a' (first at row 1)"]

    path.write_text("\n".join(lines[:-1]) + "\n")
    manifest = load_manifest(path, SF)
    assert [r.row for r in manifest.records] == [1, 2, 6, 7, 8]
    assert list(manifest.frame.index) == [0, 1, 2, 3, 4]  # records[i] is the frame's row i


def test_header_names_are_stripped(tmp_path: Path) -> None:
    """``score `` (a space typed after the name) is the column ``score``; ``score`` and ``score `` are one
    column named twice."""
    path = _write(tmp_path, _clean_frame())
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("score", "score ").replace("patient_id", " patient_id")
    path.write_text("\n".join(lines) + "\n")
    manifest = load_manifest(path, SF)
    assert [r.score for r in manifest.records] == [300.0, 250.5, 480.0, 100.0, 0.0]
    assert list(manifest.frame.columns)[:5] == ["patient_id", "scan_id", "path", "visit", "score"]

    lines[0] += ",score"
    path.write_text("\n".join(f"{line},1" if i else line for i, line in enumerate(lines)) + "\n")
    with pytest.raises(ManifestError, match="the header names the column 'score' twice"):
        load_manifest(path, SF)

    parquet = _clean_frame().rename(columns={"score": "score "}).assign(**{"visit ": "1"})
    with pytest.raises(ManifestError, match="the header names the column 'visit' twice"):
        load_manifest(_write(tmp_path, parquet, name="m.parquet"), SF)
    loaded = load_manifest(_write(tmp_path, parquet.drop(columns="visit "), name="n.parquet"), SF)
    assert [r.score for r in loaded.records] == [300.0, 250.5, 480.0, 100.0, 0.0]


def test_a_frame_folder_of_hidden_files_only_has_no_frames(tmp_path: Path) -> None:
    """macOS's ``._frame1.png`` beside a copied frame is metadata, not a frame: a folder holding only such
    files is a problem of its row in ``data check``, as it is when ``data cache`` reads it."""
    frame = _clean_frame()
    for cell in frame["path"]:
        (tmp_path / cell).touch()
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "._frame1.png").write_bytes(b"\0\5\26\7 Mac OS X")
    frame.loc[0, "path"] = "clip"
    problems = validate_manifest(frame, SF, tmp_path)
    assert [(p.row, p.key) for p in problems] == [(None, "path"), (1, "path")]
    assert f"no frame files in {folder}" in problems[1].message
