"""The sweep: which settings make the pretraining learn, measured (issue 9's instrument).

A sweep is named **settings** (each a set of dotted config overrides, ``experiment.settings``) × losses ×
seeds on one or more datasets. Every cell is pretrained → embedded → classified on the resumable stages of
:mod:`learner.experiments.stages`, like a Table 3 cell, and reports per (dataset, setting, loss):

* Fig. 1's Spearman ρ between embedding distance and change (:mod:`learner.experiments.figure1`), against
  |Δ latent severity| on a phantom cohort and against |Δ score| always: mean ± std over seeds, with the
  95% patient-bootstrap interval of the lowest seed (as Fig. 1 shows it; every seed's ρ and interval are in
  ``results.json``);
* intra-patient macro-F1 of the health-change classifier, mean ± std over seeds;
* the encoders' best val MAE against the predict-the-train-mean baseline (pretraining's ``metrics.json``);
* the measured wall time of each cell's pretraining (:class:`learner.experiments.stages.EncoderStage`).

A setting that changes only what the classify stage reads (``classifier.*``, ``data.pairs.*``) trains the
same encoders as an earlier setting, so its cells reuse those (:func:`sweep_plan`): only its classifiers
are fitted, and its row names the setting whose encoders (and wall time) it shares.

The budget is the settings' own: an epoch budget is ``optim.epochs`` (and ``optim.max_steps_per_epoch``)
in every setting or the base config; the wall time is measured, not imposed, so the results stay
reproducible from the config alone.

Layout of ``OUT``::

    config.yaml run.json log.txt                         the experiment's run directory
    <dataset>/<setting>/<loss>/seed-<k>/encoder/           a pretraining run   (complete.json written last;
                                                           absent when the cell reuses another's encoder)
    <dataset>/<setting>/<loss>/seed-<k>/classifier/        a classification run (complete.json written last)
    sweep.csv results.json                               long-form numbers, everything (+ sweep.md: report)
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig
from learner.errors import ConfigError
from learner.evaluation.embedding_analysis import DistanceAnalysis
from learner.experiments import grid as engine
from learner.experiments import stages
from learner.experiments.figure1 import cell_distance_analysis, distance_targets
from learner.experiments.launch import check_launcher, launch_cells
from learner.experiments.results import (
    Cell,
    Correlation,
    DatasetSummary,
    ExperimentResult,
    GridKey,
    MeanStd,
    Sweep,
    SweepCell,
    SweepResults,
    SweepRow,
)
from learner.layout import classification_stage
from learner.timing import CLOCK, Mark, stage

SETTING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
"""A setting's name is a folder name: letters, digits, ``_ . + -``, not starting with a symbol."""

SWEEP_KEYS: tuple[str, ...] = ("data.manifest", "data.scale", "loss.name", "seed")
"""Keys the sweep's own axes set (datasets, losses, seeds); a setting may not override them."""


def run_sweep(
    experiment: Experiment, out_dir: str | os.PathLike[str], *, resume: bool = False, force: bool = False
) -> ExperimentResult:
    """Run (or continue) a sweep: dataset × setting × loss × seed, each pretrained → embedded → classified.

    Args:
        experiment: the base config of every cell (a setting's overrides are applied to it) and the grid
            (``datasets``, ``settings``, ``losses``, ``seeds``).
        out_dir: the experiment's run directory (see the module docstring for its layout).
        resume: continue a sweep in ``out_dir`` (finished cells are reused, never recomputed).
        force: wipe ``out_dir`` first.

    Raises:
        ConfigError: no setting, a bad setting name or key or value (naming the setting and key), an empty
            axis or unknown loss: every cell's config is built and checked before the first pretraining.
        RunDirError: ``out_dir`` not empty without resume/force, or a finished cell with another config.
    """
    started = CLOCK.mark()
    plan = plan_sweep(experiment, out_dir, resume=resume, force=force)
    return engine.execute(plan, lambda run_dir: _run(plan, run_dir, started))


def plan_sweep(
    experiment: Experiment, out_dir: str | os.PathLike[str], *, resume: bool = False, force: bool = False
) -> engine.GridPlan:
    """The sweep checked before any work (:func:`learner.experiments.grid.plan_grid`), cells as
    :func:`sweep_cells` builds them."""
    check_launcher(experiment.config.runtime)
    return engine.plan_grid(experiment, out_dir, sweep_cells, resume=resume, force=force, kind="sweep")


def _run(plan: engine.GridPlan, run_dir: Path, started: Mark) -> ExperimentResult:
    grid = plan.grid
    # one job per encoder; a cell sharing another's encoder is classified below, in this process
    launch_cells(run_dir, engine.cell_jobs(plan, run_dir), plan.config.runtime)
    cells: list[Cell] = []
    extras: list[SweepCell] = []
    sources: list[DatasetSummary] = []
    for dataset in grid.datasets:
        manifest = plan.manifests[dataset.name]
        sources.append(engine.describe_dataset(dataset, manifest))
        targets = distance_targets(manifest)
        for index, planned in enumerate(plan.cells, 1):
            if planned.dataset != dataset.name:
                continue
            engine.announce(index, len(plan.cells), planned.where)
            (_, key, cfg), *_ = planned.classifiers
            shares = planned.shares
            encoder = None if shares is None else (shares.where, shares.encoder)
            cell = stages.run_cell(run_dir, planned.where, key, cfg, manifest, plan.device, encoder)
            n_boot = cfg.classifier.bootstrap
            with stage("figures"):  # Fig. 1's analysis, without the figure
                correlations = {
                    name: _correlation(cell_distance_analysis(run_dir, cell, manifest, target, n_boot))
                    for name, target in targets.items()
                }
            cells.append(cell)
            owner = None if shares is None else shares.classifiers[0][1].setting
            extras.append(SweepCell(key=key, seed=cell.seed, correlations=correlations, encoders_of=owner))
    sweep = Sweep(settings=grid.settings, cells=extras, rows=sweep_rows(cells, extras))
    results = SweepResults(
        datasets=sources,
        losses=list(grid.losses),
        seeds=list(grid.seeds),
        cells=cells,
        summary=engine.summarise(cells),
        sweep=sweep,
    )
    return engine.write_outputs(run_dir, results, long_form(results), started)


def sweep_cells(config: Config, grid: ExperimentConfig) -> list[engine.PlannedCell]:
    """The cells in dataset, setting, loss, seed order; every config is built and its registry names
    checked here, before any work. A cell whose pretraining settings (:meth:`Config.pretraining_settings`)
    equal an earlier cell's, i.e. a setting that changes only the classifier (``classifier.*``,
    ``data.pairs.*``), shares that cell's encoder (``shares``) instead of pretraining it again.

    Raises:
        ConfigError: no setting, or a setting whose name, keys or values are invalid (naming both).
    """
    if not grid.settings:
        raise ConfigError(
            "experiment.settings is empty; name at least one setting (experiment.settings in the config "
            "file, or --setting NAME:key=value,...)"
        )
    cells: list[engine.PlannedCell] = []
    for dataset in grid.datasets:
        owners: dict[str, engine.PlannedCell] = {}  # pretraining digest → the first cell that trains it
        for name, overrides in grid.settings.items():
            for loss in grid.losses:
                for seed in grid.seeds:
                    cfg = setting_config(config, dataset, name, overrides, loss=loss, seed=seed)
                    key = GridKey(dataset=dataset.name, setting=name, loss=loss)
                    where = Path(dataset.name) / name / loss / f"seed-{seed}"
                    classifier = (classification_stage(), key, cfg)
                    cell = engine.PlannedCell(dataset.name, where, cfg, (classifier,))
                    owner = owners.setdefault(stages.pretraining_digest(cfg), cell)
                    cells.append(cell if owner is cell else replace(cell, shares=owner))
    return cells


def setting_config(
    config: Config, dataset: DatasetSpec, name: str, overrides: Mapping[str, Any], *, loss: str, seed: int
) -> Config:
    """The config of one sweep cell: ``config`` with the setting's ``overrides``, on ``dataset``, with
    ``loss`` and ``seed``; validated, its registry names included.

    Raises:
        ConfigError: one line naming the setting and the offending key.
    """
    if not SETTING_NAME.fullmatch(name):
        raise ConfigError(
            f"setting name {name!r} must be letters, digits, '_', '.', '+' or '-' (it names a folder)"
        )
    for key in overrides:
        if key in SWEEP_KEYS:
            raise ConfigError(
                f"setting {name!r}: {key} is set by the sweep's own axes (experiment.datasets/losses/seeds)"
            )
    try:
        cfg = stages.cell_config(config, dataset, **overrides, **{"loss.name": loss, "seed": seed})
    except ConfigError as exc:
        raise ConfigError(f"setting {name!r}: {exc}") from None
    return cfg


def sweep_rows(cells: Sequence[Cell], extras: Sequence[SweepCell]) -> list[SweepRow]:
    """One row per (dataset, setting, loss), in the cells' order, over the seeds it has."""
    groups: dict[GridKey, list[tuple[Cell, SweepCell]]] = defaultdict(list)
    for cell, extra in zip(cells, extras, strict=True):
        groups[cell.key].append((cell, extra))
    rows = []
    for key, members in groups.items():
        lowest = min(members, key=lambda m: m[0].seed)[1]
        targets = list(lowest.correlations)
        seconds = [c.pretrain_seconds for c, _ in members]
        measured = [s for s in seconds if s is not None]
        answers = [c.answers["delta_score"].macro_f1 for c, _ in members if "delta_score" in c.answers]
        rows.append(
            SweepRow(
                key=key,
                n_seeds=len(members),
                ci_seed=lowest.seed,
                rho={t: MeanStd.over([e.correlations[t].rho for _, e in members]) for t in targets},
                rho_ci={t: (lowest.correlations[t].ci_low, lowest.correlations[t].ci_high) for t in targets},
                macro_f1=MeanStd.over([c.macro_f1 for c, _ in members]),
                val_mae=MeanStd.over([_number(c.regression["val_mae"]) for c, _ in members]),
                baseline_mae=MeanStd.over([_number(c.regression["baseline_mae"]) for c, _ in members]),
                pretrain_seconds=MeanStd.over(measured) if len(measured) == len(seconds) else None,
                resumed=any(c.pretrain_resumed for c, _ in members),
                encoders_of=lowest.encoders_of,
                delta_macro_f1=MeanStd.over(answers) if len(answers) == len(members) else None,
            )
        )
    return rows


def long_form(results: SweepResults) -> pd.DataFrame:
    """``sweep.csv``: one row per (dataset, setting, loss) with the setting's overrides and every number."""
    rows = []
    for row in results.sweep.rows:
        overrides = results.sweep.settings[row.key.setting or ""]
        flat: dict[str, Any] = row.key.axes() | {
            "overrides": ", ".join(f"{k}={v}" for k, v in overrides.items()),
            "n_seeds": row.n_seeds,
            "ci_seed": row.ci_seed,
        }
        for target, stats in row.rho.items():
            low, high = row.rho_ci[target]
            flat |= {f"rho_{target}_mean": stats.mean, f"rho_{target}_std": stats.std}
            flat |= {f"rho_{target}_ci_low": low, f"rho_{target}_ci_high": high}
        for name in ("macro_f1", "delta_macro_f1", "val_mae", "baseline_mae", "pretrain_seconds"):
            stats = getattr(row, name)
            flat[f"{name}_mean"] = stats.mean if stats else np.nan
            flat[f"{name}_std"] = stats.std if stats else np.nan
        flat |= {"mae_reduction": row.mae_reduction, "resumed": row.resumed}
        rows.append(flat | {"encoders_of": row.encoders_of or ""})
    return pd.DataFrame(rows)


def _correlation(analysis: DistanceAnalysis) -> Correlation:
    return Correlation(
        rho=analysis.rho, ci_low=analysis.ci_low, ci_high=analysis.ci_high, n_pairs=analysis.n_pairs
    )


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)
