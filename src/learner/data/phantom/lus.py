"""The phantom lung-ultrasound cohort: B-mode-like mp4 clips with one S/F ratio per patient-visit.

The generative model (docs/phantom.md has the full parameter table) mirrors the paper's LUS data
(Section 2.1, Table 1): 160/44/17 train/val/test patients, about 701/194/106 clips, several lung zones per
visit, and sequential days only for test patients. Its point is the paper's premise: patient-level
nuisance (depth, gain, chest wall, ribs, tilt, texture) dominates how a clip looks, while the label is one
coarse S/F ratio per patient-visit, and a patient's day-to-day change is small next to the spread between
patients.

Latent severity ``s`` in [0, 1] (0 healthy aeration, 1 white lung) drives, per lung zone:

* the pleural line (thicker, fragmented, irregular as ``s`` grows),
* A-lines, horizontal reverberations at multiples of the pleural depth, fading as ``(1 - s)^2``,
* B-lines, vertical comet tails from the pleura down, ``Poisson(14 s^2)`` of them, brighter with ``s``,
* subpleural consolidations (tissue-like, hypoechoic patches under the pleura) once ``s > 0.6``,
* reduced lung sliding.

The S/F ratio of a visit is ``480 - 400 s + N(0, 15)`` clipped to [0, 500] (paper bins: 180, 275, 430).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from learner.atomic import atomic_path
from learner.data.phantom.cohort import build_cohort, check_patients, run_jobs
from learner.data.splits import TABLE_1_PATIENTS
from learner.errors import ConfigError

GENERATOR_VERSION = 3  # 2: x264 without macroblock-tree (reproducible bytes); 3: lesion layout per zone
MAX_B_LINES = 48  # candidate B-lines per zone layout (P(Poisson(14) > 48) < 1e-11)
MAX_CONSOLIDATIONS = 8  # candidate consolidation patches per zone layout
SPLITS: tuple[str, ...] = ("train", "val", "test")
SITES: tuple[str, ...] = ("L1", "L2", "L3", "L4", "R1", "R2", "R3", "R4")
CLIPS_PER_PATIENT: dict[str, float] = {"train": 701 / 160, "val": 194 / 44, "test": 106 / 17}  # Table 1
FOV_CM = 3.8  # lateral footprint of a linear probe
FPS = 20
BREATH_FRAMES = 60  # a 3 s breathing cycle at FPS
SF_HEALTHY, SF_WHITE_LUNG, SF_NOISE = 480.0, 80.0, 15.0
START_DATE = dt.date(2020, 4, 1)
MANIFEST_COLUMNS: tuple[str, ...] = (
    "patient_id", "scan_id", "path", "visit", "score", "split", "site", "modality", "latent",
)  # fmt: skip
"""The manifest's columns; ``latent`` is the zone severity the clip was rendered from (Fig. 1)."""


@dataclass(frozen=True)
class LusNuisance:
    """Everything about a clip's appearance that is not disease: patient-level, some jittered per clip.

    Lengths are in cm of tissue (the image spans ``depth_cm`` x ``FOV_CM``), so they scale with the
    rendered size; ``speckle_px`` is the speckle grain in pixels of a 64-px image.
    """

    depth_cm: float  # imaging depth (zoom): 4-6 cm as in the paper
    wall_cm: float  # chest-wall thickness, skin to pleura
    gain_db: float  # overall gain
    dynamic_range_db: float  # log-compression range (contrast)
    tgc_db: float  # time-gain mis-compensation: brightness slope from top to bottom
    tilt_deg: float  # probe tilt: pleural line and A-lines slope
    window_cm: float  # intercostal window; ribs and their shadows outside it
    window_shift_cm: float  # where the window sits in this clip
    wall_echo_db: float  # soft-tissue echogenicity
    speckle_px: float  # speckle grain (texture)
    sliding_mm: float  # lung-sliding amplitude with breathing
    breath_phase: float  # breathing phase at the first frame (radians)
    texture_seed: int  # the patient's fascia layout
    lesion_seed: int  # the zone's lesion layout: where its B-lines, consolidations and pleural gaps sit


def draw_patient_nuisance(rng: np.random.Generator) -> LusNuisance:
    """One patient's nuisance (clip-level fields at their patient value; see :func:`jitter_clip_nuisance`)."""
    depth = rng.uniform(4.0, 6.0)
    return LusNuisance(
        depth_cm=depth,
        wall_cm=min(rng.uniform(0.5, 2.0), 0.45 * depth),
        gain_db=rng.normal(0.0, 5.0),
        dynamic_range_db=rng.uniform(40.0, 60.0),
        tgc_db=rng.normal(0.0, 4.0),
        tilt_deg=rng.normal(0.0, 4.0),
        window_cm=rng.uniform(1.6, 3.6),
        window_shift_cm=0.0,
        wall_echo_db=rng.uniform(-32.0, -22.0),
        speckle_px=rng.uniform(0.6, 1.5),
        sliding_mm=rng.uniform(1.0, 3.0),
        breath_phase=0.0,
        texture_seed=(texture := int(rng.integers(2**31))),
        lesion_seed=zone_lesion_seed(texture, 0),
    )


def zone_lesion_seed(texture_seed: int, zone: int) -> int:
    """The lesion layout of a patient's lung zone, the same on every day (derived, draws nothing)."""
    return int(np.random.SeedSequence([texture_seed, zone, 0x1E5]).generate_state(1)[0] & 0x7FFFFFFF)


def jitter_clip_nuisance(patient: LusNuisance, rng: np.random.Generator) -> LusNuisance:
    """A clip of that patient: the probe lands a little differently and breathing is at another phase."""
    changes = {
        "gain_db": patient.gain_db + rng.normal(0.0, 1.0),
        "tilt_deg": patient.tilt_deg + rng.normal(0.0, 1.5),
        "window_shift_cm": rng.uniform(-0.7, 0.7),
        "breath_phase": rng.uniform(0.0, 2 * np.pi),
    }
    return LusNuisance(**{**asdict(patient), **changes})


def sf_from_severity(severity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """S/F ratio per visit (to 0.1): a decreasing line in severity plus noise, clipped to [0, 500]."""
    sf = SF_HEALTHY - (SF_HEALTHY - SF_WHITE_LUNG) * np.asarray(severity, dtype=float)
    return np.round(np.clip(sf + rng.normal(0.0, SF_NOISE, size=sf.shape), 0.0, 500.0), 1)


def draw_lus_latents(
    patients: tuple[int, ...] = TABLE_1_PATIENTS, seed: int = 0, longitudinal: bool = False
) -> pd.DataFrame:
    """The whole cohort without pixels: one row per clip, manifest columns plus ground truth.

    Patient-visit severity starts at ``Beta(1.6, 1.6)``; test patients (with ``longitudinal`` every
    patient, beyond the paper's cohort) get 2 days (3 with p = 0.25),
    1–3 days apart, each a step ``N(trend, 0.07)`` with a per-patient ``trend ~ N(0, 0.05)``. A zone's
    severity is the visit's plus a persistent zone offset ``N(0, 0.08)`` and ``N(0, 0.03)`` noise.
    Clip counts follow Table 1's clips-per-patient rates, spread evenly over visits (1–8 zones each).

    Returns:
        DataFrame with :data:`MANIFEST_COLUMNS`, ``severity_patient_visit``, ``severity_zone``,
        ``render_seed`` and every :class:`LusNuisance` field; rows ordered by patient, visit, site.
    """
    counts = check_patients(patients)
    rng = np.random.default_rng(seed)
    names = [f"P{number:04d}" for number in rng.permutation(sum(counts)) + 1]
    rows: list[dict[str, Any]] = []
    for split, n_patients in zip(SPLITS, counts, strict=True):
        ids, names = names[:n_patients], names[n_patients:]
        days = [2 + int(rng.random() < 0.25) if split == "test" or longitudinal else 1 for _ in ids]
        per_visit = _spread(round(n_patients * CLIPS_PER_PATIENT[split]), sum(days), rng)
        for patient_id, n_days in zip(ids, days, strict=True):
            rows += _patient_rows(patient_id, split, [per_visit.pop() for _ in range(n_days)], rng)
    table = pd.DataFrame(rows)
    visits = table.groupby(["patient_id", "visit"], sort=False).ngroup().to_numpy()
    visit_severity = table.groupby(visits)["severity_patient_visit"].first().to_numpy()
    table["score"] = sf_from_severity(visit_severity, rng)[visits]
    table["render_seed"] = rng.integers(2**63, size=len(table))
    table["latent"] = table["severity_zone"]
    return table.sort_values(["patient_id", "visit", "site"], ignore_index=True)


def _spread(total: int, visits: int, rng: np.random.Generator) -> list[int]:
    """``total`` clips over ``visits`` visits as evenly as possible (1–8 each), extras at random visits."""
    if visits == 0:
        return []
    base, extra = divmod(max(total, visits), visits)
    counts = np.full(visits, base)
    counts[rng.choice(visits, size=extra, replace=False)] += 1
    spread: list[int] = np.clip(counts, 1, len(SITES)).tolist()
    return spread


def _patient_rows(
    patient_id: str, split: str, zones: list[int], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """One patient's clips: days, severities, zones, nuisance."""
    nuisance = draw_patient_nuisance(rng)
    sites = [SITES[i] for i in rng.permutation(len(SITES))]  # the first k are scanned on a k-zone day
    zone_offset = dict(zip(sites, rng.normal(0.0, 0.08, len(SITES)), strict=True))
    severity, trend = rng.beta(1.6, 1.6), rng.normal(0.0, 0.05)
    date = START_DATE + dt.timedelta(days=int(rng.integers(0, 400)))
    rows = []
    for day, n_zones in enumerate(zones):
        if day:
            severity = float(np.clip(severity + trend + rng.normal(0.0, 0.07), 0.02, 0.98))
            date += dt.timedelta(days=int(rng.integers(1, 4)))
        for site in sites[:n_zones]:
            scan_id = f"{patient_id}_{date:%Y%m%d}_{site}"
            local = float(np.clip(severity + zone_offset[site] + rng.normal(0.0, 0.03), 0.0, 1.0))
            rows.append(
                {
                    "patient_id": patient_id,
                    "scan_id": scan_id,
                    "path": f"clips/{scan_id}.mp4",
                    "visit": date.isoformat(),
                    "split": split,
                    "site": site,
                    "modality": "video",
                    "severity_patient_visit": float(severity),
                    "severity_zone": local,
                    **asdict(jitter_clip_nuisance(nuisance, rng)),
                    "lesion_seed": zone_lesion_seed(nuisance.texture_seed, SITES.index(site)),
                }
            )
    return rows


def render_lus_clip(
    severity: float, nuisance: LusNuisance, *, frames: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Render one B-mode-like clip.

    Echo power is modelled in linear units, multiplied by speckle, then log-compressed as a scanner does:
    ``pixel = 255 * clip((10 log10 P + gain + DR - 3) / DR, 0, 1)``.

    Args:
        severity: the zone's latent severity in [0, 1].
        nuisance: the clip's appearance parameters.
        frames: T; consecutive frames at :data:`FPS` (lung sliding moves the lung below the pleura).
        size: H = W in pixels.
        rng: draws this clip's B-lines, consolidations and speckle.

    Returns:
        uint8 array (T, H, W).
    """
    n, s = nuisance, float(np.clip(severity, 0.0, 1.0))
    depth = (np.arange(size) + 0.5) / size * n.depth_cm  # (H,) cm from the skin
    lateral = (np.arange(size) + 0.5) / size * FOV_CM - FOV_CM / 2  # (W,) cm from the probe centre
    pleura = n.wall_cm + np.tan(np.radians(n.tilt_deg)) * lateral  # (W,) pleural depth per column
    dy = depth[:, None] - pleura[None, :]  # (H, W) depth below the pleura
    phase = 2 * np.pi * np.arange(frames) / BREATH_FRAMES + n.breath_phase
    slide_cm = 0.1 * n.sliding_mm * (1 - 0.6 * s) * np.sin(phase)  # (T,) aerated lung slides less when sick
    lung_x = lateral[None, :] - slide_cm[:, None]  # (T, W) lateral position in lung coordinates

    wall = _chest_wall(n, depth, lateral, dy)  # (H, W)
    layout = np.random.default_rng(n.lesion_seed)  # the zone's lesion layout, the same on every day
    lung = _lung(s, dy, pleura, lung_x, rng, layout)  # (T, H, W)
    speckle_wall, speckle_lung = _speckle(n, frames, size, slide_cm * size / FOV_CM, rng)
    power = wall * speckle_wall + lung * speckle_lung
    power *= _rib_shadows(n, lateral, dy)  # (H, W) ribs sit in the chest wall and do not slide
    power *= 10 ** (n.tgc_db * (depth / n.depth_cm - 0.5) / 10)[:, None]
    level: npt.NDArray[np.float64]
    level = (10 * np.log10(power + 1e-12) + n.gain_db + n.dynamic_range_db - 3) / n.dynamic_range_db
    return np.round(np.clip(level, 0.0, 1.0) * 255).astype(np.uint8)


def _gauss(distance: np.ndarray, width: float | np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * (distance / width) ** 2)


def _chest_wall(n: LusNuisance, depth: np.ndarray, lateral: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Soft tissue above the pleura: echogenic skin line and the patient's fascia bands (H, W)."""
    layout = np.random.default_rng(n.texture_seed)
    along = depth[:, None] - np.tan(np.radians(n.tilt_deg)) * lateral[None, :]  # depth along the tilt
    bands = 4.0 * _gauss(along, 0.05)
    for _ in range(int(layout.integers(2, 5))):
        bands += layout.uniform(2.0, 6.0) * _gauss(along - layout.uniform(0.2, 0.85) * n.wall_cm, 0.04)
    return 10 ** (n.wall_echo_db / 10) * (1.0 + bands) * (dy < 0)


def _lung(
    s: float,
    dy: np.ndarray,
    pleura: np.ndarray,
    lung_x: np.ndarray,
    rng: np.random.Generator,
    layout: np.random.Generator,
) -> np.ndarray:
    """Pleural line, A-lines, B-lines and consolidations below (and at) the pleura (T, H, W).

    ``layout`` (the zone's lesion layout) places the pleural gaps, B-lines and consolidations the same way
    on every day; ``rng`` (the clip) draws only the B-lines' flicker. B-line ``i`` of the layout appears
    once ``14 s^2`` passes its arrival time (a unit-rate Poisson process), so a clip shows Poisson(14 s^2)
    lines as before, but a zone that worsens keeps its lines and gains new ones (each fading in over one
    unit of ``14 s^2``); consolidations likewise (``1 + Poisson(3 (s - 0.6))`` of the layout's patches).
    """
    frames = lung_x.shape[0]
    x = lung_x[:, None, :]  # (T, 1, W)
    below = dy[None] > 0  # (1, H, W)
    phases = layout.uniform(0, 2 * np.pi, 3)
    b_arrival = np.cumsum(layout.exponential(1.0, MAX_B_LINES))
    b_centre = layout.uniform(-FOV_CM / 2, FOV_CM / 2, MAX_B_LINES)
    b_amplitude = layout.uniform(0.5, 1.0, MAX_B_LINES)
    b_width = layout.uniform(0.03, 0.07, MAX_B_LINES)
    c_arrival = np.concatenate([[0.0], np.cumsum(layout.exponential(1.0, MAX_CONSOLIDATIONS - 1))])
    c_centre = layout.uniform(-FOV_CM / 3, FOV_CM / 3, MAX_CONSOLIDATIONS)
    c_width = layout.uniform(0.25, 0.6, MAX_CONSOLIDATIONS)
    c_thickness = layout.uniform(0.8, 2.0, MAX_CONSOLIDATIONS)
    rough = 0.08 * s * np.sin(9.0 * x + phases[0]) * np.sin(3.7 * x + phases[1])  # irregular pleura
    gaps = np.sin(6.0 * x + phases[2]) > 1.0 - 1.2 * s  # fragmented pleura
    power = _gauss(dy[None] - rough, 0.03 + 0.05 * s) * np.where(gaps, 0.15, 1.0)
    power = power + 10 ** (-4.2) * below * np.exp(-np.maximum(dy, 0) / 3.0)

    b_lines = np.zeros_like(x)
    rate = 14 * s**2
    for i in np.flatnonzero(b_arrival < rate):
        flicker = rng.uniform(0.75, 1.0, (frames, 1, 1))
        fade = min(1.0, rate - b_arrival[i])
        line = b_amplitude[i] * fade * flicker * _gauss(x - b_centre[i], b_width[i])
        b_lines = np.maximum(b_lines, line)
    power = power + 10 ** ((-16 + 12 * s) / 10) * b_lines * below * np.exp(-np.maximum(dy, 0) / (2 + 3 * s))

    patch = np.zeros(np.broadcast_shapes(x.shape, dy[None].shape), dtype=bool)
    if s > 0.6:
        for i in np.flatnonzero(c_arrival <= 3 * (s - 0.6)):
            half_width = c_width[i] * (s - 0.45) / 0.55
            thickness = c_thickness[i] * (s - 0.4)
            patch |= ((x - c_centre[i]) / half_width) ** 2 + (dy[None] / thickness) ** 2 < 1
        patch &= below
    power = np.where(patch, 10 ** (-2.2), power)
    shadowed = patch.any(axis=1, keepdims=True)  # no reverberation below a consolidation

    skin_depth = dy + pleura  # (H, W); the k-th A-line sits at (k + 2) x the pleural depth
    a_lines = sum(0.45**k * _gauss(skin_depth - (k + 2) * pleura, 0.04) for k in range(4))
    a_lines = 10 ** (-0.7) * (1 - s) ** 2 * a_lines * below * (1 - b_lines) * ~shadowed
    lung: np.ndarray = power + a_lines
    return lung


def _speckle(
    n: LusNuisance, frames: int, size: int, slide_px: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Fully developed speckle, mean 1: static in the chest wall, sliding (and shimmering) in the lung."""
    from scipy.ndimage import gaussian_filter

    grain = n.speckle_px * size / 64
    margin = int(np.ceil(np.abs(slide_px).max())) + 1

    def field(*shape: int, decorrelate: float) -> np.ndarray:
        sigma = (0, 0.7 * grain, 1.2 * grain)  # axial resolution beats lateral resolution
        # two looks (real and imaginary parts of two echoes): spatial compounding, as scanners do
        static = rng.standard_normal((4, 1, *shape), dtype=np.float32)
        moving = rng.standard_normal((4, frames, *shape), dtype=np.float32)
        noise = static * np.float32(np.sqrt(1 - decorrelate)) + moving * np.float32(np.sqrt(decorrelate))
        intensity = sum(gaussian_filter(part, sigma) ** 2 for part in noise)
        normalised: np.ndarray = intensity / intensity.mean()
        return normalised

    wall = field(size, size, decorrelate=0.05)
    lung = field(size, size + 2 * margin, decorrelate=0.2)
    start = margin - np.round(slide_px).astype(int)  # (T,) window into the wider lung field
    lung = np.stack([lung[t, :, start[t] : start[t] + size] for t in range(frames)])
    return wall, lung


def _rib_shadows(n: LusNuisance, lateral: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Gain map (H, W): bright rib surface 0.35 cm above the pleura, acoustic shadow below it."""
    outside = np.abs(lateral - n.window_shift_cm) - n.window_cm / 2  # > 0 over a rib
    rib = 1 / (1 + np.exp(-outside / 0.04))  # (W,) soft rib edge
    surface = dy + 0.35  # depth below the rib surface
    shadow = 1 - rib[None, :] * (surface > 0) * (1 - 10 ** (-2.8))
    gain: np.ndarray = shadow + 300.0 * rib[None, :] * _gauss(surface, 0.05)
    return gain


def _render_job(job: dict[str, Any]) -> None:
    """Worker: render one clip and write it as mp4 (atomically)."""
    nuisance = LusNuisance(**{f.name: job[f.name] for f in fields(LusNuisance)})
    rng = np.random.default_rng(int(job["render_seed"]))
    clip = render_lus_clip(job["severity_zone"], nuisance, frames=job["frames"], size=job["size"], rng=rng)
    write_mp4(Path(job["out"]), clip, codec=job["codec"])


VideoCodec = Literal["libx264", "mpeg4"]
"""The encoders :func:`write_mp4` uses: H.264 where PyAV has it, else MPEG-4 Part 2."""


def video_codec() -> VideoCodec:
    """``libx264`` (H.264) when this PyAV build can encode it, else ``mpeg4``."""
    import av

    try:
        av.codec.Codec("libx264", "w")
    except Exception:  # PyAV raises different types for a missing encoder across versions
        return "mpeg4"
    return "libx264"


def write_mp4(path: Path, frames: np.ndarray, *, codec: VideoCodec, fps: int = FPS) -> Path:
    """Encode grey frames (T, H, W) uint8 as an mp4 (yuv420p) whose bytes depend only on the frames.

    x264 runs single-threaded and without macroblock-tree rate control: on small frames (32 px) its
    lookahead reads uninitialised memory, so the same frames could encode to different bytes (and,
    rarely, different decoded pixels) depending on the process's heap history.
    """
    import av

    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": "17", "preset": "veryfast", "x264-params": "mbtree=0"}
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="gray")
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    return path


def generate_lus_cohort(
    out_dir: str | os.PathLike[str],
    *,
    patients: tuple[int, int, int] = TABLE_1_PATIENTS,
    seed: int = 0,
    frames: int = 16,
    size: int = 64,
    workers: int = 2,
    longitudinal: bool = False,
) -> Path:
    """Write the phantom LUS cohort and return its manifest path (reused when already complete).

    ``longitudinal`` gives train and val patients several days too (the paper's cohort has them only for
    test patients), for the within-patient options of the pairs (``data.pairs.within_patient``).

    Writes ``clips/<scan_id>.mp4``, ``manifest.csv`` (:data:`MANIFEST_COLUMNS`, ``sf`` scale),
    ``ground_truth.csv`` (scan_id, patient_id, visit, site, severities, nuisance, render_seed) and
    ``phantom.json`` into ``out_dir``, all at once (see :func:`learner.data.phantom.cohort.build_cohort`).
    The output depends only on the arguments other than ``workers``.
    """
    if frames < 1:
        raise ConfigError(f"frames must be >= 1, got {frames}")
    if size < 16 or size % 2:
        raise ConfigError(f"size must be an even number of pixels >= 16 (H.264 needs even sizes), got {size}")
    counts = check_patients(patients)
    codec = video_codec()
    record = {"kind": "lus", "version": GENERATOR_VERSION, "patients": list(counts), "seed": seed}
    record |= {"frames": frames, "size": size, "codec": codec, "fps": FPS}
    if longitudinal:  # recorded only when set, so that every earlier cohort keeps its record
        record["longitudinal"] = True

    def build(folder: Path) -> str:
        table = draw_lus_latents(counts, seed, longitudinal)
        jobs = [
            {**row, "frames": frames, "size": size, "codec": codec, "out": str(folder / row["path"])}
            for row in table.to_dict("records")
        ]
        (folder / "clips").mkdir()
        run_jobs(_render_job, jobs, workers)
        truth = ["scan_id", "patient_id", "visit", "site", "severity_patient_visit", "severity_zone"]
        truth += [f.name for f in fields(LusNuisance)] + ["render_seed"]
        for name, columns in (("ground_truth.csv", truth), ("manifest.csv", list(MANIFEST_COLUMNS))):
            with atomic_path(folder / name) as tmp:
                table[columns].to_csv(tmp, index=False)
        return "manifest.csv"

    return build_cohort(out_dir, record, build)
