"""Table 4: the ablation grid backbone × combine × loss × classifier (× seed), on each dataset.

Wiring only, on top of :mod:`learner.experiments.table3`'s resumable stages. Each (dataset, backbone, loss,
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from learner import atomic
from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig
from learner.data.manifest import load_manifest
from learner.data.scales import scale_from_config
from learner.evaluation.report import render_ablation
from learner.experiments.table3 import (
    METRICS,
    cell_config,
    cell_summary,
    describe_dataset,
    embedding_device,
    ensure_classification,
    ensure_encoder,
    summarise,
    with_grid,
)
from learner.runs import open_run_dir

GRID_KEYS: tuple[str, ...] = ("dataset", "backbone", "combine", "loss", "classifier")


@dataclass(frozen=True)
class AblationResult:
    """``results`` is what ``results.json`` holds; ``table`` the Markdown of ``table4.md``."""

    out_dir: Path
    results: dict[str, Any]
    table: str


def run_ablation(
    config: Config,
    out_dir: str | os.PathLike[str],
    *,
    grid: ExperimentConfig | None = None,
    datasets: Sequence[DatasetSpec] | None = None,
    backbones: Sequence[str] | None = None,
    combines: Sequence[str] | None = None,
    classifiers: Sequence[str] | None = None,
    losses: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    resume: bool = False,
    force: bool = False,
) -> AblationResult:
    """Run (or continue) the Table 4 grid; finished stages are reused, never recomputed.

    Args:
        config: the base config of every cell.
        out_dir: the experiment's run directory.
        grid: the experiment grid (default: :class:`ExperimentConfig`'s defaults).
        datasets, backbones, combines, classifiers, losses, seeds: override the ``grid`` axes.
        resume: continue an experiment in ``out_dir``. force: wipe ``out_dir`` first.

    Raises:
        ConfigError: an empty axis or an invalid name (checked for every cell before any work starts).
        RunDirError: ``out_dir`` not empty without resume/force, or a finished stage with another config.
    """
    axes = {"backbones": backbones, "combines": combines, "classifiers": classifiers}
    grid = with_grid(grid or ExperimentConfig(), datasets=datasets, losses=losses, seeds=seeds, **axes)
    plan: list[tuple[DatasetSpec, Path, Config, list[tuple[str, Config]]]] = []
    for dataset in grid.datasets:  # every config is built (so validated) before the first pretraining
        for backbone, loss, seed in itertools.product(grid.backbones, grid.losses, grid.seeds):
            keys = {"model.backbone": backbone, "loss.name": loss, "seed": seed}
            variants = [
                (
                    f"classify-{combine}-{head}",
                    cell_config(config, dataset, **keys, **classifier_keys(combine, head)),
                )
                for combine, head in itertools.product(grid.combines, grid.classifiers)
            ]
            where = Path(dataset.name) / backbone / loss / f"seed-{seed}"
            plan.append((dataset, where, cell_config(config, dataset, **keys), variants))
    run = open_run_dir(out_dir, config, resume=resume, force=force)
    atomic.write_text(run.path / "config.yaml", Experiment(config, grid).to_yaml())
    device = embedding_device(config)
    manifests = {
        d.name: load_manifest(d.manifest, scale_from_config(cell_config(config, d).data))
        for d in grid.datasets
    }
    cells: list[dict[str, Any]] = []
    for dataset, where, encoder_cfg, variants in plan:
        encoder = ensure_encoder(encoder_cfg, run.path / where / "encoder")
        for name, cfg in variants:
            manifest = manifests[dataset.name]
            classified = ensure_classification(
                run.path / where / "encoder", manifest, cfg, run.path / where / name, device
            )
            keys = {
                "dataset": dataset.name,
                "backbone": cfg.model.backbone,
                "combine": cfg.classifier.combine,
                "loss": cfg.loss.name,
                "classifier": cfg.classifier.head,
                "seed": cfg.seed,
                "dir": str(where),
                "clips_per_scan": cfg.classifier.clips_per_scan,
            }
            cells.append(cell_summary(keys, encoder, classified))
    results = {
        "kind": "ablation",
        "datasets": [describe_dataset(d, manifests[d.name]) for d in grid.datasets],
        **{
            axis: list(getattr(grid, axis))
            for axis in ("backbones", "combines", "classifiers", "losses", "seeds")
        },
        "cells": cells,
        "summary": _paper_order(summarise(cells, GRID_KEYS), grid),
    }
    table = render_ablation(results)
    atomic.write_text(run.path / "table4.md", table)
    with atomic.atomic_path(run.path / "table4.csv") as tmp:
        _long_form(results).to_csv(tmp, index=False)
    atomic.write_json(run.path / "results.json", results)
    return AblationResult(run.path, results, table)


def classifier_keys(combine: str, head: str) -> dict[str, str]:
    """The dotted config overrides of one classifier variant."""
    return {"classifier.combine": combine, "classifier.head": head}


def _paper_order(rows: list[dict[str, Any]], grid: Any) -> list[dict[str, Any]]:
    """Table 4's row order: dataset, backbone, combine, classifier, then loss, each in grid order."""
    orders = {
        "dataset": [d.name for d in grid.datasets],
        "backbone": grid.backbones,
        "combine": grid.combines,
        "classifier": grid.classifiers,
        "loss": grid.losses,
    }
    return sorted(rows, key=lambda r: tuple(orders[k].index(r[k]) for k in orders))


def _long_form(results: dict[str, Any]) -> pd.DataFrame:
    """``table4.csv``: one row per grid row with every metric's mean and std over seeds."""
    return pd.DataFrame(
        [
            {key: row[key] for key in (*GRID_KEYS, "n_seeds")}
            | {f"{name}_{stat}": row[name][stat] for name in METRICS for stat in ("mean", "std")}
            for row in results["summary"]
        ]
    )
