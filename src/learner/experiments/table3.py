"""Table 3 and Fig. 1 (Section 3): every pretraining objective × dataset × seed, pretrained → embedded →
classified.

Wiring only, on :mod:`learner.experiments.grid` and its stages (:mod:`learner.experiments.stages`); the
numbers come from :mod:`learner.training.pretrain`, :mod:`learner.experiments.classify`,
:mod:`learner.evaluation.metrics` and :mod:`learner.experiments.figure1`.

Layout of ``OUT``::

    config.yaml run.json log.txt        the experiment's run directory
    <dataset>/<loss>/seed-<k>/encoder/     a pretraining run   (complete.json written last)
    <dataset>/<loss>/seed-<k>/classifier/  a classification run (complete.json written last)
    fig1_<dataset>_score.png            Fig. 1: cosine distance vs |Δ score|, one panel per objective
    fig1_<dataset>_latent.png           … vs |Δ latent severity| (phantom cohorts only)
    table3.csv results.json             long-form numbers, everything (the report adds table3.md)

**Comparison.** Each objective is compared with the baseline objective (``mse`` when in the grid) by the
mean per-seed difference and its t-interval (:func:`learner.evaluation.metrics.paired_difference_ci`).
"""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from learner.config import Config, Experiment, ExperimentConfig
from learner.data.scales import scale_from_config
from learner.evaluation.metrics import paired_difference_ci
from learner.experiments import grid as engine
from learner.experiments import stages
from learner.experiments.figure1 import figure_one
from learner.experiments.launch import check_launcher, launch_cells
from learner.experiments.results import (
    METRICS,
    Cell,
    Comparisons,
    DatasetSummary,
    ExperimentResult,
    Figure,
    GridKey,
    Table3Results,
)
from learner.layout import classification_stage
from learner.timing import CLOCK, Mark, stage

BASELINE_LOSS = "mse"


def run_table3(
    experiment: Experiment, out_dir: str | os.PathLike[str], *, resume: bool = False, force: bool = False
) -> ExperimentResult:
    """Run (or continue) the Table 3 grid: dataset × loss × seed, each pretrained → embedded → classified.

    Args:
        experiment: the base config of every cell and the grid (``datasets``, ``losses``, ``seeds``).
        out_dir: the experiment's run directory (see the module docstring for its layout).
        resume: continue an experiment in ``out_dir`` (finished cells are reused, never recomputed).
        force: wipe ``out_dir`` first.

    Raises:
        ConfigError: an empty grid, an unknown loss, two datasets with one name, or ``cuda`` without CUDA.
        RunDirError: ``out_dir`` not empty without resume/force, or a finished cell with another config.
    """
    started = CLOCK.mark()
    plan = plan_table3(experiment, out_dir, resume=resume, force=force)
    return engine.execute(plan, lambda run_dir: _run(plan, run_dir, started))


def plan_table3(
    experiment: Experiment, out_dir: str | os.PathLike[str], *, resume: bool = False, force: bool = False
) -> engine.GridPlan:
    """Table 3 checked before any work (:func:`learner.experiments.grid.plan_grid`): one cell per dataset,
    loss and seed, in that order."""
    check_launcher(experiment.config.runtime)
    return engine.plan_grid(experiment, out_dir, table3_cells, resume=resume, force=force, kind="table3")


def table3_cells(config: Config, grid: ExperimentConfig) -> list[engine.PlannedCell]:
    """dataset × loss × seed, each cell's config built and checked."""
    cells = []
    for dataset, loss, seed in itertools.product(grid.datasets, grid.losses, grid.seeds):
        cfg = stages.cell_config(config, dataset, **{"loss.name": loss, "seed": seed})
        key = GridKey(dataset=dataset.name, loss=loss)
        where = Path(dataset.name) / loss / f"seed-{seed}"
        cells.append(engine.PlannedCell(dataset.name, where, cfg, ((classification_stage(), key, cfg),)))
    return cells


def _run(plan: engine.GridPlan, run_dir: Path, started: Mark) -> ExperimentResult:
    config, grid = plan.config, plan.grid
    launch_cells(run_dir, engine.cell_jobs(plan, run_dir), config.runtime)
    cells: list[Cell] = []
    figures: dict[str, dict[str, Figure]] = {}
    sources: list[DatasetSummary] = []
    for dataset in grid.datasets:
        manifest = plan.manifests[dataset.name]
        sources.append(engine.describe_dataset(dataset, manifest))
        rows = []
        for index, cell in enumerate(plan.cells, 1):
            if cell.dataset != dataset.name:
                continue
            engine.announce(index, len(plan.cells), cell.where)
            (_, key, cfg), *_ = cell.classifiers
            rows.append(stages.run_cell(run_dir, cell.where, key, cfg, manifest, plan.device))
        scale = scale_from_config(stages.cell_config(config, dataset).data)
        with stage("figures"):
            vector = config.runtime.vector_figures
            figures[dataset.name] = figure_one(
                run_dir, rows, manifest, config.classifier.bootstrap, scale, vector=vector
            )
        cells += rows
    baseline = BASELINE_LOSS if BASELINE_LOSS in grid.losses else grid.losses[0]
    results = Table3Results(
        datasets=sources,
        losses=list(grid.losses),
        seeds=list(grid.seeds),
        cells=cells,
        summary=engine.summarise(cells),
        baseline_loss=baseline,
        comparisons=compare_with_baseline(cells, baseline),
        figures=figures,
    )
    return engine.write_outputs(run_dir, results, long_form(results), started)


def compare_with_baseline(cells: Sequence[Cell], baseline: str) -> Comparisons:
    """dataset → loss → metric → paired difference (loss − baseline) over the seeds both completed."""
    by_key = {(c.key.dataset, c.key.loss, c.seed): c for c in cells}
    out: Comparisons = defaultdict(dict)
    for dataset, loss in dict.fromkeys((c.key.dataset, c.key.loss) for c in cells):
        seeds = [s for d, l_, s in by_key if (d, l_) == (dataset, loss) and (d, baseline, s) in by_key]
        if loss == baseline or not seeds:
            continue
        out[dataset][loss] = {
            name: paired_difference_ci(
                np.array([by_key[(dataset, loss, s)].metric(name) for s in seeds]),
                np.array([by_key[(dataset, baseline, s)].metric(name) for s in seeds]),
            )
            for name in METRICS
        }
    return dict(out)


def long_form(results: Table3Results) -> pd.DataFrame:
    """``table3.csv``: one row per (dataset, loss) with every metric's mean/std and its difference from the
    baseline objective (mean, CI low, CI high)."""
    rows = []
    for row in results.summary:
        flat: dict[str, Any] = {"dataset": row.key.dataset, "loss": row.key.loss, "n_seeds": row.n_seeds}
        versus = results.comparisons.get(row.key.dataset, {}).get(row.key.loss, {})
        for name in METRICS:
            flat[f"{name}_mean"], flat[f"{name}_std"] = row.stats[name].mean, row.stats[name].std
            diff = versus.get(name)
            for part in ("mean", "low", "high"):
                flat[f"{name}_diff_{part}"] = getattr(diff, part) if diff else np.nan
        rows.append(flat)
    return pd.DataFrame(rows)
