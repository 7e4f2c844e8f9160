"""The longitudinal manifest: one row per scan, parsed and validated once into :class:`ScanRecord` s.

Columns: ``patient_id``, ``scan_id`` (unique), ``path`` (relative to the manifest's folder or absolute),
``visit`` (ISO date or integer order within a patient), ``score`` (float health score); optional
``split`` (train/val/test), ``site`` (e.g. lung zone), ``modality`` (video/volume/image), ``latent`` (a
ground-truth quantity behind the score, e.g. a phantom's latent severity: Fig. 1's second target). Extra
columns are kept in ``ScanRecord.extra`` and written back unchanged.

Validation reports *every* problem at once as a :class:`Problem` naming the row and the column. Rows are
numbered from 1 for the first data row under the header (in a CSV, row ``r`` is on line ``r + 1``: a blank
row holds no scan but keeps its number).
Example::

    manifest = load_manifest("scans.csv", get_scale("sf"))
    for patient, scans in manifest.patients().items():
        ...
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import stat
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from learner.atomic import atomic_path
from learner.data.readers import FRAME_READERS, frame_files, scan_file_problem
from learner.data.scales import ScoreScale
from learner.errors import ManifestError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "scan_id", "path", "visit", "score")
OPTIONAL_COLUMNS: tuple[str, ...] = ("split", "site", "modality", "latent")
SPLITS: tuple[str, ...] = ("train", "val", "test")
MODALITIES: tuple[str, ...] = ("video", "volume", "image")

ROWS_SHOWN = 5  # a problem that hits many rows gets one summary line plus its first few rows

_INTEGER = re.compile(r"[+-]?(\d+)(?:\.0*)?")  # 2.0: a Parquet float column written to CSV
_EPOCH = datetime(1970, 1, 1)


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
    latent: float | None = None
    row: int = 0
    extra: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """One finding: ``row`` is the 1-based data row (None for the whole file), ``key`` the column."""

    row: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = "manifest" if self.row is None else f"row {self.row}"
        return f"{where}, column {self.key!r}: {self.message}"


@dataclass(frozen=True, eq=False)
class Manifest:
    """A validated manifest: ``records[i]`` is the ``i``-th row of ``frame`` (the columns as read, blank
    rows left out), data row ``records[i].row`` of the file."""

    source: Path
    root: Path
    records: list[ScanRecord]
    frame: pd.DataFrame

    def by_split(self, name: str) -> list[ScanRecord]:
        """The records of split ``name`` (train, val or test), in file order."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return [record for record in self.records if record.split == name]

    def patients(self) -> dict[str, list[ScanRecord]]:
        """Patient ID (sorted) → that patient's records sorted by visit order (ties keep file order)."""
        grouped: dict[str, list[ScanRecord]] = defaultdict(list)
        for record in self.records:
            grouped[record.patient_id].append(record)
        return {pid: sorted(grouped[pid], key=lambda r: (r.visit_order, r.row)) for pid in sorted(grouped)}

    @property
    def has_complete_split(self) -> bool:
        """True when every row carries a split (validation forbids a partly filled column)."""
        return bool(self.records) and all(record.split is not None for record in self.records)

    def with_splits(self, mapping: Mapping[str, str]) -> Manifest:
        """A copy whose ``split`` (records and frame column) comes from ``mapping`` patient → split."""
        missing = sorted({r.patient_id for r in self.records} - set(mapping))
        if missing:
            raise ManifestError(
                f"{self.source}: no split given for patient {missing[0]!r} ({len(missing)} in all)"
            )
        unknown = sorted(set(mapping.values()) - set(SPLITS))
        if unknown:
            raise ManifestError(f"unknown split {unknown[0]!r}; expected one of {', '.join(SPLITS)}")
        records = [replace(record, split=mapping[record.patient_id]) for record in self.records]
        frame = self.frame.copy()
        frame["split"] = [record.split for record in records]
        return replace(self, records=records, frame=frame)


def load_manifest(
    path: str | os.PathLike[str],
    scale: ScoreScale,
    *,
    check_files: bool = True,
    data_root: str | os.PathLike[str] | None = None,
) -> Manifest:
    """Read a CSV or Parquet manifest and validate it against ``scale``.

    Raises :class:`ManifestError` (its ``problems`` list every problem found, each naming its row) when
    the file cannot be read, holds no rows, or any row is invalid; with ``check_files`` every scan file
    must exist (a folder must hold frame files). With ``data_root`` (``runtime.data_root``) every path
    must resolve, symbolic links followed, inside that folder; without it paths are trusted.
    """
    source = Path(path)
    frame = read_frame(source)
    return manifest_from_frame(
        frame,
        scale,
        root=source.absolute().parent,
        source=source,
        check_files=check_files,
        data_root=data_root,
        rows=[int(label) + 1 for label in frame.index],
    )


def manifest_from_frame(
    frame: pd.DataFrame,
    scale: ScoreScale,
    *,
    root: Path,
    source: Path | None = None,
    check_files: bool = True,
    data_root: str | os.PathLike[str] | None = None,
    rows: Sequence[int] | None = None,
) -> Manifest:
    """Validate an in-memory manifest table; relative paths are taken relative to ``root``. ``rows`` numbers
    the frame's rows in problems and :attr:`ScanRecord.row` (default 1, 2, …; :func:`load_manifest` gives
    the file's numbers, which count the blank rows :func:`read_frame` left out)."""
    numbers = list(rows) if rows is not None else list(range(1, len(frame) + 1))
    if len(numbers) != len(frame):
        raise ValueError(f"{len(numbers)} row numbers for {len(frame)} rows")
    records, problems = _parse(frame, scale, root, check_files, data_root, numbers)
    where = source if source is not None else root
    if problems:
        raise ManifestError(
            f"{where}: {len(problems)} problem(s); first: {problems[0]}", [str(p) for p in problems]
        )
    return Manifest(source=where, root=root, records=records, frame=frame.reset_index(drop=True))


def validate_manifest(
    frame: pd.DataFrame, scale: ScoreScale, root: Path, check_files: bool = True
) -> list[Problem]:
    """Every problem of ``frame``, file-level ones first, then by row (empty list when it is valid)."""
    return _parse(frame, scale, root, check_files, None, list(range(1, len(frame) + 1)))[1]


def read_frame(path: Path) -> pd.DataFrame:
    """The manifest table as stored (CSV cells as strings, so IDs like ``002_S_0295`` keep their zeros),
    column names stripped of spaces. Each row's index is its data-row number − 1: a CSV's blank rows (an
    empty line, only spaces, only commas) are left out but keep their numbers.

    Raises:
        ManifestError: unsupported suffix, not a regular file, unreadable, no data rows, or a column named
            twice; a hint names the likely cause (an Excel workbook, a ``;``- or tab-separated export, text
            not in UTF-8).
    """
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        hint = _EXCEL_HINT if path.suffix.lower() in (".xlsx", ".xls", ".xlsm", ".ods") else ""
        raise ManifestError(
            f"{path}: unsupported manifest type {path.suffix!r}; use {', '.join(_READERS)}{hint}"
        )
    if not path.exists():
        raise ManifestError(f"manifest not found: {path}")
    if not path.is_file():
        raise ManifestError(f"{path}: the manifest is not a regular file")
    if path.suffix.lower() == ".csv" and (problem := _utf16_problem(path)):
        raise ManifestError(f"{path}: {problem}, not UTF-8{_EXCEL_HINT}")
    if path.suffix.lower() == ".csv" and (twice := _repeated_column(path)):
        raise ManifestError(f"{path}: {_TWICE.format(twice)}")
    if path.suffix.lower() == ".csv" and (problem := _long_rows(path)):
        raise ManifestError(f"{path}: {problem}")
    try:
        frame = reader(path)
    except (ValueError, OSError) as exc:  # pandas/pyarrow parse errors are ValueError subclasses
        hint = _sniffed_hint(path, exc)
        raise ManifestError(f"{path}: cannot read ({str(exc).splitlines()[0]}){hint}") from exc
    # "score " (a space typed after the name) is the column score, as _repeated_column reads the header
    frame.columns = [name.strip() if isinstance(name, str) else name for name in frame.columns]
    if twice := _repeated([str(name) for name in frame.columns]):
        raise ManifestError(f"{path}: {_TWICE.format(twice)}")
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    header = "".join(str(column) for column in frame.columns)
    separator = next((name for char, name in _SEPARATORS.items() if char in header), None)
    if missing and separator is not None:
        raise ManifestError(
            f"{path}: required columns {', '.join(missing)} not found, and the header holds {separator}s: "
            f"the file looks {separator}-separated; a manifest CSV is comma-separated"
        )
    if frame.empty:
        raise ManifestError(f"{path}: no scans (a header and no data rows)")
    return frame


def write_manifest(manifest_or_frame: Manifest | pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Atomically write a manifest as CSV or Parquet (by suffix).

    A :class:`Manifest` written to another folder has its relative paths rebased onto that folder, so the
    written file points at the same scans.
    """
    target = Path(path)
    writer = _WRITERS.get(target.suffix.lower())
    if writer is None:
        raise ManifestError(
            f"{target}: unsupported manifest type {target.suffix!r}; use {', '.join(_WRITERS)}"
        )
    if isinstance(manifest_or_frame, Manifest):
        frame = _rebased(manifest_or_frame, target.absolute().parent)
    else:
        frame = manifest_or_frame
    with atomic_path(target) as tmp:
        writer(frame, tmp)
    return target


_EXCEL_HINT = "; save spreadsheets as 'CSV UTF-8 (comma delimited)'"
_SEPARATORS = {";": "semicolon", "\t": "tab"}
_SIGNATURES = {
    b"PK\x03\x04": "a zip archive such as an Excel .xlsx",
    b"\xd0\xcf\x11\xe0": "an Excel .xls workbook",
}


_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
"""Byte-order marks of text that is not UTF-8, longest first (UTF-32's little-endian mark starts with
UTF-16's)."""


def _sniffed_hint(path: Path, exc: Exception) -> str:
    """A hint at the cause of an unreadable manifest: a spreadsheet saved as .csv (from its first bytes), or
    text in a legacy 8-bit encoding (a byte pandas could not decode as UTF-8)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    what = _SIGNATURES.get(head)
    if what:
        return f"; the file is {what}, not CSV{_EXCEL_HINT}"
    if isinstance(exc, UnicodeDecodeError):
        return f"; the file is not UTF-8 text (Latin-1 or Windows-1252?){_EXCEL_HINT}"
    return ""


def _utf16_problem(path: Path) -> str | None:
    """Why a CSV is UTF-16 or UTF-32 text, from its first bytes; None when it does not look so.

    Checked before pandas reads the file: with a byte-order mark pandas reports an undecodable byte 0xff,
    without one it reads column names full of NUL bytes and the manifest seems to lack every column.
    Spreadsheet signatures are left to :func:`_sniffed_hint`.
    """
    with path.open("rb") as handle:
        head = handle.read(1024)
    if head[:4] in _SIGNATURES:
        return None
    for mark, name in _BOMS:
        if head.startswith(mark):
            return f"the file is {name} text (byte-order mark {mark.hex(' ')})"
    if b"\x00" in head:
        return "the file holds NUL bytes: UTF-16 text without a byte-order mark (or no text at all)"
    return None


def _repeated_column(path: Path) -> str | None:
    """A column the CSV header names twice (pandas would rename the second ``score.1`` and read the first
    without a word, so this reads the header before pandas does), else None."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), [])
    except (UnicodeDecodeError, csv.Error):
        return None  # pandas says what is wrong with the file
    return _repeated(header)


def _repeated(names: Sequence[str]) -> str | None:
    """The first name that ``names`` holds twice once stripped of spaces (``score`` and ``score ``), else
    None."""
    stripped = [name.strip() for name in names]
    return next((name for i, name in enumerate(stripped) if name and name in stripped[:i]), None)


_TWICE = "the header names the column {!r} twice; which one is meant?"


def _long_rows(path: Path) -> str | None:
    """Why some CSV rows hold more cells than the header names, else None. pandas would not say: when every
    row has one cell too many it takes the first column for row names and shifts every cell one column to
    the left (a visit read as the path: "file not found: .../1"); the cause is nearly always an unquoted
    decimal comma (``155,7``) or a comma at the end of each row."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = csv.reader(handle)
            width = len(next(rows, []))
            long = [(number, row) for number, row in enumerate(rows, 1) if len(row) > width]
    except (UnicodeDecodeError, csv.Error):
        return None  # pandas says what is wrong with the file
    if not long:
        return None
    number, row = long[0]
    shown = ", ".join(str(n) for n, _ in long[:5]) + (f", … ({len(long)} in all)" if len(long) > 5 else "")
    if all(not cell.strip() for _, cells in long for cell in cells[width:]):
        cause = "a comma at the end of the row? delete it"
    else:
        cause = "an unquoted decimal comma (155,7)? write 155.7, or quote the cell"
    return f"row {number} holds {len(row)} cells where the header names {width} (rows {shown}): {cause}"


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV's cells as text (Excel's byte-order mark accepted); blank rows are dropped here rather than by
    pandas (``skip_blank_lines``), which would renumber the rows below them: the index keeps each row's
    place, so that row r stays the row on line r + 1. A row of empty cells (``,,,``, as a spreadsheet saves
    a row it formatted) is blank too: it names no scan."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skip_blank_lines=False)
    blank: pd.Series[bool] = (frame.apply(lambda column: column.str.strip()) == "").all(axis=1)
    return frame.loc[~blank]


_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": _read_csv,
    ".parquet": lambda p: pd.read_parquet(p).reset_index(drop=True),  # a stored index is no row number
}
_WRITERS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    ".csv": lambda frame, p: frame.to_csv(p, index=False),
    ".parquet": lambda frame, p: frame.to_parquet(p, index=False),
}


def _rebased(manifest: Manifest, new_root: Path) -> pd.DataFrame:
    frame = manifest.frame.copy()
    if new_root == manifest.root:
        return frame
    frame["path"] = [
        cell if Path(_text(cell)).is_absolute() else os.path.relpath(record.path, new_root)
        for cell, record in zip(frame["path"], manifest.records, strict=True)
    ]
    return frame


# --- parsing -------------------------------------------------------------------------------------------

# A parser turns a non-empty cell into its value, or explains why it cannot.
_Parsed = tuple[object, str | None]


def _parse_visit(text: str, scale: ScoreScale) -> _Parsed:
    """('integer' | 'date', order): integers are their own order, ISO dates count days since 1970-01-01.

    A whole decimal (``2.0``) is the integer 2: a Parquet float column (an integer column with nulls) is
    written so to a CSV by ``learner data split``; ``2.5`` is no visit.
    """
    if whole := _INTEGER.fullmatch(text):
        digits = whole[1]
        if len(digits) > MAX_VISIT_DIGITS:
            return (
                None,
                f"visit {text[:12]}… has {len(digits)} digits; a visit number has at most {MAX_VISIT_DIGITS}",
            )
        return ("integer", float(int(text[: whole.end(1)]))), None  # sign and digits, less any .0
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None, f"visit {text!r} is neither an ISO date (YYYY-MM-DD) nor an integer"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return ("date", (moment - _EPOCH).total_seconds() / 86400.0), None


MAX_VISIT_DIGITS = 15
"""An integer visit is an order (a number, a day count); past this many digits it is no visit (and past
about 308 it does not even fit a float)."""


def _number(text: str) -> float | None:
    """A decimal number as written in a table; None otherwise. Python's ``float`` also reads ``1_5_5`` as 155
    (digit grouping in code), which in a data cell is a typo, not a number."""
    if "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _parse_score(text: str, scale: ScoreScale) -> _Parsed:
    value = _number(text)
    if value is None:
        return None, f"score {text[:40]!r} is not a number"
    return value, scale.range_problem(value)


def _one_of(allowed: tuple[str, ...]) -> Callable[[str, ScoreScale], _Parsed]:
    def parse(text: str, scale: ScoreScale) -> _Parsed:
        if text in allowed:
            return text, None
        return None, f"unknown value {text!r}; expected one of {', '.join(allowed)}"

    return parse


def _parse_latent(text: str, scale: ScoreScale) -> _Parsed:
    value = _number(text)
    if value is None:
        return None, f"{text[:40]!r} is not a number"
    return (value, None) if math.isfinite(value) else (None, f"{text!r} is not a finite number")


INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
"""Zero-width and soft-hyphen characters, deleted from patient IDs (they make one name look like two)."""


def normalise_patient_id(text: str) -> str:
    """A patient ID as compared and stored: Unicode NFC, invisible characters deleted, whitespace runs
    collapsed and stripped, so that "Müller" typed on two systems (NFC vs NFD) is one patient."""
    return " ".join(unicodedata.normalize("NFC", text).translate(INVISIBLE).split())


def _patient_id(text: str, scale: ScoreScale) -> _Parsed:
    normalised = normalise_patient_id(text)
    return (normalised, None) if normalised else (None, "empty after removing invisible characters")


def _as_is(text: str, scale: ScoreScale) -> _Parsed:
    return text, None


_PARSERS: dict[str, Callable[[str, ScoreScale], _Parsed]] = {
    "patient_id": _patient_id,
    "scan_id": _as_is,
    "path": _as_is,
    "visit": _parse_visit,
    "score": _parse_score,
    "split": _one_of(SPLITS),
    "site": _as_is,
    "modality": _one_of(MODALITIES),
    "latent": _parse_latent,
}


def _text(value: object) -> str:
    """A cell as stripped text; Parquet's NaN/None become empty and whole floats lose their ``.0``."""
    # pd.isna(object) matches no overload: is_scalar() is not a TypeGuard in pandas-stubs
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):  # type: ignore[call-overload]
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# Parsed columns: column → one value per row (None where the cell is empty or invalid).
_Columns = dict[str, list[object]]


def _parse(
    frame: pd.DataFrame,
    scale: ScoreScale,
    root: Path,
    check_files: bool,
    data_root: str | os.PathLike[str] | None,
    rows: list[int],
) -> tuple[list[ScanRecord], list[Problem]]:
    """Records and problems of ``frame``, whose rows are numbered ``rows`` in the problems and records."""
    problems = [Problem(None, c, "required column is missing") for c in REQUIRED_COLUMNS if c not in frame]
    columns: _Columns = {}
    for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
        if name not in frame:
            continue
        values: list[object] = []
        for index, cell in enumerate(frame[name]):
            text = _text(cell)
            value, problem = _PARSERS[name](text, scale) if text else (None, None)
            if not text and name in REQUIRED_COLUMNS:
                problem = "empty value (the column is required)"
            if problem is not None:
                problems.append(Problem(rows[index], name, problem))
            values.append(value if problem is None else None)
        columns[name] = values
    for check in _TABLE_CHECKS:
        problems.extend(check(columns, rows))
    problems.extend(_file_of_two_patients(columns, rows, root))
    if "patient_id" in frame:
        _warn_merged_patients([_text(cell) for cell in frame["patient_id"]])
    if "split" in frame:
        problems.extend(_partial_split([_text(cell) for cell in frame["split"]], rows))
    if not len(frame):
        problems.append(Problem(None, "path", "no scans (no data rows)"))
    if data_root is not None and "path" in columns:
        problems.extend(_outside_root(columns["path"], rows, root, Path(data_root)))
    if check_files and "path" in columns:
        problems.extend(_missing_files(columns["path"], rows, root))
    problems.sort(key=lambda p: (p.row is not None, p.row or 0))
    if problems:
        return [], problems
    return _records(frame, columns, root, rows), []


def _records(frame: pd.DataFrame, columns: _Columns, root: Path, rows: list[int]) -> list[ScanRecord]:
    """Records of a frame whose every cell parsed (``columns`` holds the parsed values)."""
    n = len(frame)
    optional = {name: columns.get(name, [None] * n) for name in OPTIONAL_COLUMNS}
    visits = [_text(cell) for cell in frame["visit"]]
    extra_columns = [c for c in frame.columns if c not in columns]
    # pandas 3 turns a frame without columns into no records at all (pandas 2: n empty ones)
    cells = frame[extra_columns].to_dict("records") if extra_columns else [{}] * n
    extras = [{str(key): value for key, value in row.items()} for row in cells]  # str keys: CSV and Parquet
    return [
        ScanRecord(
            patient_id=str(columns["patient_id"][i]),
            scan_id=str(columns["scan_id"][i]),
            path=_resolve(str(columns["path"][i]), root),
            visit=visits[i],
            visit_order=float(columns["visit"][i][1]),  # type: ignore[index]
            score=float(columns["score"][i]),  # type: ignore[arg-type]
            split=optional["split"][i],  # type: ignore[arg-type]
            site=optional["site"][i],  # type: ignore[arg-type]
            modality=optional["modality"][i],  # type: ignore[arg-type]
            latent=optional["latent"][i],  # type: ignore[arg-type]
            row=rows[i],
            extra=extras[i],
        )
        for i in range(n)
    ]


def _resolve(text: str, root: Path) -> Path:
    """Absolute and normalised (``sub/../a.mp4`` → ``a.mp4``), so one file has one path."""
    return Path(os.path.normpath(root / text))


def _real(text: str, root: Path) -> Path:
    """The file a ``path`` cell names, symbolic links followed: one file, one path however it is written
    (relative or absolute, through a link)."""
    return Path(os.path.realpath(_resolve(text, root)))


# --- checks across rows --------------------------------------------------------------------------------


def _row_list(rows: Sequence[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:ROWS_SHOWN])
    more = f", … ({len(rows)} in all)" if len(rows) > ROWS_SHOWN else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _summarised(rows: list[int], key: str, summary: str, per_row: Callable[[int], str]) -> list[Problem]:
    """One summary problem for a many-row issue, then the first ``ROWS_SHOWN`` rows individually."""
    if not rows:
        return []
    return [Problem(None, key, f"{summary} ({_row_list(rows)})")] + [
        Problem(row, key, per_row(row)) for row in rows[:ROWS_SHOWN]
    ]


def _rows_by(
    values: list[object], keys: list[object], rows: list[int]
) -> dict[object, dict[object, list[int]]]:
    """key → value → row numbers, skipping rows where either is missing."""
    grouped: dict[object, dict[object, list[int]]] = defaultdict(lambda: defaultdict(list))
    for row, key, value in zip(rows, keys, values, strict=True):
        if key is not None and value is not None:
            grouped[key][value].append(row)
    return grouped


def _duplicate_scan_ids(columns: _Columns, rows: list[int]) -> list[Problem]:
    if "scan_id" not in columns:
        return []
    first_row: dict[object, int] = {}
    problems = []
    for row, scan_id in zip(rows, columns["scan_id"], strict=True):
        if scan_id is None:
            continue
        if scan_id in first_row:
            message = f"duplicate scan_id {scan_id!r} (first at row {first_row[scan_id]})"
            problems.append(Problem(row, "scan_id", message))
        else:
            first_row[scan_id] = row
    return problems


def _conflicts(
    columns: _Columns, rows: list[int], column: str, what: str, value_of: Callable[[object], object]
) -> list[Problem]:
    """A patient whose rows disagree on ``value_of(column)``; reported at the first row of the 2nd value."""
    if column not in columns or "patient_id" not in columns:
        return []
    values = [None if v is None else value_of(v) for v in columns[column]]
    problems = []
    for patient, by_value in _rows_by(values, columns["patient_id"], rows).items():
        if len(by_value) > 1:
            groups = sorted(by_value.items(), key=lambda item: item[1][0])
            listed = "; ".join(f"{value}: {_row_list(found)}" for value, found in groups)
            problems.append(Problem(groups[1][1][0], column, f"patient {patient!r} {what} ({listed})"))
    return problems


def _mixed_visit_kinds(columns: _Columns, rows: list[int]) -> list[Problem]:
    what = "mixes integer and date visits"
    return _conflicts(columns, rows, "visit", what, lambda v: v[0])  # type: ignore[index]


def _patients_in_two_splits(columns: _Columns, rows: list[int]) -> list[Problem]:
    return _conflicts(columns, rows, "split", "is in more than one split", lambda v: v)


def _warn_merged_patients(raw: list[str]) -> None:
    """One warning naming patient IDs written differently that :func:`normalise_patient_id` made one."""
    spellings: dict[str, set[str]] = defaultdict(set)
    for text in raw:
        if text:
            spellings[normalise_patient_id(text)].add(text)
    merged = {patient: sorted(found) for patient, found in spellings.items() if len(found) > 1}
    if merged:
        listed = "; ".join(" = ".join(ascii(t) for t in found) for found in merged.values())
        log.warning(
            "%d patient ID(s) written differently are one patient (Unicode form, invisible "
            "characters or spaces): %s",
            len(merged),
            listed,
        )


def _file_of_two_patients(columns: _Columns, rows: list[int], root: Path) -> list[Problem]:
    """One scan file listed for two patients: at least one of them is wrong, and across splits it leaks.
    Files are compared as resolved (:func:`_real`), so ``a.mp4`` and ``/data/a.mp4`` are one file."""
    if "path" not in columns or "patient_id" not in columns:
        return []
    owner: dict[Path, tuple[object, int, str]] = {}
    problems = []
    for row, path, patient in zip(rows, columns["path"], columns["patient_id"], strict=True):
        if path is None or patient is None:
            continue
        key = _real(str(path), root)
        if key in owner and owner[key][0] != patient:
            first, first_row, written = owner[key]
            spelling = "" if written == path else f", written {written!r}"
            message = (
                f"file {path!r} is also patient {first!r}'s scan (row {first_row}{spelling}): "
                "one file, two patients"
            )
            problems.append(Problem(row, "path", message))
        owner.setdefault(key, (patient, row, str(path)))
    return problems


def _partial_split(cells: list[str], rows: list[int]) -> list[Problem]:
    """A split column must be filled on every row or on none (an all-empty column means "not split yet")."""
    empty = [row for row, cell in zip(rows, cells, strict=True) if not cell]
    if len(empty) in (0, len(cells)):
        return []
    summary = f"split is empty on {len(empty)} of {len(cells)} rows; fill every row or none"
    return _summarised(empty, "split", summary, lambda row: "empty split while other rows have one")


_TABLE_CHECKS: tuple[Callable[[_Columns, list[int]], list[Problem]], ...] = (
    _duplicate_scan_ids,
    _mixed_visit_kinds,
    _patients_in_two_splits,
)


def _missing_files(paths: list[object], rows: list[int], root: Path) -> list[Problem]:
    """Every scan file is checked up front; the count comes first, then the first few rows. A folder
    (a clip of frame files) with no frame file in it is as good as missing."""
    resolved = {row: _resolve(str(p), root) for row, p in zip(rows, paths, strict=True) if p is not None}
    missing = [row for row, path in resolved.items() if not _exists(path)]
    summary = f"{len(missing)} of {len(resolved)} files missing"
    problems = _summarised(missing, "path", summary, lambda row: f"file not found: {resolved[row]}")
    empty = [row for row, path in resolved.items() if _is_dir(path) and not _has_frames(path)]
    summary = f"{len(empty)} folder(s) hold no frame files ({' '.join(sorted(FRAME_READERS))})"
    return problems + _summarised(empty, "path", summary, lambda row: f"no frame files in {resolved[row]}")


def _exists(path: Path) -> bool:
    """False only when there is nothing at ``path``; a file that is there but cannot be looked at (a folder
    above it without permission, a symbolic link to itself) exists: reading it says why it cannot be read."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # a symbolic link to a missing target too
        return False
    except OSError:
        return True
    return True


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _has_frames(folder: Path) -> bool:
    try:
        return bool(frame_files(folder))  # the reader's own listing: hidden files are no frames to it
    except OSError:  # a folder that cannot be listed is not empty as far as we know: reading it says why
        return True


def unreadable_scans(manifest: Manifest) -> list[Problem]:
    """Every scan of ``manifest`` that cannot be read, found without decoding (:func:`scan_file_problem`:
    no permission, a named pipe, a type no reader takes, an empty file), one problem per row, the count
    first (``learner data check``)."""
    found = {
        record.row: problem for record in manifest.records if (problem := scan_file_problem(record.path))
    }
    rows = sorted(found)
    summary = f"{len(rows)} of {len(manifest.records)} scans cannot be read as scans"
    return _summarised(rows, "path", summary, lambda row: found[row])


def _outside_root(paths: list[object], rows: list[int], root: Path, data_root: Path) -> list[Problem]:
    """Rows whose path resolves (``..`` and symbolic links followed) outside ``data_root``."""
    allowed = data_root.resolve()
    resolved = {row: _real(str(p), root) for row, p in zip(rows, paths, strict=True) if p is not None}
    outside = [row for row, path in resolved.items() if not path.is_relative_to(allowed)]
    summary = f"{len(outside)} path(s) resolve outside the data root {allowed} (runtime.data_root)"
    return _summarised(outside, "path", summary, lambda row: f"{resolved[row]} is outside {allowed}")
