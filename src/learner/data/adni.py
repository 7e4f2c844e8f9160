"""ADNIMERGE table + a folder of MRI files → a LEARNER manifest on the ``mmse`` scale (Section 2.1, ADNI).

ADNIMERGE has one row per participant visit with (among many) the columns :data:`ADNIMERGE_COLUMNS`.
Visit codes are normalised: ``bl``, ``sc`` and ``scmri`` are the baseline (``bl``, month 0) and ``mNN`` is
month NN (written ``m06``, ``m12``, …). Each visit's image is found in the image folder (searched
recursively), in this order:

1. by IMAGEUID: a file whose name holds the token ``I<IMAGEUID>`` delimited by ``_``, ``.`` or the name's
   ends — ADNI download names such as ``ADNI_002_S_0295_MR_MPRAGE_br_raw_20060418_I13722.nii`` and the
   phantom's ``ADNI_002_S_0295_MR_phantom_I13722.nii.gz``;
2. by PTID and visit: a file named ``<PTID>_<VISCODE>.nii`` or ``.nii.gz`` (``002_S_0295_bl.nii.gz``,
   ``002_S_0295_m06.nii``; the visit code is normalised as above).

When several files carry the same key, NIfTI files win, then the first path in sorted order. Rows are
dropped — each counted once, under the first reason that applies — for no PTID, an unknown visit code, no
parseable EXAMDATE, no MMSE, an MMSE outside 0–30, an MMSE that is not a whole number, no image, or a repeat
of a (PTID, visit) already kept. A table of which no row is kept writes nothing: it is a ManifestError.

Cohort selection (opt-in; the default keeps every patient and every visit): ``min_visits`` drops the
patients with fewer kept visits, ``max_visits`` keeps each patient's first visits in time order (by month).
The paper's ADNI cohort (Section 2.1: "patients with at least two visits", "up to three MRI scans acquired
at six-month intervals") is ``min_visits=2, max_visits=3`` (``learner data adni --min-visits 2
--max-visits 3``). The scans these drop are counted in the report like the other drops, and the patients
dropped whole in ``dropped_patients``.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from learner.data.manifest import write_manifest
from learner.data.scales import get_scale
from learner.errors import ConfigError, ManifestError

log = logging.getLogger(__name__)

ADNIMERGE_COLUMNS: tuple[str, ...] = ("RID", "PTID", "VISCODE", "EXAMDATE", "MMSE", "DX", "IMAGEUID")
BASELINE_CODES: frozenset[str] = frozenset({"bl", "sc", "scmri"})
DATE_FORMATS: tuple[str, ...] = ("%Y-%m-%d", "%m/%d/%Y")  # ISO, and the US form some exports use

OUTPUT_COLUMNS: tuple[str, ...] = (
    "patient_id", "scan_id", "path", "visit", "score", "modality",
    "rid", "viscode", "month", "dx", "imageuid",
)  # fmt: skip

_MONTH_CODE = re.compile(r"m(\d+)")
_UID_TOKEN = re.compile(r"(?:^|[_.])I(\d+)(?=[_.]|$)")
_VISIT_FILE = re.compile(r"(?P<ptid>.+)_(?P<viscode>[A-Za-z]+\d*)\.nii(?:\.gz)?", re.IGNORECASE)
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_MMSE = get_scale("mmse")


@dataclass(frozen=True)
class AdniReport:
    """What :func:`adnimerge_to_manifest` did: rows read, scans written, and each drop reason's count
    (``dropped``: rows, the cohort selection's included; ``dropped_patients``: patients the selection dropped
    whole, by the same reason)."""

    rows: int
    scans: int
    patients: int
    matched_by_imageuid: int
    matched_by_visit: int
    dropped: dict[str, int]
    manifest: Path
    dropped_patients: dict[str, int] = field(default_factory=dict)


def normalise_viscode(code: str) -> tuple[str, int] | None:
    """``("bl", 0)`` for bl/sc/scmri, ``("m06", 6)`` for m06/m6, None for any other code."""
    code = code.strip().lower()
    if code in BASELINE_CODES:
        return "bl", 0
    match = _MONTH_CODE.fullmatch(code)
    return (f"m{int(match[1]):02d}", int(match[1])) if match else None


def visit_limits_problem(
    min_visits: int, max_visits: int | None, names: tuple[str, str] = ("min_visits", "max_visits")
) -> str | None:
    """Why (min_visits, max_visits) is not a cohort selection (each ≥ 1, min ≤ max), naming the option by
    ``names``; None when it is one."""
    if min_visits < 1:
        return f"{names[0]} must be at least 1, got {min_visits}"
    if max_visits is not None and max_visits < 1:
        return f"{names[1]} must be at least 1, got {max_visits}"
    if max_visits is not None and min_visits > max_visits:
        return f"{names[0]} ({min_visits}) must not exceed {names[1]} ({max_visits})"
    return None


def adnimerge_to_manifest(
    adnimerge_csv: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    min_visits: int = 1,
    max_visits: int | None = None,
) -> AdniReport:
    """Write a manifest (patient_id = PTID, visit = EXAMDATE, score = MMSE, modality = volume, plus the
    columns rid, viscode, month, dx, imageuid) for every ADNIMERGE visit with an MMSE and an image.

    ``min_visits``: drop the patients with fewer such visits; ``max_visits``: keep each patient's first
    ``max_visits`` of them in time order (None: all). The defaults keep every patient and visit; the paper's
    cohort (Section 2.1) is ``min_visits=2, max_visits=3``. What they drop is in the report (and logged).

    Raises :class:`ConfigError` for a ``min_visits`` or ``max_visits`` below 1 or a min above the max, and
    :class:`ManifestError` for a missing table or folder, a table without the ADNIMERGE columns, or one of
    which no row is kept (the message gives the drop counts by reason); nothing is written then.
    """
    problem = visit_limits_problem(min_visits, max_visits)
    if problem is not None:
        raise ConfigError(problem)
    table_path, images, out = Path(adnimerge_csv), Path(images_dir), Path(out_path)
    table = _read_adnimerge(table_path)
    if not images.is_dir():
        raise ManifestError(f"images folder not found: {images}")
    by_uid, by_visit = _index_images(images)
    manifest_root = out.absolute().parent
    dropped: Counter[str] = Counter()
    matched: Counter[str] = Counter()
    kept: dict[tuple[str, str], dict[str, object]] = {}
    for row in table.to_dict("records"):
        scan = _scan_or_reason(row, by_uid, by_visit, manifest_root, kept)
        if isinstance(scan, str):
            dropped[scan] += 1
            continue
        matched[str(scan.pop("matched_by"))] += 1
        kept[(str(scan["patient_id"]), str(scan["viscode"]))] = scan
    dropped_patients = _select_visits(kept, min_visits, max_visits, dropped)
    if not kept:  # a header-only manifest would only fail later, in every command, with "no scans"
        drops = ", ".join(f"{reason}: {count}" for reason, count in dropped.most_common())
        summary = f"{len(table)} rows dropped; {drops}" if drops else "the table has no rows"
        raise ManifestError(
            f"{table_path}: no row kept with the images in {images} ({summary}); no manifest written"
        )
    rows = sorted(kept.values(), key=lambda r: (r["patient_id"], r["month"]))
    frame = pd.DataFrame(rows)
    write_manifest(frame.reindex(columns=list(OUTPUT_COLUMNS)), out)
    return AdniReport(
        rows=len(table),
        scans=len(frame),
        patients=len({ptid for ptid, _ in kept}),
        matched_by_imageuid=matched["imageuid"],
        matched_by_visit=matched["visit"],
        dropped=dict(dropped),
        manifest=out,
        dropped_patients=dropped_patients,
    )


def _select_visits(
    kept: dict[tuple[str, str], dict[str, object]],
    min_visits: int,
    max_visits: int | None,
    dropped: Counter[str],
) -> dict[str, int]:
    """Apply the cohort selection to ``kept`` (keyed by (PTID, visit)) in place, counting the scans it drops
    in ``dropped``; returns the patients dropped whole, by reason (and logs both)."""
    visits: dict[str, list[tuple[int, tuple[str, str]]]] = defaultdict(list)
    for key, scan in kept.items():
        visits[key[0]].append((int(str(scan["month"])), key))
    too_few, after = f"fewer than {min_visits} visits", f"after the first {max_visits} visits"
    patients = 0
    for timeline in visits.values():
        in_order = [key for _, key in sorted(timeline)]
        if len(in_order) < min_visits:
            patients += 1
            reason, drop = too_few, in_order
        else:
            reason, drop = after, in_order[max_visits:] if max_visits is not None else []
        for key in drop:
            del kept[key]
            dropped[reason] += 1
    if patients:
        log.info("dropped %d patient(s) (%d scans) with fewer than %d visits", patients, dropped[too_few],
                 min_visits)  # fmt: skip
    if dropped[after]:
        log.info("dropped %d scan(s) after each patient's first %d visits", dropped[after], max_visits)
    return {too_few: patients} if patients else {}


def _read_adnimerge(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ManifestError(f"ADNIMERGE table not found: {path}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, low_memory=False)
    except (ValueError, OSError) as exc:
        raise ManifestError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from exc
    missing = [c for c in ADNIMERGE_COLUMNS if c not in table]
    if missing:
        raise ManifestError(f"{path}: missing ADNIMERGE column(s) {', '.join(missing)}")
    return table


def _scan_or_reason(
    row: Mapping[Hashable, str],
    by_uid: dict[str, list[Path]],
    by_visit: dict[tuple[str, str], list[Path]],
    manifest_root: Path,
    kept: dict[tuple[str, str], dict[str, object]],
) -> dict[str, object] | str:
    """The manifest row of one ADNIMERGE visit, or the first reason (in the documented order) to drop it."""
    ptid = row["PTID"].strip()
    if not ptid:
        return "no PTID"
    visit = normalise_viscode(row["VISCODE"])
    if visit is None:
        return "unknown VISCODE"
    exam = _iso_date(row["EXAMDATE"])
    if exam is None:
        return "no EXAMDATE"
    mmse = _number(row["MMSE"])
    if mmse != mmse:  # NaN: empty or not a number
        return "no MMSE"
    if not _MMSE.low <= mmse <= _MMSE.high:  # ±inf too
        return "MMSE out of range"
    if _MMSE.range_problem(mmse) is not None:  # in range, so the scale's other rule: a whole number
        return "MMSE not a whole number"
    uid = _imageuid(row["IMAGEUID"])
    image, matched_by = _match(by_uid, by_visit, uid, ptid, visit[0])
    if image is None:
        return "no image"
    if (ptid, visit[0]) in kept:
        return "duplicate visit"
    return {
        "patient_id": ptid,
        "scan_id": f"{ptid}_{visit[0]}",
        "path": os.path.relpath(image.absolute(), manifest_root),
        "visit": exam,
        "score": mmse,
        "modality": "volume",
        "rid": row["RID"].strip(),
        "viscode": visit[0],
        "month": visit[1],
        "dx": row["DX"].strip(),
        "imageuid": uid,
        "matched_by": matched_by,
    }


def _index_images(folder: Path) -> tuple[dict[str, list[Path]], dict[tuple[str, str], list[Path]]]:
    """IMAGEUID → files holding its token, and (PTID, normalised VISCODE) → files named after them."""
    by_uid: dict[str, list[Path]] = defaultdict(list)
    by_visit: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        for uid in _UID_TOKEN.findall(path.name):
            by_uid[uid].append(path)
        named = _VISIT_FILE.fullmatch(path.name)
        visit = normalise_viscode(named["viscode"]) if named else None
        if named and visit:
            by_visit[(named["ptid"], visit[0])].append(path)
    return by_uid, by_visit


def _match(
    by_uid: dict[str, list[Path]],
    by_visit: dict[tuple[str, str], list[Path]],
    uid: str,
    ptid: str,
    viscode: str,
) -> tuple[Path | None, str]:
    """The visit's image and how it was found ("imageuid" or "visit"), or (None, "")."""
    options = (("imageuid", by_uid.get(uid, []) if uid else []), ("visit", by_visit.get((ptid, viscode), [])))
    for how, candidates in options:
        if candidates:
            return min(candidates, key=lambda p: (not p.name.lower().endswith(_NIFTI_SUFFIXES), str(p))), how
    return None, ""


def _iso_date(text: str) -> str | None:
    for form in DATE_FORMATS:
        try:
            return datetime.strptime(text.strip(), form).date().isoformat()
        except ValueError:
            continue
    return None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _imageuid(text: str) -> str:
    """IMAGEUID as digits ("13722"); tables round-tripped through floats hold "13722.0"."""
    value = _number(text)
    return str(int(value)) if value == value and value.is_integer() else ""
