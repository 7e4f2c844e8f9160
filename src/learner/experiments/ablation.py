"""Table 4 (Section 3): the ablation grid backbone × combine × loss × classifier (× seed), on each dataset.

Wiring only, on the resumable stages of :mod:`learner.experiments.grid`. Each (dataset, backbone, loss,
seed) is pretrained ONCE; its embedding table (cached in the encoder's run dir) serves every combine ×
classifier variant, so a grid of B backbones, L losses and S seeds costs B·L·S pretrainings however many
classifier variants it has (the paper's 3 × 3 = 9 per seed for 36 rows).

Layout of ``OUT``::

    <dataset>/<backbone>/<loss>/seed-<k>/encoder/                      a pretraining run
    <dataset>/<backbone>/<loss>/seed-<k>/classify-<combine>-<head>/    one classification run per variant
    table4.md table4.csv results.json
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig
from learner.experiments import grid as engine
from learner.experiments.launch import check_launcher, launch_cells
from learner.experiments.results import METRICS, Cell, ExperimentResult, GridKey, Results, SummaryRow
from learner.experiments.tables import render_ablation
from learner.timing import CLOCK


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
    axes = ("losses", "seeds", "backbones", "combines", "classifiers")
    started = CLOCK.mark()
    config, grid = experiment.config, engine.check_grid(experiment.grid, axes)
    plan: list[tuple[DatasetSpec, Path, Config, list[tuple[str, Config]]]] = []
    for dataset in grid.datasets:  # every config is built (so validated) before the first pretraining
        for backbone, loss, seed in itertools.product(grid.backbones, grid.losses, grid.seeds):
            keys = {"model.backbone": backbone, "loss.name": loss, "seed": seed}
            variants = [
                (
                    f"classify-{combine}-{head}",
                    engine.cell_config(config, dataset, **keys, **classifier_keys(combine, head)),
                )
                for combine, head in itertools.product(grid.combines, grid.classifiers)
            ]
            where = Path(dataset.name) / backbone / loss / f"seed-{seed}"
            plan.append((dataset, where, engine.cell_config(config, dataset, **keys), variants))
    check_launcher(config.runtime)
    run_dir = engine.open_experiment(config, grid, out_dir, resume=resume, force=force)
    manifests = {d.name: engine.dataset_manifest(config, d) for d in grid.datasets}
    jobs = [
        engine.CellJob(run_dir, where, encoder_cfg, tuple(variants), manifests[dataset.name])
        for dataset, where, encoder_cfg, variants in plan
    ]
    launch_cells(run_dir, jobs, config.runtime)
    device = engine.collect_device(config)  # where the frozen encoders embed
    cells: list[Cell] = []
    for index, (dataset, where, encoder_cfg, variants) in enumerate(plan, 1):
        engine.announce(index, len(plan), where)
        encoder = engine.ensure_encoder(encoder_cfg, run_dir / where / "encoder", str(where))
        for name, cfg in variants:
            manifest = manifests[dataset.name]
            classified = engine.ensure_classification(
                run_dir / where / "encoder", manifest, cfg, run_dir / where / name, device
            )
            key = GridKey(
                dataset=dataset.name,
                loss=cfg.loss.name,
                backbone=cfg.model.backbone,
                combine=cfg.classifier.combine,
                classifier=cfg.classifier.head,
            )
            cells.append(
                engine.cell_result(key, cfg.seed, where, cfg.classifier.clips_per_scan, encoder, classified)
            )
    results = Results(
        kind="ablation",
        datasets=[engine.describe_dataset(d, manifests[d.name]) for d in grid.datasets],
        losses=list(grid.losses),
        seeds=list(grid.seeds),
        cells=cells,
        summary=_paper_order(engine.summarise(cells), grid),
        backbones=list(grid.backbones),
        combines=list(grid.combines),
        classifiers=list(grid.classifiers),
    )
    return engine.write_outputs(
        run_dir, "table4", results, render_ablation(results), _long_form(results), started
    )


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


def _long_form(results: Results) -> pd.DataFrame:
    """``table4.csv``: one row per grid row with every metric's mean and std over seeds."""
    return pd.DataFrame(
        [
            row.key.to_json()
            | {"n_seeds": row.n_seeds}
            | {
                f"{name}_{stat}": getattr(row.stats[name], stat)
                for name in METRICS
                for stat in ("mean", "std")
            }
            for row in results.summary
        ]
    )
