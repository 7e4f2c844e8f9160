"""Fig. 1 (Section 3): cosine distance between the embeddings of a test intra-patient pair against the change
between its scans, one panel per pretraining objective, from a finished Table 3 grid.

The change is |Δ score| and, on a phantom cohort, also |Δ latent severity|, the ground truth the scans were
rendered from (:mod:`learner.data.provenance`). Each panel carries Spearman's ρ with a patient
bootstrap interval (:func:`learner.evaluation.embedding_analysis.distance_vs_change`); the same statistic
of two references on the same pairs — a frozen randomly initialised encoder and the raw pixels
(:mod:`learner.evaluation.reference_embeddings`) — says how much of a ρ the data give with no pretraining
at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from learner.data.manifest import Manifest
from learner.data.provenance import latent_values
from learner.data.scales import ScoreScale
from learner.evaluation.embed import embed_scans
from learner.evaluation.embedding_analysis import DistanceAnalysis, distance_vs_change, plot_distance_panels
from learner.evaluation.reference_embeddings import reference_embeddings
from learner.experiments.results import Cell, Figure
from learner.layout import RunLayout
from learner.losses.registry import loss_label

FIGURE_TARGETS: dict[str, str] = {
    "score": "|Δ score|",
    "latent": "|Δ latent severity| (phantom ground truth)",
}
"""Figure target → the change on its x axis."""

REFERENCE_LABELS: dict[str, str] = {
    "random_init": "frozen random-init encoder",
    "raw_pixels": "raw pixels",
}
"""Each reference of :mod:`learner.evaluation.reference_embeddings` → its row label in the Fig. 1 tables."""

_ID_COLUMNS = {c: str for c in ("first_scan_id", "second_scan_id", "first_patient_id", "second_patient_id")}


def figure_one(
    out_dir: Path,
    cells: Sequence[Cell],
    manifest: Manifest,
    n_boot: int,
    scale: ScoreScale | None = None,
    *,
    vector: bool = True,
) -> dict[str, Figure]:
    """Fig. 1 of one dataset from its lowest-seed cells (their test pairs in ``<cell>/classifier/pairs``),
    written as ``fig1_<dataset>_<target>.png`` (with ``.svg`` and ``.pdf`` when ``vector``:
    ``runtime.vector_figures``) into ``out_dir``; the score axis carries ``scale``'s unit, with integer
    ticks for an integer score.

    Returns:
        target (``score``, and ``latent`` on a phantom) → the :class:`Figure` (file, seed, panels).
    """
    seed = min(c.seed for c in cells)
    shown = [c for c in cells if c.seed == seed]
    pairs = cell_test_pairs(out_dir, shown[0])  # every cell of a seed shares its split and pairs
    scan_ids = sorted(set(pairs["first_scan_id"]) | set(pairs["second_scan_id"]))
    references = reference_embeddings(
        out_dir / shown[0].encoder_folder,
        manifest,
        scan_ids,
        seed=seed,
        clips_per_scan=shown[0].clips_per_scan,
    )
    figures: dict[str, Figure] = {}
    for key, target in distance_targets(manifest).items():
        analyses = {c.key.loss: cell_distance_analysis(out_dir, c, manifest, target, n_boot) for c in shown}
        reference_rows = {
            reference: distance_vs_change(
                pairs, embeddings, scan_ids, target, target_name=target_name(target), n_boot=n_boot, seed=seed
            ).to_metrics()
            for reference, embeddings in references.items()
        }
        png = f"fig1_{shown[0].key.dataset}_{key}.png"
        panels = {loss_label(k): a for k, a in analyses.items()}
        unit = f" ({scale.unit})" if key == "score" and scale is not None and scale.unit else ""
        integer = key == "score" and scale is not None and scale.integer
        xlabel = FIGURE_TARGETS[key] + unit
        plot_distance_panels(panels, out_dir / png, xlabel=xlabel, integer_x=integer, vector=vector)
        panel_rows = {k: a.to_metrics() for k, a in analyses.items()}
        figures[key] = Figure(png=png, seed=seed, panels=panel_rows, references=reference_rows)
    return figures


def distance_targets(manifest: Manifest) -> dict[str, str | dict[str, float]]:
    """Fig. 1's targets for a dataset: ``score`` always, and ``latent`` (scan_id → latent severity) when the
    manifest's scans come from a phantom cohort (keys of :data:`FIGURE_TARGETS`)."""
    targets: dict[str, str | dict[str, float]] = {"score": "score"}
    truth = latent_values(manifest)
    if truth is not None:
        targets["latent"] = truth
    return targets


def cell_distance_analysis(
    out_dir: Path, cell: Cell, manifest: Manifest, target: str | dict[str, float], n_boot: int
) -> DistanceAnalysis:
    """Fig. 1's analysis of one finished cell: its test intra-patient pairs (``<cell>/classifier/pairs``)
    and its encoder's (:attr:`Cell.encoder_folder`) cached embeddings, against ``target`` (see
    :func:`distance_targets`); the bootstrap is seeded with the cell's seed."""
    pairs = cell_test_pairs(out_dir, cell)
    encoder = out_dir / cell.encoder_folder  # its own, or the one it shares (a sweep's classifier setting)
    table = embed_scans(encoder, manifest, clips_per_scan=cell.clips_per_scan)  # cached
    return distance_vs_change(
        pairs,
        table.embeddings,
        table.scan_ids,
        target,
        target_name=target_name(target),
        n_boot=n_boot,
        seed=cell.seed,
    )


def target_name(target: str | dict[str, float]) -> str:
    """The name a Fig. 1 analysis records for a target of :func:`distance_targets`."""
    return "score" if isinstance(target, str) else "latent severity"


def cell_test_pairs(out_dir: Path, cell: Cell) -> pd.DataFrame:
    """The test intra-patient pairs of a finished cell (``<cell>/classifier/pairs/test.csv``)."""
    return pd.read_csv(RunLayout(out_dir / cell.classification_folder).pairs("test"), dtype=_ID_COLUMNS)
