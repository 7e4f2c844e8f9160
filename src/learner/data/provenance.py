"""Where a manifest's scans come from (PHANTOM or REAL, and the generator's record) and the latent quantity
behind each score when one is known: the one module above which nothing needs to know about phantoms.

The phantom cohorts (:mod:`learner.data.phantom.lus`, :mod:`learner.data.phantom.mri`) write a record
(:data:`learner.data.phantom.cohort.RECORD_NAME`) and ``ground_truth.csv`` beside their scans. Reports use
the record to say that numbers come from a PHANTOM. Fig. 1 (Section 3) plots embedding distance against the
change of the latent severity the scans were rendered from: the manifest's optional ``latent`` column (the
LUS phantom writes it; a real cohort may carry any ground-truth quantity there), else the phantom's
``ground_truth.csv`` (the MRI phantom, which reaches its manifest through the ADNI adapter).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from learner.data.adni import normalise_viscode
from learner.data.manifest import Manifest
from learner.data.phantom.cohort import OUTPUTS_KEY, RECORD_NAME

GROUND_TRUTH_NAME = "ground_truth.csv"


def phantom_folder(manifest: Manifest) -> Path | None:
    """The generated cohort's folder when the scans come from a phantom (its record lies in the manifest's
    folder, in the folder holding every scan, or up to two levels above that), else None."""
    if not manifest.records:
        return None
    scans = Path(os.path.commonpath([str(r.path.parent) for r in manifest.records]))
    for folder in (manifest.root, scans, *list(scans.parents)[:2]):
        if (folder / RECORD_NAME).is_file():
            return folder
    return None


def data_source(manifest: Manifest) -> str:
    """``phantom`` for a generated cohort (see :func:`phantom_folder`), else ``real``."""
    return "phantom" if phantom_folder(manifest) is not None else "real"


def phantom_record(manifest: Manifest) -> dict[str, object] | None:
    """The generator's record of the manifest's cohort (kind, version, parameters; not the list of files it
    wrote); None for real data."""
    folder = phantom_folder(manifest)
    if folder is None:
        return None
    return {key: value for key, value in _read_record(folder).items() if key != OUTPUTS_KEY}


def latent_values(manifest: Manifest) -> dict[str, float] | None:
    """scan_id → the latent quantity behind the score: the manifest's ``latent`` column when every scan has
    one, else the phantom's ground truth (LUS: zone severity; MRI: atrophy); None when neither is known."""
    if manifest.records and all(record.latent is not None for record in manifest.records):
        return {record.scan_id: float(record.latent) for record in manifest.records}  # type: ignore[arg-type]
    folder = phantom_folder(manifest)
    if folder is None:
        return None
    kind = _read_record(folder).get("kind")
    reader = _GROUND_TRUTH.get(kind) if isinstance(kind, str) else None
    return reader(pd.read_csv(folder / GROUND_TRUTH_NAME, dtype={"PTID": str})) if reader else None


def _read_record(folder: Path) -> dict[str, object]:
    record: dict[str, object] = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
    return record


def _lus_truth(table: pd.DataFrame) -> dict[str, float]:
    return dict(zip(table["scan_id"].astype(str), table["severity_zone"].astype(float), strict=True))


def _mri_truth(table: pd.DataFrame) -> dict[str, float]:
    """Keyed like the ADNI adapter's scan IDs, ``<PTID>_<normalised VISCODE>``."""
    truth = {}
    for ptid, viscode, atrophy in zip(table["PTID"], table["VISCODE"], table["atrophy"], strict=True):
        visit = normalise_viscode(str(viscode))
        if visit is not None:
            truth[f"{ptid}_{visit[0]}"] = float(atrophy)
    return truth


_GROUND_TRUTH: dict[str, Callable[[pd.DataFrame], dict[str, float]]] = {"lus": _lus_truth, "mri": _mri_truth}
