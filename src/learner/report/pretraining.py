"""The report of one pretraining run (``learner pretrain``, its ``metrics.json`` and ``metrics.csv``): the
regression quality of the best checkpoint, the training curves (:mod:`learner.training.curves`) and every
epoch's row.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from learner.evaluation.regression_quality import regression_quality
from learner.layout import RunLayout
from learner.report.sections import (
    NUMBER,
    Source,
    regression_section,
    require_fields,
    require_present_fields,
    results_file_error,
)
from learner.report.tables import markdown_table, plain
from learner.runs import load_run_config

FIELDS: dict[str, type | tuple[type, ...]] = {"data_source": str, "best": dict, "best.epoch": int}
"""The fields of a pretraining run's ``metrics.json`` that its report reads (checked before it does)."""

OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = {"scans": dict}
"""Fields its report reads where the file has them."""

REGRESSION_FIELDS: dict[str, type | tuple[type, ...]] = {
    "best.val_mae": (int, float),
    "best.baseline_mae": (int, float),
}
"""The fields of a run that measured its val MAE (``best.val_mae``): its regression quality reads them
(:func:`~learner.evaluation.regression_quality.regression_quality`) and prints them as numbers."""

REGRESSION_OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "best.val_r": NUMBER,
    "last": (dict, type(None)),
    "last.val_mae": NUMBER,
    "train_mean": (int, float),
}
"""The regression quality's fields where the file has them (parents first)."""

SELF_SUPERVISED_FIELDS: dict[str, type | tuple[type, ...]] = {"best.val_loss": NUMBER}
"""A self-supervised run's fields where the file has them; with no ``metrics.csv`` the reading takes its
collapse diagnostics from ``best`` (:data:`DIAGNOSTICS`)."""

DIAGNOSTICS: dict[str, type | tuple[type, ...]] = {
    "best.val_effective_rank": (int, float),
    "best.val_embedding_std": (int, float),
}
"""The collapse diagnostics of ``best`` (read together, where ``best.val_effective_rank`` is)."""

COLUMNS: dict[str, tuple[str, ...]] = {
    "": ("epoch", "train_loss"),
    "val_mae": ("baseline_mae",),
    "val_effective_rank": ("val_embedding_std",),
}
"""The columns of ``metrics.csv`` that the curves and the reading need ("": always; else where the key's
column is)."""


def pretraining_report(run_dir: Path, metrics: dict[str, Any]) -> tuple[list[Source], list[str]]:
    """Data source and sections of one pretraining run (``learner pretrain``, its ``metrics.json``):
    regression quality of the best checkpoint, the training curves and every epoch's row."""
    from learner.training.curves import CURVES_FILE, plot_training_curves

    history = _read_history(run_dir)
    check_pretraining_fields(RunLayout(run_dir).metrics, metrics, history)
    config = load_run_config(run_dir)
    manifest = str(config.data.manifest)  # resolved against the run directory
    source = Source("data", manifest, metrics["data_source"])
    best = metrics["best"]
    if "val_mae" in best:
        name = run_dir.resolve().name  # `learner report .`: the folder's own name, not ""
        quality = regression_section([([name], regression_quality(run_dir))], ["run"])
    else:
        quality = self_supervised_reading(best, history) + "\n"
    sections = [f"## Regression quality (best checkpoint, epoch {best['epoch']})\n\n{quality}"]
    if history:
        plot_training_curves(history, run_dir / CURVES_FILE, vector=config.runtime.vector_figures)
        columns = [
            c
            for c in (
                "epoch",
                "lr",
                "train_loss",
                "val_loss",
                "val_mae",
                "baseline_mae",
                "val_effective_rank",
            )
            if c in history[0]
        ]
        rows = [[f"{row[c]:.4g}" if c != "epoch" else int(row[c]) for c in columns] for row in history]
        sections.append(
            "## Training curves\n\nLoss per epoch, and val MAE against always predicting the train mean "
            f"(score units).\n\n![training curves]({CURVES_FILE})\n\n" + markdown_table(columns, rows)
        )
    scans = metrics.get("scans", {})
    if scans:
        sections.append("## Scans\n\n" + ", ".join(f"{k} {v}" for k, v in scans.items()) + "\n")
    return [source], sections


def check_pretraining_fields(path: Path, metrics: dict[str, Any], history: list[dict[str, float]]) -> None:
    """Check the fields of a pretraining run's ``metrics`` (read from ``path``) that its report reads, as the
    run measured a val MAE or not (:data:`FIELDS` and the others above); ``history``: its ``metrics.csv``.

    Raises:
        RunDirError: the first field missing or of another type, named by its key.
    """
    require_fields(path, "pretraining", metrics, FIELDS)
    require_present_fields(path, "pretraining", metrics, OPTIONAL_FIELDS)
    if "val_mae" in metrics["best"]:
        require_fields(path, "pretraining", metrics, REGRESSION_FIELDS)
        require_present_fields(path, "pretraining", metrics, REGRESSION_OPTIONAL_FIELDS)
        return
    require_present_fields(path, "pretraining", metrics, SELF_SUPERVISED_FIELDS)
    if not history and "val_effective_rank" in metrics["best"]:
        require_fields(path, "pretraining", metrics, DIAGNOSTICS)


def _read_history(run_dir: Path) -> list[dict[str, float]]:
    """The rows of ``metrics.csv`` (one per epoch; the epoch an int, so that prose says "epoch 3", every
    other column a float), or none.

    Raises:
        RunDirError: a cell that is not a number (the writer spells an undefined value ``nan``, never an
            empty cell), an epoch that is not a whole number, or a row of another length than the header:
            an older learner's file, or an edited one.
    """
    import csv

    path = RunLayout(run_dir).epochs
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or ["epoch", "train_loss"]  # an empty file: no epoch, no row
        for column in (c for key, needed in COLUMNS.items() if key in header or not key for c in needed):
            if column not in header:
                raise results_file_error(path, "pretraining", f"no column {column!r}")
        for line, row in enumerate(reader, 2):
            if None in row or None in row.values():
                raise results_file_error(path, "pretraining", f"line {line}: not one cell per column")
            parsed: dict[str, float] = {}
            for column, text in row.items():
                try:
                    parsed[column] = float(text)
                except ValueError:
                    problem = f"line {line}, column {column!r}: {text!r} is not a number"
                    raise results_file_error(path, "pretraining", problem) from None
            epoch = parsed.get("epoch", 0.0)
            if not (math.isfinite(epoch) and epoch.is_integer()):
                problem = f"line {line}, column 'epoch': {row['epoch']!r} is not an epoch number"
                raise results_file_error(path, "pretraining", problem)
            rows.append(parsed | ({"epoch": int(epoch)} if "epoch" in parsed else {}))
    return rows


def self_supervised_reading(best: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """A self-supervised stage in words: its best val loss, whether its embeddings collapsed (effective rank,
    per-dimension std at the last epoch and their trend) and whether its val loss had levelled off."""
    text = f"Self-supervised: best val loss {plain(best.get('val_loss'))} (epoch {int(best['epoch'])})."
    first, last = (history[0], history[-1]) if history else (best, best)
    if "val_effective_rank" in last:
        text += (
            f" At the last epoch the val embeddings have effective rank {last['val_effective_rank']:.1f} "
            f"and mean per-dimension std {last['val_embedding_std']:.3f} (VICReg's variance term aims at 1; "
            "a std near 0 or a rank near 1 is collapse)."
        )
        if last["val_embedding_std"] < 0.9 * first["val_embedding_std"]:
            text += (
                f" The std fell from {first['val_embedding_std']:.3f} at epoch {int(first['epoch'])}: the "
                "embeddings are drifting towards collapse."
            )
    if len(history) >= 3 and "val_loss" in history[-3]:
        before, after = history[-3]["val_loss"], last["val_loss"]
        if not (math.isfinite(before) and math.isfinite(after)) or before == 0:  # no relative change
            start, end = int(history[-3]["epoch"]), int(last["epoch"])
            text += (
                f" The val loss went from {before:.4g} at epoch {start} to {after:.4g} at epoch {end}: "
                "whether it levelled off cannot be told."
            )
            return text
        change = (after - before) / abs(before)
        moved = f"{100 * change:+.1f}% over the last two epochs"
        text += (
            f" The val loss was still falling ({moved}): a longer stage may help."
            if change < -0.02
            else f" The val loss changed by {moved}: it has levelled off."
        )
    return text
