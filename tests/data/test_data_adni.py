"""ADNIMERGE → manifest on a small table written here (never real ADNI data) with placeholder files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from learner.data.adni import ADNIMERGE_COLUMNS, OUTPUT_COLUMNS, adnimerge_to_manifest, normalise_viscode
from learner.data.manifest import load_manifest
from learner.data.scales import get_scale
from learner.errors import ConfigError, ManifestError

# RID, PTID, VISCODE, EXAMDATE, MMSE, DX, IMAGEUID — and what should happen to the row
ROWS = [
    ("295", "002_S_0295", "bl", "2006-04-18", "28", "CN", "13722"),  # kept: ADNI download name, nested
    ("295", "002_S_0295", "m06", "2006-11-02", "27", "CN", "137220.0"),  # kept: uid written as a float
    ("295", "002_S_0295", "m12", "2007-05-25", "", "CN", "40000"),  # dropped: no MMSE
    ("413", "002_S_0413", "sc", "2006-05-02", "29", "CN", ""),  # kept: PTID + visit name (sc → bl)
    ("413", "002_S_0413", "m6", "2006-11-15", "24", "MCI", ""),  # kept: PTID + visit name 002_S_0413_m06.nii
    ("413", "002_S_0413", "m12", "2007-06-01", "23", "MCI", "55555"),  # dropped: no image
    ("559", "002_S_0559", "scmri", "2006-06-01", "30", "CN", "77777"),  # kept: phantom name
    ("559", "002_S_0559", "bl", "2006-06-02", "30", "CN", "77777"),  # dropped: duplicate visit (bl again)
    ("559", "002_S_0559", "uns1", "2006-07-01", "30", "CN", "77777"),  # dropped: unknown VISCODE
    ("559", "002_S_0559", "m24", "", "30", "CN", "77777"),  # dropped: no EXAMDATE
    ("559", "002_S_0559", "m36", "2009-06-01", "31", "CN", "77777"),  # dropped: MMSE out of range
    ("559", "002_S_0559", "m48", "2010-06-01", "28.5", "CN", "77777"),  # dropped: MMSE not a whole number
    ("600", "", "bl", "2006-06-01", "25", "AD", "88888"),  # dropped: no PTID
]


def _write_cohort(tmp_path: Path, rows: list[tuple[str, ...]]) -> tuple[Path, Path]:
    table = pd.DataFrame(rows, columns=list(ADNIMERGE_COLUMNS))
    table["AGE"] = "74.3"  # real ADNIMERGE has many more columns; they are ignored
    csv = tmp_path / "ADNIMERGE.csv"
    table.to_csv(csv, index=False)
    images = tmp_path / "images"
    nested = images / "002_S_0295" / "MPRAGE" / "2006-04-18" / "I13722"
    nested.mkdir(parents=True)
    (nested / "ADNI_002_S_0295_MR_MPRAGE_br_raw_20060418_I13722.nii").touch()
    (nested / "ADNI_002_S_0295_MR_MPRAGE_br_raw_20060418_I13722.json").touch()  # sidecar: NIfTI wins
    (images / "002_S_0413_sc.nii.gz").touch()
    (images / "002_S_0413_m06.nii").touch()
    (images / "ADNI_002_S_0559_MR_phantom_I77777.nii.gz").touch()
    (images / "ADNI_002_S_0295_MR_phantom_I137220.nii.gz").touch()  # I137220 is not I13722
    (images / "AAA_I77777x.nii").touch()  # sorts first but holds no token: "x" is no delimiter
    return csv, images


def test_adnimerge_to_manifest(tmp_path: Path) -> None:
    csv, images = _write_cohort(tmp_path, ROWS)
    out = tmp_path / "out" / "manifest.csv"
    report = adnimerge_to_manifest(csv, images, out)
    assert report.rows == len(ROWS)
    assert report.scans == 5
    assert report.patients == 3
    assert report.matched_by_imageuid == 3
    assert report.matched_by_visit == 2
    assert report.dropped == {
        "no MMSE": 1,
        "no image": 1,
        "duplicate visit": 1,
        "unknown VISCODE": 1,
        "no EXAMDATE": 1,
        "MMSE out of range": 1,
        "MMSE not a whole number": 1,
        "no PTID": 1,
    }
    assert report.manifest == out

    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(frame.columns) == list(OUTPUT_COLUMNS)
    assert frame["scan_id"].tolist() == [
        "002_S_0295_bl", "002_S_0295_m06", "002_S_0413_bl", "002_S_0413_m06", "002_S_0559_bl",
    ]  # fmt: skip
    assert frame["path"].tolist() == [
        "../images/002_S_0295/MPRAGE/2006-04-18/I13722/ADNI_002_S_0295_MR_MPRAGE_br_raw_20060418_I13722.nii",
        "../images/ADNI_002_S_0295_MR_phantom_I137220.nii.gz",
        "../images/002_S_0413_sc.nii.gz",
        "../images/002_S_0413_m06.nii",
        "../images/ADNI_002_S_0559_MR_phantom_I77777.nii.gz",
    ]
    assert frame["visit"].tolist() == ["2006-04-18", "2006-11-02", "2006-05-02", "2006-11-15", "2006-06-01"]
    assert frame["month"].tolist() == ["0", "6", "0", "6", "0"]
    assert frame["imageuid"].tolist() == ["13722", "137220", "", "", "77777"]
    assert frame["dx"].tolist() == ["CN", "CN", "CN", "MCI", "CN"]
    assert set(frame["modality"]) == {"volume"}

    manifest = load_manifest(out, get_scale("mmse"))  # a valid manifest whose files all exist
    assert [r.score for r in manifest.records] == [28.0, 27.0, 29.0, 24.0, 30.0]
    assert [len(v) for v in manifest.patients().values()] == [2, 2, 1]


def test_float_formatted_imageuid_matches(tmp_path: Path) -> None:
    csv, images = _write_cohort(tmp_path, [("295", "002_S_0295", "bl", "2006-04-18", "28", "CN", "13722.0")])
    report = adnimerge_to_manifest(csv, images, tmp_path / "m.csv")
    assert (report.scans, report.matched_by_imageuid) == (1, 1)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("bl", ("bl", 0)),
        ("sc", ("bl", 0)),
        ("SCMRI", ("bl", 0)),
        (" m06 ", ("m06", 6)),
        ("m6", ("m06", 6)),
        ("m120", ("m120", 120)),
        ("uns1", None),
        ("nv", None),
        ("m", None),
        ("", None),
    ],
)
def test_normalise_viscode(code: str, expected: tuple[str, int] | None) -> None:
    assert normalise_viscode(code) == expected


def test_bad_inputs(tmp_path: Path) -> None:
    csv, images = _write_cohort(tmp_path, ROWS[:1])
    with pytest.raises(ManifestError, match="ADNIMERGE table not found"):
        adnimerge_to_manifest(tmp_path / "none.csv", images, tmp_path / "m.csv")
    with pytest.raises(ManifestError, match="images folder not found"):
        adnimerge_to_manifest(csv, tmp_path / "nope", tmp_path / "m.csv")
    pd.DataFrame({"RID": ["1"], "PTID": ["x"]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(
        ManifestError, match=r"missing ADNIMERGE column.*VISCODE, EXAMDATE, MMSE, DX, IMAGEUID"
    ):
        adnimerge_to_manifest(tmp_path / "short.csv", images, tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()


def test_no_row_kept_writes_nothing_and_names_the_folder_and_the_drops(tmp_path: Path) -> None:
    """A header-only manifest would only fail later ("no scans"): the conversion fails now instead."""
    csv, _ = _write_cohort(tmp_path, ROWS)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "m.csv"
    with pytest.raises(ManifestError) as raised:
        adnimerge_to_manifest(csv, empty, out)
    message = str(raised.value)
    assert "\n" not in message
    assert str(empty) in message
    assert message.startswith(f"{csv}: no row kept with the images in {empty} ({len(ROWS)} rows dropped; ")
    assert "no image: 7, " in message
    assert "no MMSE: 1" in message
    assert "; no manifest written" in message
    assert not out.exists()

    pd.DataFrame(columns=list(ADNIMERGE_COLUMNS)).to_csv(csv, index=False)  # a header-only table
    with pytest.raises(ManifestError, match=r"no row kept .* \(the table has no rows\)"):
        adnimerge_to_manifest(csv, empty, out)
    assert not out.exists()


# A 1-visit, a 2-visit and a 4-visit patient (rows out of time order), and a 3-visit one of whose visits has
# no MMSE: the selection counts scored visits with an image.
SELECTION_ROWS = [
    ("1", "011_S_0001", "bl", "2006-01-01", "29", "CN", "101"),
    ("2", "011_S_0002", "m06", "2006-08-01", "27", "MCI", "202"),
    ("2", "011_S_0002", "bl", "2006-02-01", "28", "MCI", "201"),
    ("4", "011_S_0004", "m18", "2007-09-01", "22", "AD", "404"),
    ("4", "011_S_0004", "bl", "2006-03-01", "25", "AD", "401"),
    ("4", "011_S_0004", "m12", "2007-03-01", "23", "AD", "403"),
    ("4", "011_S_0004", "m06", "2006-09-01", "24", "AD", "402"),
    ("5", "011_S_0005", "bl", "2006-04-01", "30", "CN", "501"),
    ("5", "011_S_0005", "m06", "2006-10-01", "", "CN", "502"),  # no MMSE: the patient has one scored visit
    ("5", "011_S_0005", "m12", "2007-04-01", "", "CN", "503"),
]


def _selection_cohort(tmp_path: Path) -> tuple[Path, Path]:
    csv = tmp_path / "ADNIMERGE.csv"
    pd.DataFrame(SELECTION_ROWS, columns=list(ADNIMERGE_COLUMNS)).to_csv(csv, index=False)
    images = tmp_path / "images"
    images.mkdir()
    for row in SELECTION_ROWS:
        (images / f"ADNI_{row[1]}_MR_phantom_I{row[6]}.nii.gz").touch()
    return csv, images


def _scan_ids(path: Path) -> list[str]:
    return pd.read_csv(path, dtype=str, keep_default_na=False)["scan_id"].tolist()


def test_the_default_keeps_every_patient_and_visit(tmp_path: Path) -> None:
    csv, images = _selection_cohort(tmp_path)
    report = adnimerge_to_manifest(csv, images, tmp_path / "m.csv")
    assert (report.scans, report.patients) == (8, 4)
    assert report.dropped == {"no MMSE": 2}
    assert report.dropped_patients == {}


def test_the_papers_cohort_selection(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--min-visits 2 --max-visits 3: "patients with at least two visits", "up to three MRI scans"."""
    csv, images = _selection_cohort(tmp_path)
    out = tmp_path / "m.csv"
    with caplog.at_level("INFO", logger="learner.data.adni"):
        report = adnimerge_to_manifest(csv, images, out, min_visits=2, max_visits=3)
    assert _scan_ids(out) == [
        "011_S_0002_bl", "011_S_0002_m06", "011_S_0004_bl", "011_S_0004_m06", "011_S_0004_m12",
    ]  # fmt: skip
    assert (report.rows, report.scans, report.patients) == (10, 5, 2)
    assert report.dropped == {"no MMSE": 2, "fewer than 2 visits": 2, "after the first 3 visits": 1}
    assert report.dropped_patients == {"fewer than 2 visits": 2}  # 011_S_0001 and 011_S_0005
    assert report.rows == report.scans + sum(report.dropped.values())
    assert "dropped 2 patient(s) (2 scans) with fewer than 2 visits" in caplog.text
    assert "dropped 1 scan(s) after each patient's first 3 visits" in caplog.text


@pytest.mark.parametrize(
    ("min_visits", "max_visits", "kept"),
    [
        (4, None, ["011_S_0004_bl", "011_S_0004_m06", "011_S_0004_m12", "011_S_0004_m18"]),
        (1, 1, ["011_S_0001_bl", "011_S_0002_bl", "011_S_0004_bl", "011_S_0005_bl"]),
        (2, 2, ["011_S_0002_bl", "011_S_0002_m06", "011_S_0004_bl", "011_S_0004_m06"]),
    ],
)
def test_min_and_max_visits_alone(
    tmp_path: Path, min_visits: int, max_visits: int | None, kept: list[str]
) -> None:
    csv, images = _selection_cohort(tmp_path)
    adnimerge_to_manifest(csv, images, tmp_path / "m.csv", min_visits=min_visits, max_visits=max_visits)
    assert _scan_ids(tmp_path / "m.csv") == kept


def test_a_selection_that_keeps_nobody_writes_nothing(tmp_path: Path) -> None:
    csv, images = _selection_cohort(tmp_path)
    with pytest.raises(ManifestError, match=r"no row kept .*fewer than 5 visits: 8"):
        adnimerge_to_manifest(csv, images, tmp_path / "m.csv", min_visits=5)
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize(
    ("min_visits", "max_visits", "message"),
    [
        (0, None, "min_visits must be at least 1, got 0"),
        (-1, 3, "min_visits must be at least 1, got -1"),
        (1, 0, "max_visits must be at least 1, got 0"),
        (3, 2, r"min_visits \(3\) must not exceed max_visits \(2\)"),
    ],
)
def test_bad_visit_limits(tmp_path: Path, min_visits: int, max_visits: int | None, message: str) -> None:
    csv, images = _selection_cohort(tmp_path)
    with pytest.raises(ConfigError, match=f"^{message}$"):
        adnimerge_to_manifest(csv, images, tmp_path / "m.csv", min_visits=min_visits, max_visits=max_visits)
    assert not (tmp_path / "m.csv").exists()
