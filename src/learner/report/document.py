"""The ``REPORT.md`` document: a banner naming the data source, the settings, the sections of the run's kind
(:data:`REPORTS`), then the config and environment. :func:`write_report` picks the kind from the run's
results file (``results.json`` or ``metrics.json``) and writes the file atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from learner import atomic
from learner.errors import RunDirError
from learner.layout import RunLayout
from learner.report.ceiling import ceiling_report
from learner.report.classification import classification_report
from learner.report.experiment import experiment_report
from learner.report.pretraining import pretraining_report
from learner.report.sections import (
    Source,
    environment_section,
    json_type,
    results_file_error,
    settings_section,
    source_banner,
)

REPORT_FILE = "REPORT.md"

REPORTS: dict[str, Callable[[Path, dict[str, Any]], tuple[list[Source], list[str]]]] = {
    "table3": experiment_report,
    "ablation": experiment_report,
    "sweep": experiment_report,
    "classification": classification_report,
    "pretraining": pretraining_report,
    "ceiling": ceiling_report,
}
"""Run kind (the ``kind`` of its results file) → the data sources and sections of its report."""


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``RUN_DIR/REPORT.md`` for a finished experiment or classification run and return its path.

    Raises:
        RunDirError: no results file of a known kind in ``run_dir``, or one this version cannot read (not
            JSON, not an object, a field missing or of another type): one line naming the file.
    """
    folder = Path(run_dir)
    results = _read_results(folder)
    config = _read_yaml(RunLayout(folder).config)
    sources, sections = REPORTS[results["kind"]](folder, results)
    text = "\n".join(
        [
            f"# LEARNER report: {folder.resolve().name}\n",  # `learner report .` names the folder too
            source_banner(sources),
            "## Settings\n\n" + settings_section(config, sources, results["kind"]),
            *sections,
            "## Config and environment\n\n" + environment_section(folder),
        ]
    )
    return atomic.write_text(folder / REPORT_FILE, text)


def _read_results(folder: Path) -> dict[str, Any]:
    run = RunLayout(folder)
    for path in (run.results, run.metrics):
        if path.is_file():
            try:
                results = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as error:  # not JSON, or not UTF-8
                problem = (
                    f"not JSON: {error.msg} at line {error.lineno}"
                    if isinstance(error, json.JSONDecodeError)
                    else "not UTF-8 text"
                )
                raise results_file_error(path, "run's", problem) from None
            if not isinstance(results, dict):
                raise results_file_error(path, "run's", f"{json_type(results)}, not a JSON object")
            if results.get("kind") in REPORTS:
                return results
    kinds = ", ".join(REPORTS)
    raise RunDirError(f"{folder}: no results.json or metrics.json of a reportable run ({kinds})")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
