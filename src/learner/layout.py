"""The names of everything in a run directory, in one place (:class:`RunLayout`).

Every module that reads or writes a run's files asks :class:`RunLayout` for the path; none builds one by
hand. :mod:`learner.runs` decides who may write a run directory and when; this module only names its parts,
and says which top-level names a run writes (:func:`written_by_runs`: what ``--force`` may replace).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """The name of every file and folder of a run directory: owned here, built nowhere else.

    Three kinds of run directory share it. A **pretraining run** (``learner pretrain``, a grid cell's encoder
    stage) holds ``checkpoints/{best,last}``, ``metrics.csv`` and ``metrics.json``; a **classification run**
    (``learner classify``, a grid cell's classification stage) holds ``classifier/`` and ``metrics.json``; an
    **experiment grid** holds ``results.json`` and one folder per cell (``<dataset>/.../seed-<k>``) with an
    encoder stage and one classification stage per classifier variant (:meth:`encoder`,
    :meth:`classification`); a **ceiling study** (``learner experiment ceiling``) holds
    ``latent_manifest.csv``, an ``oracle/`` pretraining run, ``ceiling.md`` and ``metrics.json``. Every run
    directory holds ``config.yaml``, ``run.json`` and ``log.txt``.

    Paths only: nothing is created or read (:class:`RunDir` writes).
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        """``config.yaml``: the resolved config, paths relative to the run directory."""
        return self.root / "config.yaml"

    @property
    def record(self) -> Path:
        """``run.json``: seed, command line, versions, machine (:func:`environment_record`)."""
        return self.root / "run.json"

    def next_resume_record(self) -> Path:
        """``resume-<n>.json``: how and where the n-th ``--resume`` of this run started."""
        return self.root / f"resume-{len(list(self.root.glob(RESUME_RECORDS))) + 1}.json"

    @property
    def log(self) -> Path:
        """``log.txt``: the run's log, appended on ``--resume``."""
        return self.root / "log.txt"

    @property
    def metrics(self) -> Path:
        """``metrics.json``: a pretraining's best/last rows, a classification's test metrics or a ceiling
        study's rows."""
        return self.root / "metrics.json"

    @property
    def epochs(self) -> Path:
        """``metrics.csv``: one row per pretraining epoch."""
        return self.root / "metrics.csv"

    @property
    def results(self) -> Path:
        """``results.json``: an experiment grid's cells, summary and figures."""
        return self.root / "results.json"

    @property
    def complete(self) -> Path:
        """``complete.json``: a grid stage's record, written last (the stage is never recomputed)."""
        return self.root / "complete.json"

    @property
    def val_predictions(self) -> Path:
        """``val_predictions.csv``: the best checkpoint's val predictions (``scan_id``, ``patient_id``,
        ``score``, ``predicted``), rewritten whenever the best checkpoint is."""
        return self.root / "val_predictions.csv"

    @property
    def splits(self) -> Path:
        """``splits.csv``: a pretraining run's patient → split (columns ``patient_id``, ``split``)."""
        return self.root / "splits.csv"

    @property
    def embeddings(self) -> Path:
        """``embeddings/``: a pretraining run's cached embedding tables, one per checkpoint and manifest."""
        return self.root / "embeddings"

    def pairs(self, split: str) -> Path:
        """``pairs/<split>.csv``: a classification run's pair table of one split."""
        return self.root / "pairs" / f"{split}.csv"

    @property
    def predictions(self) -> Path:
        """``predictions.csv``: a classification run's prediction per test pair."""
        return self.root / "predictions.csv"

    @property
    def classifier(self) -> Path:
        """``classifier/``: a classification run's fitted pair classifier."""
        return self.root / "classifier"

    def table(self, kind: str, suffix: str) -> Path:
        """An experiment's table, named for the paper: ``table3``, ``table4`` (the ablation), ``sweep`` or
        ``ceiling``, with ``suffix`` ``.md`` (the report's rendering) or ``.csv`` (long-form numbers)."""
        return self.root / f"{EXPERIMENT_TABLES[kind]}{suffix}"

    @property
    def oracle(self) -> RunLayout:
        """``oracle/``: a ceiling study's oracle encoder, a pretraining run on :attr:`latent_manifest`."""
        return RunLayout(self.root / "oracle")

    @property
    def latent_manifest(self) -> Path:
        """``latent_manifest.csv``: a ceiling study's copy of its manifest whose ``score`` is each scan's
        latent value (the oracle's training target)."""
        return self.root / "latent_manifest.csv"

    def started(self) -> bool:
        """Whether the run holds something worth resuming: a ``last`` checkpoint of its own or of a grid
        cell's encoder, or a classification's metrics."""
        return self.metrics.is_file() or any(self.root.glob("**/checkpoints/last"))

    def checkpoint(self, which: str) -> Path:
        """``checkpoints/<which>``: a pretraining checkpoint folder (``best`` or ``last``)."""
        return self.root / "checkpoints" / which

    def encoder(self, cell: str | os.PathLike[str] = ".") -> RunLayout:
        """A grid cell's encoder stage (a pretraining run): ``<cell>/encoder``."""
        return RunLayout(self.root / cell / ENCODER_STAGE)

    def classification(
        self, cell: str | os.PathLike[str] = ".", variant: tuple[str, str] | None = None
    ) -> RunLayout:
        """A grid cell's classification stage (a classification run): ``<cell>/classifier``, or
        ``<cell>/classify-<combine>-<head>`` for the ``(combine, head)`` variant of an ablation grid."""
        return RunLayout(self.root / cell / classification_stage(variant))


EXPERIMENT_TABLES: dict[str, str] = {
    "table3": "table3",
    "ablation": "table4",
    "sweep": "sweep",
    "ceiling": "ceiling",
}
"""An experiment's kind → the name of its table files (:meth:`RunLayout.table`)."""

ENCODER_STAGE = "encoder"
"""The folder of a grid cell's pretraining stage."""


def classification_stage(variant: tuple[str, str] | None = None) -> str:
    """The folder name of a grid cell's classification stage: ``classifier``, or
    ``classify-<combine>-<head>`` for one of several classifier variants (the ablation)."""
    return "classifier" if variant is None else f"classify-{variant[0]}-{variant[1]}"


RESUME_RECORDS = "resume-*.json"
"""The records of a run's ``--resume`` starts (:meth:`RunLayout.next_resume_record`)."""
RUN_TOOL_FOLDERS: tuple[str, ...] = ("mlruns", "tensorboard", "submitit")
"""Top-level folders that tools write into a run directory for it: the metrics trackers' stores
(:data:`learner.training.tracker.STORES`) and submitit's job logs (:mod:`learner.experiments.launch`)."""
REPORT_NAME = "REPORT.md"
"""The report a run directory gets (:data:`learner.report.REPORT_FILE`)."""
FIGURE_PATTERNS: tuple[str, ...] = tuple(
    f"{stem}.{suffix}" for stem in ("fig1_*", "training_curves") for suffix in ("png", "svg", "pdf")
)
"""Figures a run writes at its top level: Fig. 1's panels and a pretraining's curves."""
TEMPORARY_PATTERN = ".*.tmp"
"""The temporary sibling of a file being written (:func:`learner.atomic.atomic_path`) that a process
killed outright leaves behind."""


def written_by_runs(name: str, folders: Collection[str] = ()) -> bool:
    """Whether a top-level entry called ``name`` of a run directory is one that a learner run (of any kind)
    writes there, or one of ``folders`` (an experiment grid's dataset folders, which its ``config.yaml``
    names): what ``--force`` may replace (:func:`learner.runs.check_run_dir`). Anything else is the
    user's."""
    layout = RunLayout(".")
    files = (
        layout.config, layout.record, layout.log, layout.metrics, layout.epochs, layout.results,
        layout.complete, layout.val_predictions, layout.splits, layout.embeddings, layout.predictions,
        layout.classifier, layout.latent_manifest, layout.oracle.root, layout.checkpoint("last").parent,
        layout.pairs("train").parent,
        *(layout.table(kind, suffix) for kind in EXPERIMENT_TABLES for suffix in (".md", ".csv")),
    )  # fmt: skip
    own = {path.name for path in files} | {REPORT_NAME, *RUN_TOOL_FOLDERS, *folders}
    patterns = (RESUME_RECORDS, *FIGURE_PATTERNS, TEMPORARY_PATTERN)
    return name in own or any(fnmatchcase(name, pattern) for pattern in patterns)
