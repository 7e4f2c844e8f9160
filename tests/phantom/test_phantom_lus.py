"""The phantom LUS cohort: files, manifest, determinism, Table 1 counts, the nuisance-vs-change premise."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from learner.data.manifest import load_manifest
from learner.data.phantom import lus
from learner.data.phantom.lus import (
    MANIFEST_COLUMNS,
    LusNuisance,
    draw_lus_latents,
    draw_patient_nuisance,
    generate_lus_cohort,
    render_lus_clip,
    zone_lesion_seed,
)
from learner.data.provenance import phantom_record
from learner.data.scales import get_scale
from learner.errors import ConfigError, LearnerError

SF = get_scale("sf")
TINY = {"patients": (6, 3, 3), "frames": 4, "size": 32}


def _decode(path: Path) -> np.ndarray:
    """Grey frames (T, H, W) of an mp4, decoded independently of the toolkit's readers."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="gray") for frame in container.decode(video=0)])


def _nuisance(row: dict[str, object]) -> LusNuisance:
    return LusNuisance(**{f.name: row[f.name] for f in dataclasses.fields(LusNuisance)})


@pytest.fixture(scope="module")
def cohort(tiny_lus_manifest: Path) -> Path:
    """The session's tiny LUS cohort (tests/conftest.py), which must be the one of seed 0 and :data:`TINY`."""
    record = json.loads((tiny_lus_manifest.parent / "phantom.json").read_text())
    assert {key: record[key] for key in ("seed", *TINY)} == {
        "seed": 0,
        **TINY,
        "patients": list(TINY["patients"]),
    }
    return tiny_lus_manifest


def test_manifest_validates_and_matches_the_files(cohort: Path) -> None:
    frame = pd.read_csv(cohort)
    assert tuple(frame.columns) == MANIFEST_COLUMNS
    manifest = load_manifest(cohort, SF)  # raises on any invalid row or missing file
    assert len(manifest.records) == len(frame)
    assert {r.modality for r in manifest.records} == {"video"}
    clips = sorted(p.name for p in (cohort.parent / "clips").iterdir())
    assert clips == sorted(Path(p).name for p in frame.path)
    clip = _decode(cohort.parent / frame.path[0])
    assert clip.shape == (TINY["frames"], TINY["size"], TINY["size"])


def test_the_record_reports_see_holds_parameters_not_the_files_written(cohort: Path) -> None:
    stored = json.loads((cohort.parent / "phantom.json").read_text())
    clips = sorted(f"clips/{path.name}" for path in (cohort.parent / "clips").iterdir())
    assert stored["outputs"] == ["clips", *clips, "ground_truth.csv", "manifest.csv"]  # all it wrote
    record = phantom_record(load_manifest(cohort, SF))
    assert record == {key: value for key, value in stored.items() if key != "outputs"}
    assert "outputs" not in (record or {})


def test_split_counts_and_only_test_patients_have_several_days(cohort: Path) -> None:
    frame = pd.read_csv(cohort)
    patients = frame.groupby("split")["patient_id"].nunique()
    assert (patients["train"], patients["val"], patients["test"]) == TINY["patients"]
    days = frame.groupby("patient_id").agg(split=("split", "first"), days=("visit", "nunique"))
    assert (days.loc[days.split != "test", "days"] == 1).all()
    assert (days.loc[days.split == "test", "days"] >= 2).all()
    assert frame.groupby("patient_id")["split"].nunique().max() == 1


def test_a_longitudinal_cohort_gives_every_patient_several_days() -> None:
    paper = draw_lus_latents((20, 6, 6), seed=3)
    longitudinal = draw_lus_latents((20, 6, 6), seed=3, longitudinal=True)
    days = longitudinal.groupby("patient_id").agg(split=("split", "first"), days=("visit", "nunique"))
    assert days["days"].between(2, 3).all()
    assert set(days["split"]) == {"train", "val", "test"}
    # the same patients in the same splits, with Table 1's clip rates: only their days differ
    for frame in (paper, longitudinal):
        assert frame.groupby("split")["patient_id"].nunique().to_dict() == {"train": 20, "val": 6, "test": 6}
    assert len(longitudinal) == len(paper)
    assert draw_lus_latents((20, 6, 6), seed=3, longitudinal=True).equals(longitudinal)  # seeded


def test_one_score_per_patient_visit(cohort: Path) -> None:
    frame = pd.read_csv(cohort)
    assert frame.groupby(["patient_id", "visit"])["score"].nunique().max() == 1
    assert frame.groupby(["patient_id", "visit"])["site"].apply(lambda s: s.is_unique).all()


def test_clip_pixels_are_the_documented_render_of_the_ground_truth(cohort: Path) -> None:
    truth = pd.read_csv(cohort.parent / "ground_truth.csv").set_index("scan_id")
    frame = pd.read_csv(cohort)
    for row in frame.head(3).to_dict("records"):
        latent = truth.loc[row["scan_id"]].to_dict()
        expected = render_lus_clip(
            latent["severity_zone"],
            _nuisance(latent),
            frames=TINY["frames"],
            size=TINY["size"],
            rng=np.random.default_rng(int(latent["render_seed"])),
        )
        decoded = _decode(cohort.parent / row["path"]).astype(float)
        # H.264 at crf 17 is lossy: small mean error, and far below the error against another clip
        assert np.abs(decoded - expected).mean() < 6.0
        assert np.abs(decoded - np.roll(expected, 7, axis=2)).mean() > 2 * np.abs(decoded - expected).mean()


def test_same_seed_same_bytes_and_pixels_other_seed_differs(cohort: Path, tmp_path: Path) -> None:
    again = generate_lus_cohort(tmp_path / "again", seed=0, workers=2, **TINY)  # worker count must not matter
    other = generate_lus_cohort(tmp_path / "other", seed=1, workers=1, **TINY)
    assert again.read_bytes() == cohort.read_bytes()
    truth = "ground_truth.csv"
    assert (again.parent / truth).read_bytes() == (cohort.parent / truth).read_bytes()
    for path in pd.read_csv(cohort).path:
        first, second = cohort.parent / path, again.parent / path
        assert np.array_equal(_decode(first), _decode(second))
        assert first.read_bytes() == second.read_bytes()  # single-threaded x264 is deterministic
    assert other.read_bytes() != cohort.read_bytes()
    first, other_first = (
        cohort.parent / pd.read_csv(cohort).path[0],
        other.parent / pd.read_csv(other).path[0],
    )
    assert not np.array_equal(_decode(first), _decode(other_first))


ENCODE_FOUR_CLIPS = """
import sys
from pathlib import Path
import numpy as np
from learner.data.phantom import lus
table = lus.draw_lus_latents((4, 0, 0), seed=0)
for row in table.to_dict("records"):
    nuisance = lus.LusNuisance(**{name: row[name] for name in lus.LusNuisance.__dataclass_fields__})
    rng = np.random.default_rng(0)
    clip = lus.render_lus_clip(row["severity_zone"], nuisance, frames=4, size=32, rng=rng)
    lus.write_mp4(Path(sys.argv[1]) / (row["scan_id"] + ".mp4"), clip, codec=lus.video_codec())
"""


@pytest.mark.slow  # two child processes that import the toolkit
def test_mp4_bytes_do_not_depend_on_uninitialised_memory(tmp_path: Path) -> None:
    """glibc's MALLOC_PERTURB_ fills fresh and freed heap memory with a chosen byte; an encoder that reads
    uninitialised memory (x264's macroblock-tree lookahead does on 32-px frames) then writes other bytes."""
    for byte in ("17", "238"):
        (tmp_path / byte).mkdir()
        env = {**os.environ, "MALLOC_PERTURB_": byte}
        subprocess.run([sys.executable, "-c", ENCODE_FOUR_CLIPS, str(tmp_path / byte)], env=env, check=True)
    clips = sorted(p.name for p in (tmp_path / "17").iterdir())
    assert len(clips) == len(draw_lus_latents((4, 0, 0), seed=0))
    for name in clips:
        assert (tmp_path / "17" / name).read_bytes() == (tmp_path / "238" / name).read_bytes(), name


def test_complete_cohort_is_reused_and_other_parameters_replace_it(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    manifest = generate_lus_cohort(out, seed=0, workers=1, **TINY)
    clip = out / pd.read_csv(manifest).path[0]
    stamp = clip.stat().st_mtime_ns
    assert generate_lus_cohort(out, seed=0, workers=1, **TINY) == manifest
    assert clip.stat().st_mtime_ns == stamp
    generate_lus_cohort(out, seed=3, workers=1, **TINY)
    assert '"seed": 3' in (out / "phantom.json").read_text()
    assert not any(p.name.startswith(".cohort.") for p in tmp_path.iterdir())


@pytest.mark.parametrize("entry", ["notes.txt", ".learner-cache", "clips/annotations.txt", "clips/mine"])
def test_other_parameters_never_replace_a_cohort_holding_what_the_generator_did_not_write(
    tmp_path: Path, entry: str
) -> None:
    """The user's file or folder, beside manifest.csv (the scan cache training leaves there) or inside
    ``clips/``, would go with the old cohort: refused, naming it, and the old cohort stays; once it is moved
    out the cohort is replaced."""
    out = tmp_path / "cohort"
    generate_lus_cohort(out, seed=0, workers=1, **TINY)
    if entry.endswith(".txt"):
        (out / entry).write_text("keep me")
    else:
        (out / entry).mkdir()
        (out / entry / "a.lcache").write_text("keep me")
        (out / entry / "b.txt").write_text("keep me")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(LearnerError, match=rf"cohort: holds {re.escape(entry)}, which the phantom generator"):
        generate_lus_cohort(out, seed=3, workers=1, **TINY)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert '"seed": 0' in (out / "phantom.json").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"]

    (out / entry).rename(tmp_path / "moved")
    generate_lus_cohort(out, seed=3, workers=1, **TINY)
    assert '"seed": 3' in (out / "phantom.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort", "moved"]


def test_a_record_listing_only_top_level_names_is_reused_but_never_empties_a_subfolder(
    tmp_path: Path,
) -> None:
    """A record from before the files inside ``clips/`` were listed cannot tell the generator's clips from
    the user's files there: still reused, never replaced while ``clips/`` holds anything."""
    out = tmp_path / "cohort"
    manifest = generate_lus_cohort(out, seed=0, workers=1, **TINY)
    stored = json.loads((out / "phantom.json").read_text())
    stored["outputs"] = ["clips", "ground_truth.csv", "manifest.csv"]
    (out / "phantom.json").write_text(json.dumps(stored))
    (out / "clips" / "annotations.txt").write_text("keep me")
    assert generate_lus_cohort(out, seed=0, workers=1, **TINY) == manifest
    with pytest.raises(LearnerError, match=r"does not list the files in clips/"):
        generate_lus_cohort(out, seed=3, workers=1, **TINY)
    assert (out / "clips" / "annotations.txt").read_text() == "keep me"
    assert '"seed": 0' in (out / "phantom.json").read_text()


def test_a_file_written_into_the_cohort_while_it_renders_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is checked again just before the swap: rendering takes minutes at full size."""
    out = tmp_path / "cohort"
    generate_lus_cohort(out, seed=0, workers=1, **TINY)
    real_run_jobs = lus.run_jobs

    def run_jobs_meanwhile(*args: object, **kwargs: object) -> None:
        (out / "notes.txt").write_text("keep me")
        real_run_jobs(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lus, "run_jobs", run_jobs_meanwhile)
    with pytest.raises(LearnerError, match=r"holds notes\.txt"):
        generate_lus_cohort(out, seed=3, workers=1, **TINY)
    assert (out / "notes.txt").read_text() == "keep me"
    assert '"seed": 0' in (out / "phantom.json").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"]


@pytest.mark.parametrize("record", ["older", "unreadable"])
def test_a_cohort_whose_record_does_not_list_its_files_is_reused_but_never_replaced(
    tmp_path: Path, record: str
) -> None:
    """A record from before phantom.json listed the cohort's files (or one that cannot be read) cannot tell
    the generator's files from the user's, so none of them is deleted; an older record is still reused."""
    out = tmp_path / "cohort"
    manifest = generate_lus_cohort(out, seed=0, workers=1, **TINY)
    stored = json.loads((out / "phantom.json").read_text())
    stored.pop("outputs", None)
    (out / "phantom.json").write_text(json.dumps(stored) if record == "older" else "{not json")
    if record == "older":
        assert generate_lus_cohort(out, seed=0, workers=1, **TINY) == manifest
    message = "does not list the files" if record == "older" else r"holds no readable phantom\.json"
    with pytest.raises(LearnerError, match=message):
        generate_lus_cohort(out, seed=3, workers=1, **TINY)
    assert manifest.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"]


def test_concurrent_builders_of_one_cohort_both_succeed(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: generate_lus_cohort(out, seed=0, workers=1, **TINY), range(2)))
    assert results == [out / "manifest.csv"] * 2
    assert len(load_manifest(results[0], SF).records) == len(list((out / "clips").iterdir()))
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"]  # no staging or retired folder left


def test_refuses_a_foreign_folder_and_leaves_nothing_when_rendering_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(LearnerError, match="mine"):
        generate_lus_cohort(foreign, workers=1, **TINY)
    assert (foreign / "notes.txt").read_text() == "keep me"

    calls = {"n": 0}
    real_write = lus.write_mp4

    def failing_write(path: Path, frames: np.ndarray, *, codec: str) -> Path:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return real_write(path, frames, codec=codec)

    monkeypatch.setattr(lus, "write_mp4", failing_write)
    with pytest.raises(OSError, match="disk full"):
        generate_lus_cohort(tmp_path / "broken", workers=1, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"size": 33}, "even"), ({"frames": 0}, "frames"), ({"patients": (1, -1, 1)}, "patients")],
)
def test_bad_parameters_are_config_errors(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate_lus_cohort(tmp_path / "x", workers=1, **{**TINY, **kwargs})


def test_default_latents_mirror_table_1() -> None:
    table = draw_lus_latents()
    per_split = table.groupby("split").agg(patients=("patient_id", "nunique"), clips=("scan_id", "size"))
    assert per_split.loc[["train", "val", "test"], "patients"].tolist() == [160, 44, 17]
    assert per_split.loc[["train", "val", "test"], "clips"].tolist() == [701, 194, 106]
    assert table.scan_id.is_unique
    assert table.score.between(0, 500).all()
    visits = table.drop_duplicates(["patient_id", "visit"])
    assert spearmanr(visits.severity_patient_visit, visits.score).statistic < -0.9  # S/F falls with severity


def _consecutive(visits: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(earlier, later) values of ``column`` over each patient's consecutive visits."""
    earlier, later = [], []
    for _, rows in visits.sort_values("visit").groupby("patient_id"):
        values = rows[column].to_numpy()
        earlier += list(values[:-1])
        later += list(values[1:])
    return np.array(earlier), np.array(later)


def test_day_to_day_change_is_small_next_to_patient_spread_yet_changes_bins() -> None:
    table = draw_lus_latents((0, 0, 200), seed=5)
    visits = table.drop_duplicates(["patient_id", "visit"])
    earlier, later = _consecutive(visits, "score")
    within = np.abs(later - earlier).mean()
    between = visits.groupby("patient_id")["score"].mean().std()
    assert within < 0.5 * between
    labels = SF.change_labels(earlier, later)
    counts = np.bincount(labels, minlength=3)
    assert (counts > 0).all()  # deteriorated, stable and improved all occur
    assert 0.15 < 1 - counts[1] / counts.sum() < 0.6


def test_patient_nuisance_dominates_image_brightness() -> None:
    """Mean clip brightness: grouping by patient explains more than the zone's severity does, and a
    patient's day-to-day change is much smaller than the spread between patients."""
    table = draw_lus_latents((0, 0, 60), seed=2)
    brightness = [
        render_lus_clip(
            row["severity_zone"],
            _nuisance(row),
            frames=2,
            size=32,
            rng=np.random.default_rng(int(row["render_seed"])),
        ).mean()
        for row in table.to_dict("records")
    ]
    table = table.assign(brightness=brightness)
    total = table.brightness.var(ddof=0)
    patient_mean = table.groupby("patient_id").brightness.transform("mean")
    by_patient = 1 - (table.brightness - patient_mean).var(ddof=0) / total
    by_severity = np.corrcoef(table.brightness, table.severity_zone)[0, 1] ** 2
    assert by_patient > by_severity + 0.3
    same_site = table.groupby(["patient_id", "site"], group_keys=False)
    day_to_day = same_site.apply(lambda g: g.sort_values("visit").brightness.diff().abs()).dropna().mean()
    assert day_to_day < 0.5 * table.groupby("patient_id").brightness.mean().std()


def test_lung_below_the_pleura_brightens_with_severity() -> None:
    """B-lines and consolidations: for fixed nuisance, the intercostal lung region gets brighter with s."""
    patient = draw_patient_nuisance(np.random.default_rng(0))
    size = 48
    pleura_row = int(np.ceil(patient.wall_cm / patient.depth_cm * size)) + 4

    def lung_mean(severity: float) -> float:
        clips = [
            render_lus_clip(severity, patient, frames=2, size=size, rng=np.random.default_rng(seed))
            for seed in range(6)
        ]
        middle = slice(size // 2 - 6, size // 2 + 6)  # inside the intercostal window (no rib shadow)
        return float(np.mean([clip[:, pleura_row:, middle].mean() for clip in clips]))

    means = [lung_mean(s) for s in (0.1, 0.5, 0.9)]
    assert means[0] < means[1] < means[2]


def test_each_patient_zone_keeps_its_lesion_layout_from_day_to_day(cohort: Path) -> None:
    """Generator 3: a zone's B-lines sit where they sat the day before (another clip, another render seed,
    a little worse), while another zone, or another patient, has its own layout."""
    size = 64

    def b_line_profile(severity: float, zone: LusNuisance, render_seed: int) -> np.ndarray:
        """Lung brightness per column (B-lines are bright columns), centred."""
        clip = render_lus_clip(severity, zone, frames=8, size=size, rng=np.random.default_rng(render_seed))
        below_pleura = int(np.ceil(zone.wall_cm / zone.depth_cm * size)) + 4
        profile = clip[:, below_pleura:, :].astype(float).mean(axis=(0, 1))
        return profile - profile.mean()

    same_zone, other_zone, other_patient = [], [], []
    for patient_seed in range(6):
        patient = draw_patient_nuisance(np.random.default_rng(100 + patient_seed))
        # a still probe over a wide window: no sliding, tilt or rib shadow to move the columns
        still = dataclasses.replace(patient, sliding_mm=0.0, tilt_deg=0.0, window_cm=8.0, window_shift_cm=0.0)
        seed = patient.texture_seed
        zone = [dataclasses.replace(still, lesion_seed=zone_lesion_seed(seed, z)) for z in (0, 1)]
        stranger = dataclasses.replace(zone[0], lesion_seed=zone_lesion_seed(seed + 1, 0))
        day_one = b_line_profile(0.5, zone[0], render_seed=1)
        same_zone.append(np.corrcoef(day_one, b_line_profile(0.6, zone[0], render_seed=2))[0, 1])
        other_zone.append(np.corrcoef(day_one, b_line_profile(0.5, zone[1], render_seed=3))[0, 1])
        other_patient.append(np.corrcoef(day_one, b_line_profile(0.5, stranger, render_seed=4))[0, 1])
    assert np.mean(same_zone) > 0.6  # 0.85; generator 2 redrew the lines for every clip: -0.19 here
    assert np.mean(other_zone) < 0.3  # 0.06
    assert np.mean(other_patient) < 0.3  # 0.05

    truth = pd.read_csv(cohort.parent / "ground_truth.csv")
    per_zone = truth.groupby(["patient_id", "site"]).lesion_seed.nunique()
    assert (per_zone == 1).all()  # every day of a zone renders the same layout
    assert truth.groupby("patient_id").lesion_seed.nunique().gt(1).any()  # a patient's zones differ
    assert truth.drop_duplicates(["patient_id", "site"]).lesion_seed.is_unique
