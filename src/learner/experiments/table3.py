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
from learner.config import Config, DatasetSpec, ExperimentConfig, LossConfig, apply_overrides
from learner.data.adni import normalise_viscode
from learner.data.manifest import Manifest, load_manifest
from learner.data.scales import scale_from_config
from learner.errors import ConfigError, RunDirError
from learner.evaluation.classify import phantom_folder, run_classification
from learner.evaluation.embed import embed_scans
from learner.evaluation.embedding_analysis import DistanceAnalysis, distance_vs_change, plot_distance_panels
from learner.evaluation.metrics import paired_difference_ci
from learner.evaluation.report import render_table3
from learner.losses.registry import build_objective
from learner.runs import open_run_dir
from learner.training.checkpoint import checkpoint_fingerprint
from learner.training.pretrain import RESUMABLE_CHANGES, pretrain

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
    pretrain_calls: int


# ------------------------------------------------------------------------------------------------ cells
def cell_config(base: Config, dataset: DatasetSpec, **keys: Any) -> Config:
    """The config of one grid cell: ``base`` pointed at ``dataset`` with dotted ``keys`` overridden.

    The experiment section is reset (only ``bootstrap`` is kept) so a cell's config does not change when
    the grid around it grows.
    """
    cell = apply_overrides(base, {"data.manifest": str(dataset.manifest), "data.scale": dataset.scale, **keys})
    return cell.model_copy(update={"experiment": ExperimentConfig(bootstrap=base.experiment.bootstrap)})


def config_digest(config: Config) -> str:
    """Hash of everything in ``config`` that changes results (not device, workers, cache location)."""
    flat = _flatten(config.model_dump(mode="json"))
    kept = {key: value for key, value in flat.items() if key not in RESUMABLE_CHANGES}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


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
            row[name] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
        rows.append(row)
    return rows


def compare_with_baseline(
    cells: Sequence[dict[str, Any]], baseline: str
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """dataset → loss → metric → paired difference (loss − baseline) over the seeds both completed."""
    by_key = {(c["dataset"], c["loss"], c["seed"]): c for c in cells}
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = defaultdict(dict)
    for dataset, loss, _ in sorted({(c["dataset"], c["loss"], 0) for c in cells if c["loss"] != baseline}):
        seeds = sorted(
            s for d, l_, s in by_key if d == dataset and l_ == loss and (dataset, baseline, s) in by_key
        )
        if not seeds:
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
    """scan_id → the phantom's latent severity (LUS: the zone's severity; MRI: atrophy); None for real data."""
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


def distance_analyses(
    cells: Sequence[dict[str, Any]], manifest: Manifest, target: str | dict[str, float], n_boot: int
) -> dict[str, DistanceAnalysis]:
    """Fig. 1 data of one dataset: loss → analysis of the cell with the lowest seed, on its test pairs."""
    analyses = {}
    for cell in sorted(cells, key=lambda c: c["seed"], reverse=True):  # the lowest seed is written last
        encoder_dir, classifier_dir = Path(cell["encoder_dir"]), Path(cell["classifier_dir"])
        pairs = pd.read_csv(classifier_dir / "pairs" / "test.csv", dtype={"first_scan_id": str, "second_scan_id": str})
        table = embed_scans(encoder_dir, manifest, clips_per_scan=cell["clips_per_scan"])
        name = "score" if isinstance(target, str) else "latent severity"
        analyses[cell["loss"]] = distance_vs_change(
            pairs, table.embeddings, table.scan_ids, target, target_name=name, n_boot=n_boot, seed=cell["seed"]
        )
    order = list(dict.fromkeys(c["loss"] for c in cells))
    return {loss: analyses[loss] for loss in order}


def figure_one(
    out_dir: Path, dataset: DatasetSpec, cells: Sequence[dict[str, Any]], manifest: Manifest, n_boot: int
) -> dict[str, Any]:
    """Write the Fig. 1 panels of one dataset; returns the PNG names and each panel's Spearman statistics."""
    scale = scale_from_config(cell_config(Config(), dataset).data)
    targets: dict[str, tuple[str | dict[str, float], str]] = {"score": ("score", f"|Δ {scale.name} score|")}
    truth = latent_severity(manifest)
    if truth is not None:
        targets["latent"] = (truth, "|Δ latent severity| (phantom ground truth)")
    figures: dict[str, Any] = {}
    for key, (target, xlabel) in targets.items():
        analyses = distance_analyses(cells, manifest, target, n_boot)
        png = f"fig1_{dataset.name}_{key}.png"
        plot_distance_panels({_loss_label(k): a for k, a in analyses.items()}, out_dir / png, xlabel=xlabel)
        figures[key] = {"png": png, "seed": min(c["seed"] for c in cells)}
        figures[key]["panels"] = {loss: a.to_metrics() for loss, a in analyses.items()}
    return figures


def _loss_label(name: str) -> str:
    from learner.evaluation.report import loss_label

    return loss_label(name)
