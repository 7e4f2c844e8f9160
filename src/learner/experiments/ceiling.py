"""The ceiling study (docs/recipe.md, "Ceilings first"): how far Fig. 1's ρ can go on a cohort at all.

Fig. 1 (Section 3) ranks the test intra-patient pairs by the distance between their embeddings and asks how
well that follows the change of the latent severity the scans were rendered from. Before tuning an
objective it helps to know what that ρ is for encoders no user has, on the same pairs and the same clips:

* an **oracle**: the run's encoder pretrained by :func:`learner.training.pretrain.pretrain` with MSE on each
  scan's *latent* value instead of its score (what the best possible score would teach);
* a **frozen random-init** encoder and the **raw pixels** (:mod:`learner.evaluation.reference_embeddings`,
  Fig. 1's own reference rows);
* **hand features** (:mod:`learner.evaluation.hand_features`): mean frame, depth profile, lower-half
  brightness and column variance, each its own row.

Each row is Spearman's ρ between the pair's distance and |Δ latent| with its patient-bootstrap interval
(:func:`learner.evaluation.embedding_analysis.distance_vs_change`). Embeddings are compared by cosine
distance as in Fig. 1; hand features by Euclidean distance, because two of them are scalars, whose cosine is
always 1 (for a scalar the Euclidean distance is |Δ feature|).

**The oracle's target.** The oracle is an ordinary pretraining on ``latent_manifest.csv``, a copy of the
manifest whose ``score`` column holds the latent, so that it goes through the same planning, cache,
standardisation and checkpoints as any run (no second training path). Its scale is a ``custom`` one spanning
the latents' range: the MSE term standardises the score with the train split's mean and standard deviation,
so any linear scale of the latent trains the same network, and the scale's change rule (class edges) is
read only by contrastive terms, which the oracle does not use. The copy carries the split this study uses
as its split column, so the oracle never sees a test patient.

Layout of ``OUT`` (names from :class:`learner.layout.RunLayout`)::

    config.yaml run.json log.txt     the study's run directory (kind ``ceiling``)
    latent_manifest.csv              the oracle's manifest: score := latent, split := this study's split
    oracle/                          the oracle's pretraining run (checkpoints, metrics, embeddings)
    metrics.json                     every number (:class:`CeilingResults`; the report adds ceiling.md)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from learner.config import Config, apply_overrides
from learner.data.cache import default_cache_root
from learner.data.manifest import Manifest, load_manifest, manifest_from_frame, write_manifest
from learner.data.pairs import split_pairs
from learner.data.provenance import data_source, latent_values, phantom_record
from learner.data.scales import ScoreScale, scale_from_config
from learner.data.splits import resolve_splits
from learner.errors import ConfigError, LearnerError, ManifestError
from learner.evaluation.embed import embed_scans
from learner.evaluation.embedding_analysis import distance_vs_change
from learner.evaluation.hand_features import HAND_FEATURES
from learner.evaluation.reference_embeddings import (
    RAW_PIXEL_SIDE,
    REFERENCE_EMBEDDINGS,
    reference_embeddings,
)
from learner.experiments.results import DatasetSummary, Record, Scalar
from learner.layout import RunLayout
from learner.runs import check_inputs_outside, check_run_dir, open_run_dir, removed_unless_started
from learner.timing import CLOCK
from learner.training.device import resolve_device
from learner.training.plan import check_pretraining
from learner.training.pretrain import pretrain

HAND_LABELS: dict[str, str] = {
    "mean_frame": "mean frame",
    "depth_profile": "depth profile (row means)",
    "lower_half_brightness": "lower-half brightness",
    "column_variance": "column variance (B-line proxy)",
}
"""Each of :data:`learner.evaluation.hand_features.HAND_FEATURES` → its row label."""

LATENT_BANDS = 10
"""The oracle's custom scale needs a change rule; its threshold is the latent range over this many bands.
Only contrastive terms read it, and the oracle is MSE only, so the value changes nothing it computes."""


class CeilingRow(Record):
    """One row of the ceiling table: ``method`` (``oracle``, ``random_init``, ``raw_pixels`` or a hand
    feature), its label, the ``distance`` between a pair's features (``cosine`` or ``euclidean``) and the
    scalars of its :class:`DistanceAnalysis` against |Δ latent| (:meth:`DistanceAnalysis.to_metrics`)."""

    method: str
    label: str
    distance: str
    analysis: Mapping[str, Scalar]


class CeilingResults(Record):
    """A finished study (its ``metrics.json``): the cohort, the settings that shape the rows (seed, the
    oracle's epochs, frames, frame size, bootstrap resamples), the test pairs, the rows in table order, the
    oracle's best and last pretraining rows (``val_mae``, ``baseline_mae``, … in latent units) and the wall
    time in seconds."""

    kind: Literal["ceiling"] = "ceiling"
    dataset: DatasetSummary
    seed: int
    epochs: int
    frames: int
    size: int
    bootstrap: int
    n_pairs: int
    n_patients: int
    rows: list[CeilingRow]
    oracle_best: Mapping[str, Scalar]
    oracle_last: Mapping[str, Scalar]
    seconds: float


@dataclass(frozen=True)
class CeilingResult:
    """The finished study's run directory and its results (the report renders its table)."""

    out_dir: Path
    results: CeilingResults


def run_ceiling(config: Config, out_dir: str | os.PathLike[str], *, force: bool = False) -> CeilingResult:
    """Measure the ceiling rows (module docstring) on the test intra-patient pairs of ``data.manifest``.

    Args:
        config: the study's settings: ``data.manifest`` (it needs a ``latent`` value per scan), the clips
            (``data.*``), the encoder (``model.*``), the oracle's training (``optim.*``; ``loss`` is set to
            MSE), the pairs (``data.pairs``), K clips per scan and the bootstrap (``classifier``), and
            ``seed`` (split without a split column, oracle, random init, bootstrap).
        out_dir: a new (or, with ``force``, replaced) run directory; see the module docstring.
        force: wipe a non-empty ``out_dir`` that holds a run first.

    Raises:
        ManifestError: no latent value for a scan (names the manifest and the ``latent`` column).
        ConfigError, RunDirError, LearnerError: anything else refused before any work, in one line.
    """
    started = CLOCK.mark()
    check_run_dir(out_dir, force=force, kind="ceiling")
    if config.data.manifest is None:
        raise ConfigError("data.manifest is not set; give the MANIFEST argument or set data.manifest")
    scale = scale_from_config(config.data)
    manifest = load_manifest(config.data.manifest, scale, data_root=config.runtime.data_root)
    latents = scan_latents(manifest)
    if force:
        check_inputs_outside(out_dir, [manifest.source, *(r.path for r in manifest.records)])
    manifest = manifest.with_splits(resolve_splits(manifest, config.data.split, config.seed)[0])
    by_split = {split: manifest.by_split(split) for split in ("train", "val", "test")}
    pairs = split_pairs(by_split, scale, config.data.pairs, config.seed)[0]["test"]  # the classify stage's
    if len(pairs) == 0:
        raise LearnerError(f"{manifest.source}: no test intra-patient pairs (test patients need 2+ visits)")
    layout = RunLayout(out_dir)
    oracle_config = oracle_settings(config, manifest, latents, layout.latent_manifest)
    latent_manifest = latent_copy(manifest, latents, scale_from_config(oracle_config.data))
    check_pretraining(oracle_config, latent_manifest)  # its model, batch and split, before any work
    run = open_run_dir(out_dir, config, force=force, kind="ceiling")
    with removed_unless_started(run.path, new=True):
        write_manifest(latent_manifest, layout.latent_manifest)
        oracle = pretrain(oracle_config, layout.oracle.root)
        results = CeilingResults(
            dataset=DatasetSummary(
                name=Path(manifest.source).stem,
                manifest=str(manifest.source),
                scale=config.data.scale,
                scans=len(manifest.records),
                patients=len(manifest.patients()),
                data_source=data_source(manifest),
                phantom=phantom_record(manifest),
            ),
            seed=config.seed,
            epochs=config.optim.epochs,
            frames=config.data.frames,
            size=config.data.size,
            bootstrap=config.classifier.bootstrap,
            n_pairs=len(pairs),
            n_patients=int(pairs["first_patient_id"].nunique()),
            rows=_rows(config, manifest, pairs, latents, layout),
            oracle_best=oracle.best,
            oracle_last=oracle.last,
            seconds=CLOCK.since(started).total,
        )
        run.write_metrics(results.to_json())
    return CeilingResult(run.path, results)


def scan_latents(manifest: Manifest) -> dict[str, float]:
    """scan_id → latent value of every scan (:func:`learner.data.provenance.latent_values`).

    Raises:
        ManifestError: no latent values, a scan without one, or one value for every scan (nothing to rank).
    """
    latents = latent_values(manifest)
    if latents is None:
        raise ManifestError(
            f"{manifest.source}: no 'latent' column with a value in every row; the ceiling study ranks pairs "
            "by the change of each scan's latent ground truth, which the phantom cohorts write there"
        )
    missing = [record.scan_id for record in manifest.records if record.scan_id not in latents]
    if missing:
        raise ManifestError(
            f"{manifest.source}: no latent value for scan {missing[0]!r} ({len(missing)} in all)"
        )
    values = {record.scan_id: latents[record.scan_id] for record in manifest.records}
    if len(set(values.values())) == 1:
        raise ManifestError(f"{manifest.source}: every scan has the latent {next(iter(values.values())):g}")
    return values


def latent_scale(latents: dict[str, float]) -> dict[str, Any]:
    """The oracle's ``data.custom_scale``: the latents' range, a threshold of 1/:data:`LATENT_BANDS` of it;
    ``higher_is_better`` false because the phantoms' latent is a severity (it only names change classes,
    which an MSE pretraining never reads)."""
    low, high = min(latents.values()), max(latents.values())
    return {"low": low, "high": high, "higher_is_better": False, "threshold": (high - low) / LATENT_BANDS}


def latent_copy(manifest: Manifest, latents: dict[str, float], scale: ScoreScale) -> Manifest:
    """``manifest`` (with its split) whose ``score`` column holds each scan's latent value, validated on
    ``scale`` (the oracle's, :func:`latent_scale`); its paths still point at the same scans."""
    frame = manifest.frame.copy()
    frame["score"] = [repr(latents[record.scan_id]) for record in manifest.records]  # repr: exact round trip
    frame["split"] = [record.split for record in manifest.records]
    return manifest_from_frame(frame, scale, root=manifest.root, source=manifest.source, check_files=False)


def oracle_settings(config: Config, manifest: Manifest, latents: dict[str, float], target: Path) -> Config:
    """The oracle's pretraining config: the study's, with MSE on the latent (``target``: the manifest of
    :func:`latent_copy`, on :func:`latent_scale`), the copy's split column kept (it is the study's split, so
    the oracle never sees a test patient) and the study's scan cache (``manifest``'s), so that every row
    reads the same decoded clips."""
    return apply_overrides(
        config,
        {
            "data.manifest": str(target),
            "data.scale": "custom",
            "data.custom_scale": latent_scale(latents),
            "data.split.use_manifest_split": True,
            "loss.name": "mse",
            "runtime.cache_dir": str(default_cache_root(manifest, config.runtime.cache_dir)),
        },
    )


def _rows(
    config: Config, manifest: Manifest, pairs: pd.DataFrame, latents: dict[str, float], layout: RunLayout
) -> list[CeilingRow]:
    """Every row's :class:`DistanceAnalysis` on ``pairs``: the oracle's cached embeddings, then the
    references and hand features from one read of each test scan."""
    device = str(resolve_device(config.runtime.device))
    clips = config.classifier.clips_per_scan
    scan_ids = sorted(set(pairs["first_scan_id"]) | set(pairs["second_scan_id"]))
    oracle = embed_scans(layout.oracle.root, manifest, clips_per_scan=clips, device=device)
    others = reference_embeddings(
        layout.oracle.root, manifest, scan_ids, seed=config.seed, clips_per_scan=clips, device=device,
        features=HAND_FEATURES,
    )  # fmt: skip
    backbone, epochs = config.model.backbone, config.optim.epochs
    labels = {
        "random_init": f"frozen random-init {backbone}",
        "raw_pixels": f"raw pixels (≤ {RAW_PIXEL_SIDE} px a side)",
    } | HAND_LABELS
    methods: list[tuple[str, str, str, np.ndarray, list[str]]] = [
        ("oracle", f"oracle: {backbone}, MSE on the latent, {epochs} epoch{'s' * (epochs != 1)}", "cosine",
         oracle.embeddings, oracle.scan_ids),
        *((name, labels[name], "cosine", others[name], scan_ids) for name in REFERENCE_EMBEDDINGS),
        *((name, labels[name], "euclidean", others[name], scan_ids) for name in HAND_FEATURES),
    ]  # fmt: skip
    rows = []
    for method, label, distance, features, ids in methods:
        analysis = distance_vs_change(
            pairs, features, ids, latents, target_name="latent", n_boot=config.classifier.bootstrap,
            seed=config.seed, distance=distance,
        )  # fmt: skip
        rows.append(CeilingRow(method=method, label=label, distance=distance, analysis=analysis.to_metrics()))
    return rows
