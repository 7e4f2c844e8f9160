"""The phantom MRI cohort: ADNIMERGE format, the ADNI adapter, orientation, determinism, MMSE and anatomy."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import fields
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from learner.data.adni import adnimerge_to_manifest
from learner.data.manifest import load_manifest
from learner.data.phantom.mri import (
    TABLE_COLUMNS,
    MriSubject,
    diagnosis,
    draw_mri_latents,
    generate_mri_cohort,
    image_name,
    render_mri_volume,
)
from learner.data.scales import get_scale
from learner.errors import ConfigError, LearnerError

MMSE = get_scale("mmse")
TINY = {"patients": (6, 3, 3), "size": 48}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_mri_cohort(tmp_path_factory.mktemp("mri") / "cohort", seed=0, workers=1, **TINY)


def _table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"MMSE": "Int64", "IMAGEUID": "Int64"})


def test_adnimerge_format(cohort: Path) -> None:
    table = _table(cohort)
    assert tuple(table.columns) == TABLE_COLUMNS  # no split column: ADNI's split is made later
    assert table.PTID.nunique() == sum(TINY["patients"])
    assert table.PTID.map(lambda p: re.fullmatch(r"\d{3}_S_\d{4}", p) is not None).all()
    assert (table.PTID.str[-4:].astype(int) == table.RID).all()
    assert set(table.VISCODE) <= {"bl", "m06", "m12", "m18", "m24"}
    scored = table.MMSE.dropna()
    assert scored.between(0, 30).all()
    assert (table.DX[table.MMSE.notna()] == [diagnosis(m) for m in scored]).all()
    assert table.DX[table.MMSE.isna()].isna().all()
    assert table.IMAGEUID.dropna().is_unique
    baseline = table[table.VISCODE == "bl"].set_index("PTID").EXAMDATE.map(dt.date.fromisoformat)
    for row in table[table.VISCODE == "m06"].itertuples():
        gap = (dt.date.fromisoformat(row.EXAMDATE) - baseline[row.PTID]).days
        assert 182 - 14 <= gap <= 182 + 14  # six months apart


def test_every_patient_has_two_scored_scans_and_extra_rows_exercise_the_adapter(cohort: Path) -> None:
    table = _table(cohort)
    usable = table[table.MMSE.notna() & table.IMAGEUID.notna()]
    assert usable.groupby("PTID").size().min() >= 2
    assert set(usable.VISCODE) <= {"bl", "m06", "m12"}
    no_mmse, no_image = table[table.MMSE.isna()], table[table.IMAGEUID.isna()]
    assert len(no_mmse) > 0
    assert len(no_image) > 0
    images = {p.name for p in (cohort.parent / "images").iterdir()}
    expected = {image_name(r.PTID, int(r.IMAGEUID)) for r in table[table.IMAGEUID.notna()].itertuples()}
    assert images == expected

    report = adnimerge_to_manifest(cohort, cohort.parent / "images", cohort.parent / "manifest.csv")
    assert report.scans == len(usable)
    assert report.dropped == {"no MMSE": len(no_mmse), "no image": len(no_image)}
    manifest = load_manifest(cohort.parent / "manifest.csv", MMSE)
    assert sorted(r.score for r in manifest.records) == sorted(usable.MMSE.astype(float))


def test_canonical_reorientation_recovers_the_rendered_head(cohort: Path) -> None:
    """Each file's affine matches its voxel order: as_closest_canonical gives back the RAS render."""
    truth = pd.read_csv(cohort.parent / "ground_truth.csv").dropna(subset=["IMAGEUID"])
    codes = set()
    for row in truth.drop_duplicates("PTID").to_dict("records"):
        ptid, uid = row["PTID"], int(row["IMAGEUID"])
        image = nib.load(cohort.parent / "images" / image_name(ptid, uid))
        codes.add(nib.aff2axcodes(image.affine))
        subject = MriSubject(**{f.name: row[f.name] for f in fields(MriSubject)})
        expected = render_mri_volume(
            row["atrophy"], subject, size=TINY["size"], rng=np.random.default_rng(int(row["render_seed"]))
        )
        canonical = nib.as_closest_canonical(image)
        assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
        error = np.abs(np.asarray(canonical.dataobj, dtype=float) - expected)
        assert error.max() <= 0.5 + 1e-3  # int16 rounding only
    assert len(codes) > 1  # orientation varies by patient


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    small = {"patients": (2, 1, 1), "size": 24, "workers": 1}
    first = generate_mri_cohort(tmp_path / "first", seed=0, **small)
    again = generate_mri_cohort(tmp_path / "again", seed=0, **small)
    other = generate_mri_cohort(tmp_path / "other", seed=1, **small)
    assert again.read_bytes() == first.read_bytes()
    images = sorted((first.parent / "images").iterdir())
    for path in images:
        assert (again.parent / "images" / path.name).read_bytes() == path.read_bytes()  # gzip mtime is 0
    assert other.read_bytes() != first.read_bytes()
    volume = np.asarray(nib.load(images[0]).dataobj)
    assert not any(
        np.array_equal(volume, np.asarray(nib.load(p).dataobj)) for p in (other.parent / "images").iterdir()
    )


def test_another_seed_keeps_the_manifest_the_quick_start_writes_into_the_cohort(tmp_path: Path) -> None:
    """docs/phantom.md converts the table into ``<cohort>/manifest.csv``: a cohort of another seed would have
    replaced (deleted) it, so it is refused, naming the manifest; without it the cohort is replaced."""
    small = {"patients": (2, 1, 1), "size": 24, "workers": 1}
    table = generate_mri_cohort(tmp_path / "mri", seed=0, **small)
    manifest = adnimerge_to_manifest(table, table.parent / "images", table.parent / "manifest.csv").manifest
    written = manifest.read_bytes()
    with pytest.raises(LearnerError, match=r"holds manifest\.csv, which the phantom generator did not write"):
        generate_mri_cohort(tmp_path / "mri", seed=1, **small)
    assert manifest.read_bytes() == written
    assert '"seed": 0' in (table.parent / "phantom.json").read_text()

    manifest.rename(tmp_path / "manifest.csv")
    generate_mri_cohort(tmp_path / "mri", seed=1, **small)
    assert '"seed": 1' in (table.parent / "phantom.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv", "mri"]


def test_a_cohort_above_1498_patients_gets_unique_rids_and_one_above_9998_is_refused_first(
    tmp_path: Path,
) -> None:
    """RIDs were drawn without replacement from 2–1499: more patients crashed inside the staging folder."""
    table = draw_mri_latents((1000, 499, 1), seed=0)
    rids = table.drop_duplicates("PTID")["RID"]
    assert len(rids) == rids.nunique() == 1500
    assert table["PTID"].str.fullmatch(r"\d{3}_S_\d{4}").all()
    with pytest.raises(ConfigError, match=r"patients: at most 9998 in all .* got 9999"):
        generate_mri_cohort(tmp_path / "big", patients=(9000, 999, 0), workers=1)
    assert list(tmp_path.iterdir()) == []  # refused before any folder is made


def test_ventricles_measured_on_the_volumes_grow_with_atrophy(cohort: Path) -> None:
    """Dark (CSF-like) voxels in a central box, where the lateral ventricles sit, count more with atrophy."""
    truth = pd.read_csv(cohort.parent / "ground_truth.csv").dropna(subset=["IMAGEUID"])
    dark, atrophy = [], []
    for row in truth.itertuples():
        path = cohort.parent / "images" / image_name(row.PTID, int(row.IMAGEUID))
        image = nib.as_closest_canonical(nib.load(path))
        volume = np.asarray(image.dataobj, dtype=float)
        voxels = np.indices(volume.shape).reshape(3, -1).T
        mm = nib.affines.apply_affine(image.affine, voxels).reshape(*volume.shape, 3)  # RAS mm
        # a box well inside every brain, around the ventricles
        box = (np.abs(mm[..., 0]) < 32) & (np.abs(mm[..., 1]) < 45) & (np.abs(mm[..., 2] - 10) < 30)
        white = np.percentile(volume[box], 90)
        dark.append(int((volume[box] < 0.4 * white).sum()))
        atrophy.append(row.atrophy)
    # head size, pose and CSF contrast vary by patient too, so the rank correlation is strong, not perfect
    assert spearmanr(atrophy, dark).statistic > 0.5


def test_default_cohort_mirrors_table_1_and_mmse_falls_with_atrophy() -> None:
    table = draw_mri_latents()
    usable = table[table.MMSE.notna() & table.IMAGEUID.notna()]
    assert usable.PTID.nunique() == 639
    assert len(usable) == 1856  # Table 1: 960 + 480 + 416 scans
    assert (usable.MMSE.round() == usable.MMSE).all()
    assert usable.MMSE.between(0, 30).all()
    assert spearmanr(usable.atrophy, usable.MMSE.astype(float)).statistic < -0.5
    assert (usable.sort_values("EXAMDATE").groupby("PTID").atrophy.diff().dropna() >= 0).all()


def test_consecutive_mmse_pairs_give_all_three_change_classes() -> None:
    usable = draw_mri_latents((60, 30, 30), seed=4).dropna(subset=["MMSE", "IMAGEUID"])
    earlier, later = [], []
    for _, visits in usable.sort_values("EXAMDATE").groupby("PTID"):
        scores = visits.MMSE.astype(float).to_numpy()
        earlier += list(scores[:-1])
        later += list(scores[1:])
    counts = np.bincount(MMSE.change_labels(np.array(earlier), np.array(later)), minlength=3)
    assert (counts >= 0.05 * counts.sum()).all()
