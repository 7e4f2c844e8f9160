"""Table 4 (Section 3): the ablation grid backbone × combine × loss × classifier (× seed), on each dataset.

Wiring only, on the grid engine (:mod:`learner.experiments.grid`) and its resumable stages
(:mod:`learner.experiments.stages`). Each (dataset, backbone, loss, seed) is pretrained ONCE; its embedding
table (cached in the encoder's run dir) serves every combine × classifier variant, so a grid of B backbones, L
losses and S seeds costs B·L·S pretrainings however many classifier variants it has (the paper's 3 × 3 = 9 per
seed for 36 rows).

Layout of ``OUT``::

    <dataset>/<backbone>/<loss>/seed-<k>/encoder/                      a pretraining run
    <dataset>/<backbone>/<loss>/seed-<k>/classify-<combine>-<head>/    one classification run per variant
    table4.csv results.json                                            (the report adds table4.md)
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from learner.config import Config, Experiment, ExperimentConfig
from learner.experiments import grid as engine
from learner.experiments import stages
from learner.experiments.launch import check_launcher, launch_cells
from learner.experiments.results import METRICS, AblationResults, Cell, ExperimentResult, GridKey, SummaryRow
from learner.layout import classification_stage
from learner.timing import CLOCK, Mark


def run_ablation(
    experiment: Experiment, out_dir: str | os.PathLike[str], *, resume: bool = False, force: bool = False
) -> ExperimentResult:
    """Run (or continue) the Table 4 grid; finished stages are reused, never recomputed.

    Args:
        experiment: the base config of every cell and the grid (``datasets``, ``backbones``, ``combines``,
            ``classifiers``, ``losses``, ``seeds``).
        out_dir: the experiment's run directory.
        resume: continue an experiment in ``out_dir``. force: wipe ``out_dir`` first.

    Raises:
        ConfigError: an empty axis or an invalid name (checked for every cell before any work starts), or
            ``cuda`` without CUDA.
        RunDirError: ``out_dir`` not empty without resume/force, or a finished stage with another config.
    """
    started = CLOCK.mark()
    plan = plan_ablation(experiment, out_dir, resume=resume, force=force)
    return engine.execute(plan, lambda run_dir: _run(plan, run_dir, started))


AXES = ("losses", "seeds", "backbones", "combines", "classifiers")


def plan_ablation(
    experiment: Experiment, out_dir: str | os.PathLike[str], *, resume: bool = False, force: bool = False
) -> engine.GridPlan:
    """Table 4 checked before any work (:func:`learner.experiments.grid.plan_grid`), cells as
    :func:`ablation_cells` builds them."""
    check_launcher(experiment.config.runtime)
    return engine.plan_grid(
        experiment, out_dir, ablation_cells, axes=AXES, resume=resume, force=force, kind="ablation"
    )


def ablation_cells(config: Config, grid: ExperimentConfig) -> list[engine.PlannedCell]:
    """One cell per dataset × backbone × loss × seed (one encoder), with one classification stage per
    combine × classifier; every config built and checked."""
    cells = []
    for dataset in grid.datasets:
        for backbone, loss, seed in itertools.product(grid.backbones, grid.losses, grid.seeds):
            keys = {"model.backbone": backbone, "loss.name": loss, "seed": seed}
            variants = []
            for combine, head in itertools.product(grid.combines, grid.classifiers):
                cfg = stages.cell_config(config, dataset, **keys, **classifier_keys(combine, head))
                key = GridKey(
                    dataset=dataset.name, loss=loss, backbone=backbone, combine=combine, classifier=head
                )
                variants.append((classification_stage((combine, head)), key, cfg))
            where = Path(dataset.name) / backbone / loss / f"seed-{seed}"
            encoder = stages.cell_config(config, dataset, **keys)
            cells.append(engine.PlannedCell(dataset.name, where, encoder, tuple(variants)))
    return cells


def _run(plan: engine.GridPlan, run_dir: Path, started: Mark) -> ExperimentResult:
    grid = plan.grid
    launch_cells(run_dir, engine.cell_jobs(plan, run_dir), plan.config.runtime)
    cells: list[Cell] = []
    for index, planned in enumerate(plan.cells, 1):
        engine.announce(index, len(plan.cells), planned.where)
        encoder = (planned.where, planned.encoder)  # one pretraining serves every classifier variant
        cells += [
            stages.run_cell(
                run_dir, planned.where, key, cfg, plan.manifests[planned.dataset], plan.device, encoder
            )
            for _, key, cfg in planned.classifiers
        ]
    results = AblationResults(
        datasets=[engine.describe_dataset(d, plan.manifests[d.name]) for d in grid.datasets],
        losses=list(grid.losses),
        seeds=list(grid.seeds),
        cells=cells,
        summary=_paper_order(engine.summarise(cells), grid),
        backbones=list(grid.backbones),
        combines=list(grid.combines),
        classifiers=list(grid.classifiers),
    )
    return engine.write_outputs(run_dir, results, _long_form(results), started)


def classifier_keys(combine: str, head: str) -> dict[str, str]:
    """The dotted config overrides of one classifier variant."""
    return {"classifier.combine": combine, "classifier.head": head}


def _paper_order(rows: list[SummaryRow], grid: ExperimentConfig) -> list[SummaryRow]:
    """Table 4's row order: dataset, backbone, combine, classifier, then loss, each in grid order."""
    orders: dict[str, Sequence[str]] = {
        "dataset": [d.name for d in grid.datasets],
        "backbone": grid.backbones,
        "combine": grid.combines,
        "classifier": grid.classifiers,
        "loss": grid.losses,
    }
    return sorted(rows, key=lambda r: tuple(orders[k].index(getattr(r.key, k)) for k in orders))


def _long_form(results: AblationResults) -> pd.DataFrame:
    """``table4.csv``: one row per grid row with every metric's mean and std over seeds."""
    return pd.DataFrame(
        [
            row.key.axes()
            | {"n_seeds": row.n_seeds}
            | {
                f"{name}_{stat}": getattr(row.stats[name], stat)
                for name in METRICS
                for stat in ("mean", "std")
            }
            for row in results.summary
        ]
    )
