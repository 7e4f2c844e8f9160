"""How a phantom cohort reaches disk: all-or-nothing, reusable, rendered by a process pool.

A cohort is built inside a temporary sibling folder and renamed onto ``OUT_DIR`` only when every file is
written, so a reader never sees half a cohort. ``phantom.json`` (written last) records the generator
version and every parameter that changes the output; a later call with the same record finds the complete
cohort and reuses it instead of rendering it again. It also lists every file and folder the build wrote
(``outputs``: paths relative to the cohort folder, those inside ``clips/`` or ``images/`` included), so that
a cohort of other parameters replaces the old one only while the folder holds nothing else, at any depth: the
old cohort is deleted, and so would be anything put beside it or into its subfolders (the user's files; the
scan cache ``.learner-cache`` that training writes beside ``manifest.csv``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from learner.atomic import usable_folder, write_json
from learner.data.workers import die_with_parent
from learner.errors import ConfigError, LearnerError

RECORD_NAME = "phantom.json"
OUTPUTS_KEY = "outputs"
"""The record's key that lists what the build wrote into the cohort folder (all but the record): every file
and folder, as POSIX paths relative to the cohort folder. A record written before the files inside
subfolders were listed holds only the top-level names: :func:`_check_replaceable` then refuses to delete a
subfolder that holds anything (what the generator wrote there cannot be told from the user's files)."""


def check_patients(patients: Sequence[int], *, parts: int = 3) -> tuple[int, ...]:
    """``patients`` as a tuple of ``parts`` non-negative ints with a positive sum, else a ConfigError."""
    values = tuple(int(p) for p in patients)
    if len(values) != parts or any(p < 0 for p in values) or sum(values) == 0:
        raise ConfigError(
            f"patients must be {parts} non-negative counts with a positive sum, got {list(patients)}"
        )
    return values


def build_cohort(
    out_dir: str | os.PathLike[str], record: dict[str, Any], build: Callable[[Path], str]
) -> Path:
    """Return ``OUT_DIR/<table>`` of a complete cohort described by ``record``, building it if needed.

    Args:
        out_dir: the cohort folder; created, or replaced when it holds a phantom cohort with another record
            and nothing else. A non-empty folder that is not a phantom cohort, or that holds anything its
            cohort did not write, is refused (nothing of the user's is deleted).
        record: JSON-able parameters that determine every output byte (kind, version, sizes, seed, ...).
        build: ``build(folder) -> table file name``; writes the whole cohort into ``folder``.
    """
    target = Path(out_dir)
    reusable = _complete_table(target, record)
    if reusable is not None:
        return reusable
    if target.exists() and not target.is_dir():
        raise LearnerError(f"{target}: exists and is not a folder; choose a folder for the phantom cohort")
    usable_folder(target, "the phantom cohort folder")  # e.g. a path under a file such as /dev/null
    here = Path.cwd().resolve()
    if target.resolve() in (here, *here.parents):  # the cohort is renamed into place: not onto the cwd
        raise LearnerError(
            f"{target}: is the current folder{'' if target.resolve() == here else ' or holds it'} "
            f"({target.resolve()}); the finished cohort is renamed into place, which a folder in use cannot "
            "take: name a new folder, e.g. ./cohort"
        )
    _check_replaceable(target)  # before rendering, which takes minutes at full size
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, "tmp")
    staging.mkdir()  # not mkdtemp: the cohort folder gets the umask's permissions, not 0700
    try:
        table = build(staging)
        outputs = _entries(staging)
        write_json(staging / RECORD_NAME, {**record, "table": table, OUTPUTS_KEY: outputs})
        # a concurrent builder may have renamed the same cohort in first: keep it rather than replace it
        if _complete_table(target, record) is None:
            _check_replaceable(target)  # again: the user may have added a file while the cohort rendered
            try:
                _swap_in(staging, target)
            except OSError:
                if _complete_table(target, record) is None:
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    reusable = _complete_table(target, record)
    if reusable is None:
        raise LearnerError(f"{target}: another process replaced the phantom cohort while it was being built")
    return reusable


def run_jobs(function: Callable[[Any], None], jobs: Iterable[Any], workers: int) -> None:
    """Call ``function(job)`` for each job in ``workers`` spawned processes (in-process if ``workers <= 1``).

    Each job carries its own seed, so the output does not depend on the worker count or the scheduling.
    Spawn rather than fork: the caller may hold torch/OpenMP threads that a forked child would deadlock on.
    """
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            function(job)
        return
    chunk = max(1, len(jobs) // (8 * workers))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent) as pool:
        for _ in pool.map(function, jobs, chunksize=chunk):
            pass


def _check_replaceable(target: Path) -> None:
    """Refuse (:class:`LearnerError`) a non-empty ``target`` whose replacement could delete something the
    generator did not write: it holds no readable record, its record does not list the cohort's outputs (an
    earlier learner wrote it), it holds an entry at any depth that the record does not list, or a subfolder
    holds entries and the record lists the subfolder but none of what is in it (a record from before the
    files inside subfolders were listed: they cannot be told from the user's)."""
    entries = _entries(target) if target.is_dir() else []
    if not entries:
        return
    stored = _stored_record(target)
    if stored is None:
        raise LearnerError(
            f"{target}: folder is not empty and holds no readable {RECORD_NAME}; choose a new folder"
        )
    outputs = stored.get(OUTPUTS_KEY)
    if not isinstance(outputs, list):
        raise LearnerError(
            f"{target}: its {RECORD_NAME} (written by an earlier learner) does not list the files of the "
            "cohort, so replacing the cohort could delete files of yours: delete or move the folder "
            "yourself, or choose another folder"
        )
    listed = {str(name) for name in outputs}
    parents = {name.rpartition("/")[0] for name in listed}
    for folder in (name for name in entries if name in listed and (target / name).is_dir()):
        if folder not in parents and any((target / folder).iterdir()):
            raise LearnerError(
                f"{target}: its {RECORD_NAME} (written by an earlier learner) does not list the files in "
                f"{folder}/, so replacing the cohort could delete files of yours there: delete or move the "
                "folder yourself, or choose another folder"
            )
    # the outermost unlisted entries: a foreign folder is named once, not with everything inside it
    known, homes = listed | {RECORD_NAME}, listed | {""}
    foreign = [name for name in entries if name not in known and name.rpartition("/")[0] in homes]
    if foreign:
        more, them = (f" (and {len(foreign) - 1} more)", "them") if len(foreign) > 1 else ("", "it")
        raise LearnerError(
            f"{target}: holds {foreign[0]}{more}, which the phantom generator did not write; replacing "
            f"the cohort would delete {them}: move {them} out of the folder or choose another folder"
        )


def _entries(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, at any depth, as sorted POSIX paths relative to it. Links are
    listed, never followed: replacing the cohort deletes a link, not what it points to."""
    found = []
    for root, folders, files in os.walk(folder):
        here = Path(root).relative_to(folder)
        found += [(here / name).as_posix() for name in (*folders, *files)]
    return sorted(found)


def _stored_record(folder: Path) -> dict[str, Any] | None:
    """The parsed record of ``folder`` (a JSON object), or None when it is missing or unreadable."""
    try:
        stored = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def _complete_table(folder: Path, record: dict[str, Any]) -> Path | None:
    """The table of ``folder`` when its phantom.json equals ``record`` and the table exists, else None."""
    stored = _stored_record(folder)
    if stored is None:
        return None
    table = stored.pop("table", None)
    stored.pop(OUTPUTS_KEY, None)  # what was written, not a parameter: a record without it is reused too
    if stored != json.loads(json.dumps(record)) or not isinstance(table, str):
        return None
    if not (folder / table).is_file():
        return None
    return folder / table


def _swap_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` onto ``target``; an old phantom cohort there is moved aside first, then deleted
    (:func:`_check_replaceable` has found nothing else in it, at any depth)."""
    if not target.exists():
        os.replace(staging, target)
        return
    if not any(target.iterdir()):
        target.rmdir()
        os.replace(staging, target)
        return
    retired = _sibling(target, "old")
    os.replace(target, retired)
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def _sibling(target: Path, kind: str) -> Path:
    """An unused hidden name beside ``target`` (``.<name>.<random>.<kind>``)."""
    return target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.{kind}"
