"""Table 3 and Fig. 1: every pretraining objective × dataset × seed, pretrained → embedded → classified.

Wiring only — the numbers come from :mod:`learner.training.pretrain`, :mod:`learner.evaluation.classify`,
:mod:`learner.evaluation.metrics` and :mod:`learner.evaluation.embedding_analysis`.

Layout of ``OUT``::

    config.yaml run.json log.txt        the experiment's run directory
    <dataset>/<loss>/seed-<k>/encoder/     a pretraining run   (complete.json written last)
    <dataset>/<loss>/seed-<k>/classifier/  a classification run (complete.json written last)
    fig1_<dataset>_score.png            Fig. 1: cosine distance vs |Δ score|, one panel per objective
    fig1_<dataset>_latent.png           … vs |Δ latent severity| (phantom cohorts only)
    table3.md table3.csv results.json   the table in the paper's layout, long-form numbers, everything

**Resumable.** A stage whose folder holds ``complete.json`` is never recomputed; an interrupted pretraining
continues from its last checkpoint; an interrupted classification is redone (it is cheap). A completed cell
whose stored config differs from the requested one is an error, not silently reused. Adding a loss, seed or
dataset to the grid and resuming computes only the new cells.

**Summary.** Each (dataset, loss) gets mean ± sample std over seeds of accuracy, macro-F1 and weighted-F1;
each objective is compared with the baseline objective (``mse`` when in the grid) by the mean per-seed
difference and its t-interval (:func:`learner.evaluation.metrics.paired_difference_ci`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from learner import atomic
from learner.config import Config, DatasetSpec, Experiment, ExperimentConfig, LossConfig, apply_overrides
from learner.data.adni import normalise_viscode
from learner.data.manifest import Manifest, load_manifest
from learner.data.scales import scale_from_config
from learner.errors import ConfigError, RunDirError
from learner.evaluation.classify import data_source, phantom_folder, run_classification
from learner.evaluation.embed import embed_scans
from learner.evaluation.embedding_analysis import DistanceAnalysis, distance_vs_change, plot_distance_panels
from learner.evaluation.metrics import paired_difference_ci
from learner.evaluation.report import loss_label, render_table3
from learner.losses.registry import build_objective
from learner.runs import open_run_dir
from learner.training.checkpoint import checkpoint_fingerprint
from learner.training.pretrain import pretrain

log = logging.getLogger(__name__)

COMPLETE = "complete.json"
METRICS = ("accuracy", "macro_f1", "weighted_f1")
BASELINE_LOSS = "mse"


@dataclass(frozen=True)
class Table3Result:
    """``results`` is what ``results.json`` holds; ``table`` the Markdown of ``table3.md``."""

    out_dir: Path
    results: dict[str, Any]
    table: str


# ------------------------------------------------------------------------------------------------ cells
def cell_config(base: Config, dataset: DatasetSpec, **keys: Any) -> Config:
    """The config of one grid cell: ``base`` pointed at ``dataset`` with dotted ``keys`` overridden."""
    return apply_overrides(
        base, {"data.manifest": str(dataset.manifest), "data.scale": dataset.scale, **keys}
    )


def config_digest(config: Config) -> str:
    """Hash of everything in ``config`` that changes results (all but ``runtime``)."""
    return hashlib.sha256(json.dumps(config.result_settings(), sort_keys=True).encode()).hexdigest()[:16]


def completed(directory: Path, config: Config) -> dict[str, Any] | None:
    """The ``complete.json`` record of a finished stage, None when unfinished.

    Raises:
        RunDirError: the stage finished with a different config (reusing it would mix settings).
    """
    try:
        record = json.loads((directory / COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("config_digest") != config_digest(config):
        raise RunDirError(
            f"{directory} was computed with another config; use a new output folder or --force to redo it"
        )
    return record


def ensure_encoder(config: Config, directory: Path) -> dict[str, Any]:
    """Pretrain into ``directory`` unless complete; continue an interrupted run from its last checkpoint.

    Returns the stage record: ``fingerprint`` (of ``checkpoints/best``) and ``metrics`` (pretraining's
    ``metrics.json``: best/last val MAE, RMSE, r and the predict-the-mean baseline).
    """
    record = completed(directory, config)
    if record is not None:
        return record
    resume = (directory / "config.yaml").is_file()
    occupied = directory.is_dir() and any(directory.iterdir())
    pretrain(config, directory, resume=resume, force=occupied and not resume)
    record = {
        "config_digest": config_digest(config),
        "fingerprint": checkpoint_fingerprint(directory / "checkpoints" / "best"),
        "metrics": json.loads((directory / "metrics.json").read_text(encoding="utf-8")),
    }
    atomic.write_json(directory / COMPLETE, record)
    return record


def ensure_classification(
    encoder_dir: Path, manifest: Manifest, config: Config, directory: Path, device: str
) -> dict[str, Any]:
    """Fit and test the classifier on ``encoder_dir`` into ``directory`` unless complete.

    Returns the stage record: the classification ``metrics`` (``metrics.json``) and the config digest.
    """
    record = completed(directory, config)
    if record is not None:
        return record
    result = run_classification(encoder_dir, manifest, config, directory, device=device, force=True)
    record = {"config_digest": config_digest(config), "metrics": result.metrics}
    atomic.write_json(directory / COMPLETE, record)
    return record


def cell_summary(keys: dict[str, Any], encoder: dict[str, Any], classified: dict[str, Any]) -> dict[str, Any]:
    """One row of ``results.json["cells"]``: the cell's keys, test metrics, CIs, regression quality, pairs."""
    test = classified["metrics"]["test"]
    return {
        **keys,
        **{name: test[name] for name in METRICS},
        "ci": test["ci"],
        "n_test_pairs": test["n"],
        "regression": encoder["metrics"]["best"],
        "pair_counts": classified["metrics"]["pair_counts"],
        "encoder_fingerprint": encoder["fingerprint"],
    }


# ------------------------------------------------------------------------------------------- summaries
def summarise(cells: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Mean, sample std (ddof 1; 0 for one seed) and n of every metric over the cells sharing ``keys``."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        groups[tuple(cell[k] for k in keys)].append(cell)
    rows = []
    for group_keys, members in groups.items():
        row: dict[str, Any] = dict(zip(keys, group_keys, strict=True)) | {"n_seeds": len(members)}
        for name in METRICS:
            values = np.array([m[name] for m in members], dtype=np.float64)
            row[name] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            }
        rows.append(row)
    return rows


def compare_with_baseline(cells: Sequence[dict[str, Any]], baseline: str) -> dict[str, dict[str, Any]]:
    """dataset → loss → metric → paired difference (loss − baseline) over the seeds both completed."""
    by_key = {(c["dataset"], c["loss"], c["seed"]): c for c in cells}
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for dataset, loss in dict.fromkeys((c["dataset"], c["loss"]) for c in cells):
        seeds = [s for d, l_, s in by_key if (d, l_) == (dataset, loss) and (d, baseline, s) in by_key]
        if loss == baseline or not seeds:
            continue
        out[dataset][loss] = {
            name: asdict(
                paired_difference_ci(
                    np.array([by_key[(dataset, loss, s)][name] for s in seeds]),
                    np.array([by_key[(dataset, baseline, s)][name] for s in seeds]),
                )
            )
            for name in METRICS
        }
    return dict(out)


# ------------------------------------------------------------------------------------------- Fig. 1
def latent_severity(manifest: Manifest) -> dict[str, float] | None:
    """scan_id → the phantom's latent severity (LUS: zone severity; MRI: atrophy); None for real data."""
    folder = phantom_folder(manifest)
    if folder is None:
        return None
    kind = json.loads((folder / "phantom.json").read_text(encoding="utf-8")).get("kind")
    reader = _GROUND_TRUTH.get(kind)
    return reader(pd.read_csv(folder / "ground_truth.csv", dtype={"PTID": str})) if reader else None


def _lus_truth(table: pd.DataFrame) -> dict[str, float]:
    return dict(zip(table["scan_id"].astype(str), table["severity_zone"].astype(float), strict=True))


def _mri_truth(table: pd.DataFrame) -> dict[str, float]:
    """Keyed like the ADNI adapter's scan IDs, ``<PTID>_<normalised VISCODE>``."""
    truth = {}
    for ptid, viscode, atrophy in zip(table["PTID"], table["VISCODE"], table["atrophy"], strict=True):
        visit = normalise_viscode(str(viscode))
        if visit is not None:
            truth[f"{ptid}_{visit[0]}"] = float(atrophy)
    return truth


_GROUND_TRUTH: dict[str, Callable[[pd.DataFrame], dict[str, float]]] = {"lus": _lus_truth, "mri": _mri_truth}


def figure_one(
    out_dir: Path, cells: Sequence[dict[str, Any]], manifest: Manifest, n_boot: int
) -> dict[str, Any]:
    """Fig. 1 of one dataset from its lowest-seed cells: cosine distance of the test intra-patient pairs
    against |Δ score| (and |Δ latent severity| on a phantom), one panel per objective.

    Returns target → ``png`` (file name in ``out_dir``), ``seed`` and ``panels`` (loss → Spearman ρ, CI, n).
    """
    seed = min(c["seed"] for c in cells)
    shown = [c for c in cells if c["seed"] == seed]
    targets: dict[str, tuple[str | dict[str, float], str]] = {"score": ("score", "|Δ score|")}
    truth = latent_severity(manifest)
    if truth is not None:
        targets["latent"] = (truth, "|Δ latent severity| (phantom ground truth)")
    figures: dict[str, Any] = {}
    for key, (target, xlabel) in targets.items():
        analyses = {c["loss"]: _distance_analysis(out_dir, c, manifest, target, n_boot) for c in shown}
        png = f"fig1_{shown[0]['dataset']}_{key}.png"
        plot_distance_panels({loss_label(k): a for k, a in analyses.items()}, out_dir / png, xlabel=xlabel)
        figures[key] = {"png": png, "seed": seed, "panels": {k: a.to_metrics() for k, a in analyses.items()}}
    return figures


def _distance_analysis(
    out_dir: Path, cell: dict[str, Any], manifest: Manifest, target: str | dict[str, float], n_boot: int
) -> DistanceAnalysis:
    folder = out_dir / cell["dir"]
    pairs = pd.read_csv(folder / "classifier" / "pairs" / "test.csv", dtype=_ID_COLUMNS)
    table = embed_scans(folder / "encoder", manifest, clips_per_scan=cell["clips_per_scan"])  # cached
    name = "score" if isinstance(target, str) else "latent severity"
    return distance_vs_change(
        pairs, table.embeddings, table.scan_ids, target, target_name=name, n_boot=n_boot, seed=cell["seed"]
    )


_ID_COLUMNS = {c: str for c in ("first_scan_id", "second_scan_id", "first_patient_id", "second_patient_id")}


# ------------------------------------------------------------------------------------------- the grid
def run_table3(
    config: Config,
    out_dir: str | os.PathLike[str],
    *,
    grid: ExperimentConfig | None = None,
    datasets: Sequence[DatasetSpec] | None = None,
    losses: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    resume: bool = False,
    force: bool = False,
) -> Table3Result:
    """Run (or continue) the Table 3 grid: dataset × loss × seed, each pretrained → embedded → classified.

    Args:
        config: the base config of every cell.
        out_dir: the experiment's run directory (see the module docstring for its layout).
        grid: the experiment grid (default: :class:`ExperimentConfig`'s defaults).
        datasets, losses, seeds: override ``grid.datasets`` / ``losses`` / ``seeds``.
        resume: continue an experiment in ``out_dir`` (finished cells are reused, never recomputed).
        force: wipe ``out_dir`` first.

    Raises:
        ConfigError: an empty grid, an unknown loss, or two datasets with one name.
        RunDirError: ``out_dir`` not empty without resume/force, or a finished cell with another config.
    """
    grid = with_grid(grid or ExperimentConfig(), datasets=datasets, losses=losses, seeds=seeds)
    run = open_run_dir(out_dir, config, resume=resume, force=force)
    atomic.write_text(run.path / "config.yaml", Experiment(config, grid).to_yaml())  # the grid may grow
    device = embedding_device(config)
    cells: list[dict[str, Any]] = []
    figures: dict[str, Any] = {}
    sources: list[dict[str, Any]] = []
    for dataset in grid.datasets:
        manifest = load_manifest(dataset.manifest, scale_from_config(cell_config(config, dataset).data))
        sources.append(describe_dataset(dataset, manifest))
        rows = []
        for loss in grid.losses:
            for seed in grid.seeds:
                cfg = cell_config(config, dataset, **{"loss.name": loss, "seed": seed})
                where = Path(dataset.name) / loss / f"seed-{seed}"
                log.info("table 3 cell %s", where)
                encoder = ensure_encoder(cfg, run.path / where / "encoder")
                classified = ensure_classification(
                    run.path / where / "encoder", manifest, cfg, run.path / where / "classifier", device
                )
                keys = {"dataset": dataset.name, "loss": loss, "seed": seed, "dir": str(where)}
                rows.append(
                    cell_summary(
                        keys | {"clips_per_scan": cfg.classifier.clips_per_scan}, encoder, classified
                    )
                )
        figures[dataset.name] = figure_one(run.path, rows, manifest, config.classifier.bootstrap)
        cells += rows
    baseline = BASELINE_LOSS if BASELINE_LOSS in grid.losses else grid.losses[0]
    results = {
        "kind": "table3",
        "datasets": sources,
        "losses": list(grid.losses),
        "seeds": list(grid.seeds),
        "baseline_loss": baseline,
        "cells": cells,
        "summary": summarise(cells, ("dataset", "loss")),
        "comparisons": compare_with_baseline(cells, baseline),
        "figures": figures,
    }
    table = render_table3(results)
    atomic.write_text(run.path / "table3.md", table)
    with atomic.atomic_path(run.path / "table3.csv") as tmp:
        long_form(results).to_csv(tmp, index=False)
    atomic.write_json(run.path / "results.json", results)
    return Table3Result(run.path, results, table)


def with_grid(
    grid: ExperimentConfig,
    *,
    datasets: Sequence[DatasetSpec] | None = None,
    losses: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    **more: Sequence[str] | None,
) -> ExperimentConfig:
    """``grid`` with the given axes replacing its own, validated up front.

    Raises:
        ConfigError: an empty axis, no dataset, two datasets sharing a name, or an unknown loss.
    """
    given = {"datasets": datasets, "losses": losses, "seeds": seeds, **more}
    grid = grid.model_copy(update={k: list(v) for k, v in given.items() if v is not None})
    if not grid.datasets:
        raise ConfigError("experiment.datasets is empty; list at least one {name, manifest, scale}")
    names = [d.name for d in grid.datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"experiment.datasets: dataset names must be unique, got {names}")
    for axis in ("losses", "seeds", *more):
        if not getattr(grid, axis):
            raise ConfigError(f"experiment.{axis} is empty")
    for loss in grid.losses:
        build_objective(LossConfig(name=loss))
    return grid


def describe_dataset(dataset: DatasetSpec, manifest: Manifest) -> dict[str, Any]:
    """A dataset entry of ``results.json``: its spec, scan/patient counts, data source and phantom record."""
    folder = phantom_folder(manifest)
    record = json.loads((folder / "phantom.json").read_text(encoding="utf-8")) if folder else None
    return {
        **dataset.model_dump(mode="json"),
        "scans": len(manifest.records),
        "patients": len(manifest.patients()),
        "data_source": data_source(manifest),
        "phantom": record,
    }


def embedding_device(config: Config) -> str:
    """Where frozen encoders run: the pretraining device rule (``auto`` = CUDA when visible)."""
    import torch

    cuda = config.runtime.device == "cuda" or (config.runtime.device == "auto" and torch.cuda.is_available())
    return "cuda" if cuda else "cpu"


def long_form(results: dict[str, Any]) -> pd.DataFrame:
    """``table3.csv``: one row per (dataset, loss) with every metric's mean/std and its difference from the
    baseline objective (mean, CI low, CI high)."""
    rows = []
    for row in results["summary"]:
        flat: dict[str, Any] = {"dataset": row["dataset"], "loss": row["loss"], "n_seeds": row["n_seeds"]}
        versus = results["comparisons"].get(row["dataset"], {}).get(row["loss"], {})
        for name in METRICS:
            flat[f"{name}_mean"], flat[f"{name}_std"] = row[name]["mean"], row[name]["std"]
            diff = versus.get(name, {})
            for part in ("mean", "low", "high"):
                flat[f"{name}_diff_{part}"] = diff.get(part, np.nan)
        rows.append(flat)
    return pd.DataFrame(rows)
