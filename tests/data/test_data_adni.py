"""ADNIMERGE → manifest on a small table written here (never real ADNI data) with placeholder files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from learner.data.adni import ADNIMERGE_COLUMNS, OUTPUT_COLUMNS, adnimerge_to_manifest, normalise_viscode
from learner.data.manifest import load_manifest
from learner.data.scales import get_scale
from learner.errors import ManifestError

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
