"""The longitudinal manifest: one row per scan, parsed and validated once into :class:`ScanRecord` s.

Columns: ``patient_id``, ``scan_id`` (unique), ``path`` (relative to the manifest's folder or absolute),
``visit`` (ISO date or integer order within a patient), ``score`` (float health score); optional
``split`` (train/val/test), ``site`` (e.g. lung zone), ``modality`` (video/volume/image). Extra columns
are kept in ``ScanRecord.extra`` and written back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "scan_id", "path", "visit", "score")
OPTIONAL_COLUMNS: tuple[str, ...] = ("split", "site", "modality")
SPLITS: tuple[str, ...] = ("train", "val", "test")
MODALITIES: tuple[str, ...] = ("video", "volume", "image")


@dataclass(frozen=True)
class ScanRecord:
    """One validated manifest row. ``path`` is absolute; ``visit_order`` sorts a patient's visits
    (days since 1970 for ISO dates, the integer itself for integer visits)."""

    patient_id: str
    scan_id: str
    path: Path
    visit: str
    visit_order: float
    score: float
    split: str | None = None
    site: str | None = None
    modality: str | None = None
    row: int = 0
    extra: Mapping[str, object] = field(default_factory=dict)
