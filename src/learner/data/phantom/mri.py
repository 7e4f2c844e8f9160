"""The phantom brain-MRI cohort: T1-like NIfTI volumes and an ADNIMERGE-format table with MMSE.

It stands in for ADNI-1 (Section 2.1, Table 1: 639 patients, up to three scans six months apart, 1856 scans
in all) and goes through the same path as the real data: ``learner.data.adni.adnimerge_to_manifest``
turns ``ADNIMERGE.csv`` plus ``images/`` into a manifest; the 2:1:1 patient split comes later.

One latent per visit, ``atrophy`` in [0, 1], drives the anatomy: the lateral ventricles grow (volume
``x (1 + 2a)``), the cortical ribbon thins (``x (1 - 0.3a)``), sulci deepen, the brain shrinks inside the
skull, and the hippocampi shrink (``x (1 - 0.3a)``) as the CSF around them widens. MMSE is
``round(29.5 - 16 a^1.4 + reserve + N(0, 1.3))`` clipped to 0–30, with a per-patient cognitive reserve
``N(0, 1)``. Head size, shape, pose, field of view, voxel orientation (affine), tissue contrast, bias field
and noise vary by patient and have nothing to do with atrophy.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from learner.atomic import atomic_path
from learner.data.phantom.cohort import build_cohort, check_patients, run_jobs
from learner.errors import ConfigError

GENERATOR_VERSION = 1
VISITS_PER_PATIENT = 1856 / 639  # Table 1: ADNI scans / patients
VISCODES: tuple[str, ...] = ("bl", "m06", "m12")
ORIENTATIONS: tuple[str, ...] = ("RAS", "LAS", "LPS", "LPI", "PIR", "ASR")  # voxel axis codes, per patient
HEAD_AXES_MM = np.array([72.0, 90.0, 80.0])  # semi-axes left-right, posterior-anterior, inferior-superior
START_DATE = dt.date(2005, 9, 1)
TABLE_COLUMNS: tuple[str, ...] = ("RID", "PTID", "VISCODE", "EXAMDATE", "MMSE", "DX", "IMAGEUID")


@dataclass(frozen=True)
class MriSubject:
    """A patient's anatomy-independent appearance: head, pose, scanner (all fixed over visits)."""

    fov_mm: float  # field of view of the cubic grid
    head_scale: float
    aspect_lr: float  # head shape: per-axis stretch
    aspect_ap: float
    aspect_si: float
    yaw_deg: float  # head pose in the scanner
    pitch_deg: float
    roll_deg: float
    shift_lr_mm: float
    shift_ap_mm: float
    shift_si_mm: float
    orientation: str  # voxel axis codes of the stored array (the affine says which)
    gm: float  # tissue contrast relative to white matter = 1
    csf: float
    scalp: float
    skull: float
    intensity_scale: float  # scanner units of white matter
    bias_strength: float  # smooth multiplicative bias field, log-amplitude
    noise: float  # Rician noise sigma, relative to white matter
    bias_seed: int
    gyri_seed: int


def draw_subject(rng: np.random.Generator) -> MriSubject:
    """One patient's head and scanner."""
    return MriSubject(
        fov_mm=rng.uniform(220.0, 240.0),
        head_scale=float(np.clip(rng.normal(1.0, 0.06), 0.85, 1.15)),
        aspect_lr=rng.normal(1.0, 0.04),
        aspect_ap=rng.normal(1.0, 0.04),
        aspect_si=rng.normal(1.0, 0.04),
        yaw_deg=rng.normal(0.0, 6.0),
        pitch_deg=rng.normal(0.0, 6.0),
        roll_deg=rng.normal(0.0, 6.0),
        shift_lr_mm=rng.normal(0.0, 4.0),
        shift_ap_mm=rng.normal(0.0, 4.0),
        shift_si_mm=rng.normal(0.0, 4.0),
        orientation=str(rng.choice(ORIENTATIONS)),
        gm=rng.uniform(0.55, 0.72),
        csf=rng.uniform(0.08, 0.25),
        scalp=rng.uniform(0.8, 1.2),
        skull=rng.uniform(0.05, 0.15),
        intensity_scale=rng.uniform(300.0, 1200.0),
        bias_strength=rng.uniform(0.05, 0.3),
        noise=rng.uniform(0.01, 0.04),
        bias_seed=int(rng.integers(2**31)),
        gyri_seed=int(rng.integers(2**31)),
    )


def mmse_from_atrophy(atrophy: np.ndarray, reserve: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Integer MMSE (0–30) of each visit: falls with atrophy, shifted by reserve, plus test-retest noise."""
    expected: npt.NDArray[np.float64] = 29.5 - 16.0 * np.asarray(atrophy, dtype=float) ** 1.4 + reserve
    return np.clip(np.round(expected + rng.normal(0.0, 1.3, np.shape(expected))), 0, 30).astype(int)


def diagnosis(mmse: float) -> str:
    """The phantom's DX rule: CN when MMSE >= 28, MCI for 24–27, Dementia below (not ADNI's clinical rule)."""
    return "CN" if mmse >= 28 else "MCI" if mmse >= 24 else "Dementia"


MAX_PATIENTS = 9998
"""The most patients a cohort can have: RIDs 2–9999, four digits in the PTID (``<site>_S_<RID>``) as in
ADNI; asked for more, the generator refuses before it makes any folder."""


def _patient_total(patients: tuple[int, ...]) -> int:
    """The number of patients of ``patients`` (per split), checked: a ConfigError beyond
    :data:`MAX_PATIENTS`, whose RIDs would not fit the PTID's four digits."""
    total = sum(check_patients(patients))
    if total > MAX_PATIENTS:
        raise ConfigError(
            f"patients: at most {MAX_PATIENTS} in all (four-digit ADNI RIDs), got {total} ({list(patients)})"
        )
    return total


def draw_mri_latents(patients: tuple[int, ...] = (320, 160, 159), seed: int = 0) -> pd.DataFrame:
    """The whole cohort without voxels: one row per ADNIMERGE row, with ground truth.

    Every patient has bl and m06 visits; ``round(N (1856/639 - 2))`` of them also m12 (Table 1's scan
    count). Baseline atrophy is ``Beta(1.5, 2.5)``; it grows each six months by ``0.01 + 0.05 a_bl LogN(0,
    0.5)``. A handful of extra rows exercise the adapter: m18 visits with an image but no MMSE and m24
    visits with an MMSE but no image (up to 3 of each, on distinct patients).

    Returns:
        DataFrame with :data:`TABLE_COLUMNS` (``MMSE``, ``IMAGEUID`` nullable), ``atrophy``,
        ``render_seed`` and every :class:`MriSubject` field, ordered by RID then exam date.
    """
    total = _patient_total(patients)
    rng = np.random.default_rng(seed)
    # ADNI-1's RIDs run to ~1,500; a larger cohort draws from as many RIDs as it has patients (unchanged
    # below 1,499 patients, so every such cohort keeps its bytes)
    rids = np.sort(rng.choice(np.arange(2, max(1500, total + 2)), total, replace=False))
    three = set(rng.choice(total, round(total * (VISITS_PER_PATIENT - 2)), replace=False).tolist())
    extra = rng.choice(total, 2 * min(3, total // 2), replace=False).tolist()
    no_mmse, no_image = set(extra[::2]), set(extra[1::2])
    rows: list[dict[str, Any]] = []
    for index, rid in enumerate(rids):
        subject = asdict(draw_subject(rng))
        ptid = f"{int(rng.integers(2, 142)):03d}_S_{rid:04d}"
        baseline = START_DATE + dt.timedelta(days=int(rng.integers(0, 700)))
        atrophy = rng.beta(1.5, 2.5)
        rate = 0.01 + 0.05 * atrophy * rng.lognormal(0.0, 0.5)
        reserve = rng.normal(0.0, 1.0)
        visits = [*VISCODES[: 3 if index in three else 2]]
        visits += ["m18"] * (index in no_mmse) + ["m24"] * (index in no_image)
        for code in visits:
            half_years = 0 if code == "bl" else int(code[1:]) // 6
            jitter = 0 if code == "bl" else int(rng.integers(-14, 15))
            rows.append(
                {
                    "RID": int(rid),
                    "PTID": ptid,
                    "VISCODE": code,
                    "EXAMDATE": (baseline + dt.timedelta(days=182 * half_years + jitter)).isoformat(),
                    "atrophy": float(min(1.0, atrophy + rate * half_years)),
                    "reserve": reserve,
                    "has_mmse": code != "m18",
                    "has_image": code != "m24",
                    **subject,
                }
            )
    table = pd.DataFrame(rows)
    mmse = mmse_from_atrophy(table["atrophy"].to_numpy(), table["reserve"].to_numpy(), rng)
    table["MMSE"] = pd.Series(mmse, dtype="Int64").where(table["has_mmse"])
    table["DX"] = [diagnosis(m) if pd.notna(m) else None for m in table["MMSE"]]
    uids = rng.choice(np.arange(10_000, 1_000_000), len(table), replace=False)
    table["IMAGEUID"] = pd.Series(uids, dtype="Int64").where(table["has_image"])
    table["render_seed"] = rng.integers(2**63, size=len(table))
    return table.drop(columns=["reserve", "has_mmse", "has_image"])


def render_mri_volume(
    atrophy: float, subject: MriSubject, *, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Render one T1-like head volume in canonical RAS voxel order (axes point right, anterior, superior).

    Tissue is painted in head-normalised coordinates (the head is the unit ball), so every structure
    scales with head size and follows the pose; then partial-volume blur, bias field and Rician noise.

    Args:
        atrophy: the visit's latent atrophy in [0, 1].
        subject: the patient's head and scanner.
        size: voxels per axis (cubic grid of ``subject.fov_mm``).
        rng: draws the visit's repositioning (1.5° and 1.5 mm) and the noise.

    Returns:
        float32 array (size, size, size) in scanner units (white matter ≈ ``subject.intensity_scale``).
    """
    from scipy.ndimage import gaussian_filter

    a, sub = float(np.clip(atrophy, 0.0, 1.0)), subject
    grid = (np.arange(size) - (size - 1) / 2) * sub.fov_mm / size  # (S,) mm from the grid centre
    points = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), axis=-1)  # (S, S, S, 3) RAS mm
    points = points.astype(np.float32)
    shift = np.array([sub.shift_lr_mm, sub.shift_ap_mm, sub.shift_si_mm]) + rng.normal(0.0, 1.5, 3)
    angles = np.radians(np.array([sub.roll_deg, sub.pitch_deg, sub.yaw_deg]) + rng.normal(0.0, 1.5, 3))
    axes = HEAD_AXES_MM * sub.head_scale * np.array([sub.aspect_lr, sub.aspect_ap, sub.aspect_si])
    # head frame, where the head is the unit ball: rotate into the head's axes, divide by its semi-axes
    frame = (_rotation(angles) / axes).astype(np.float32)  # (3, 3)
    u = (points - shift.astype(np.float32)) @ frame  # (S, S, S, 3)
    rho = np.linalg.norm(u, axis=-1)

    volume: npt.NDArray[np.float64] = np.zeros(rho.shape)
    volume[rho <= 1.0] = sub.scalp
    volume[rho <= 0.93] = sub.skull
    volume[rho <= 0.87] = sub.csf
    surface = (0.85 - 0.06 * a) * (1 + (0.04 + 0.05 * a) * _gyri(u / np.maximum(rho, 1e-6)[..., None], sub))
    volume[rho <= surface] = sub.gm
    volume[rho <= surface - 0.10 * (1 - 0.3 * a)] = 1.0  # white matter inside a thinning cortex
    ventricle = np.array([0.08, 0.28, 0.12]) * (1 + 2 * a) ** (1 / 3)
    hippocampus = np.array([0.07, 0.20, 0.07]) * (1 - 0.3 * a)
    for side in (-1.0, 1.0):
        volume[_inside(u, [0.10 * side, -0.12, 0.0], [0.09, 0.13, 0.09])] = sub.gm  # thalamus
        volume[_inside(u, [0.11 * side, 0.05, 0.16], ventricle)] = sub.csf
        volume[_inside(u, [0.36 * side, -0.05, -0.30], hippocampus + 0.015 + 0.05 * a)] = sub.csf
        volume[_inside(u, [0.36 * side, -0.05, -0.30], hippocampus)] = sub.gm

    volume = gaussian_filter(volume, 0.6) * _bias_field(points / (sub.fov_mm / 2), sub)
    sigma = sub.noise
    volume = np.hypot(volume + rng.normal(0.0, sigma, volume.shape), rng.normal(0.0, sigma, volume.shape))
    return (volume * sub.intensity_scale).astype(np.float32)


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) about x (roll), y (pitch), z (yaw), applied in that order."""
    (cx, cy, cz), (sx, sy, sz) = np.cos(angles), np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rotation: np.ndarray = rz @ ry @ rx
    return rotation


def _inside(u: np.ndarray, centre: list[float], semi_axes: np.ndarray | list[float]) -> np.ndarray:
    scaled = (u - np.asarray(centre, dtype=np.float32)) / np.asarray(semi_axes, dtype=np.float32)
    inside: npt.NDArray[np.bool_] = np.einsum("...i,...i->...", scaled, scaled) <= 1.0
    return inside


def _gyri(direction: np.ndarray, sub: MriSubject) -> np.ndarray:
    """Cortical folding in [-1, 1] over directions (..., 3): the patient's sum of 8 plane waves."""
    layout = np.random.default_rng(sub.gyri_seed)
    waves = layout.normal(size=(8, 3))
    waves *= layout.uniform(8.0, 14.0, (8, 1)) / np.linalg.norm(waves, axis=1, keepdims=True)
    phases = layout.uniform(0, 2 * np.pi, 8).astype(np.float32)
    folding: np.ndarray = np.sin(direction @ waves.T.astype(np.float32) + phases).mean(axis=-1) * 2.0
    return folding


def _bias_field(x: np.ndarray, sub: MriSubject) -> np.ndarray:
    """exp of a random quadratic polynomial of the position (..., 3) scaled to [-1, 1]."""
    pairs = [(i, j) for i in range(3) for j in range(i, 3)]  # xx, xy, xz, yy, yz, zz
    terms = [x[..., i] for i in range(3)] + [x[..., i] * x[..., j] for i, j in pairs]
    weights = np.random.default_rng(sub.bias_seed).normal(0.0, sub.bias_strength, len(terms))
    bias: np.ndarray = np.exp(sum(w * t for w, t in zip(weights, terms, strict=True)))
    return bias


def oriented_image(volume: np.ndarray, fov_mm: float, orientation: str) -> Any:
    """A ``nibabel.Nifti1Image`` of a canonical RAS ``volume`` (S, S, S) stored with the axis codes
    ``orientation``; its affine maps voxels back to RAS mm, so canonical reorientation recovers ``volume``."""
    import nibabel as nib
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

    voxel = fov_mm / volume.shape[0]
    canonical = np.diag([voxel, voxel, voxel, 1.0])
    canonical[:3, 3] = -(np.asarray(volume.shape) - 1) / 2 * voxel
    transform = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(orientation)))
    data = apply_orientation(volume, transform)
    image = nib.Nifti1Image(np.ascontiguousarray(data), canonical @ inv_ornt_aff(transform, volume.shape))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    return image


def image_name(ptid: str, image_uid: int) -> str:
    """ADNI-style file name of one scan."""
    return f"ADNI_{ptid}_MR_phantom_I{image_uid}.nii.gz"


def _render_job(job: dict[str, Any]) -> None:
    """Worker: render one volume and write it as int16 .nii.gz (gzip mtime 0, so bytes are reproducible)."""
    subject = MriSubject(**{f.name: job[f.name] for f in fields(MriSubject)})
    rng = np.random.default_rng(int(job["render_seed"]))
    volume = render_mri_volume(job["atrophy"], subject, size=job["size"], rng=rng)
    volume = np.clip(np.round(volume), 0, np.iinfo(np.int16).max).astype(np.int16)
    image = oriented_image(volume, subject.fov_mm, subject.orientation)
    with atomic_path(job["out"]) as tmp:
        tmp.write_bytes(gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))


def generate_mri_cohort(
    out_dir: str | os.PathLike[str],
    *,
    patients: tuple[int, int, int] = (320, 160, 159),
    seed: int = 0,
    size: int = 48,
    workers: int = 2,
) -> Path:
    """Write the phantom MRI cohort and return the ``ADNIMERGE.csv`` path (reused when already complete).

    Writes ``images/ADNI_<PTID>_MR_phantom_I<IMAGEUID>.nii.gz``, ``ADNIMERGE.csv`` (:data:`TABLE_COLUMNS`,
    no split column: ADNI's 2:1:1 split is made later), ``ground_truth.csv`` (PTID, VISCODE, IMAGEUID,
    atrophy, the subject fields, render_seed) and ``phantom.json``, all at once. ``patients`` only sets the
    total (their sum). The output depends only on the arguments other than ``workers``.
    """
    if size < 16:
        raise ConfigError(f"size must be >= 16 voxels, got {size}")
    counts = check_patients(patients)
    _patient_total(counts)  # before any folder is made, not when the latents are drawn inside it
    record = {"kind": "mri", "version": GENERATOR_VERSION, "patients": list(counts), "seed": seed}
    record["size"] = size

    def build(folder: Path) -> str:
        table = draw_mri_latents(counts, seed)
        scans = table[table["IMAGEUID"].notna()]
        jobs = [
            {**row, "size": size, "out": str(folder / "images" / image_name(row["PTID"], row["IMAGEUID"]))}
            for row in scans.to_dict("records")
        ]
        (folder / "images").mkdir()
        run_jobs(_render_job, jobs, workers)
        truth = [
            "PTID",
            "VISCODE",
            "IMAGEUID",
            "atrophy",
            *(f.name for f in fields(MriSubject)),
            "render_seed",
        ]
        for name, columns in (("ground_truth.csv", truth), ("ADNIMERGE.csv", list(TABLE_COLUMNS))):
            with atomic_path(folder / name) as tmp:
                table[columns].to_csv(tmp, index=False)
        return "ADNIMERGE.csv"

    return build_cohort(out_dir, record, build)
