"""Embedding distance against clinical change (Fig. 1, Section 3.1 "Embedding analysis").

For every test intra-patient pair, the cosine distance 1 − cos(u_first, u_second) between the two frozen
embeddings is set against the size of the change between the scans: |Δ score| (S/F or MMSE), or on
phantom data |Δ latent severity| from the generator's ground truth. Spearman's ρ summarises how well
embedding distance tracks clinical change; its confidence interval resamples patients (the pairs of one
patient are correlated). One panel per pretraining objective, side by side, reproduces Fig. 1.

Example::

    analyses = {name: distance_vs_change(test_pairs, emb[name], ids[name]) for name in ("mse", "mse+wcl")}
    plot_distance_panels(analyses, run.file("fig1_distance.png"), xlabel="|Δ S/F|")
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from learner.atomic import write_figure
from learner.errors import LearnerError
from learner.evaluation.metrics import patient_bootstrap_samples, percentile_interval
from learner.evaluation.pair_classifier import pair_embeddings


def cosine_distances_for_pairs(
    pairs: pd.DataFrame, embeddings: np.ndarray, scan_ids: Sequence[str]
) -> np.ndarray:
    """1 − cosine similarity of the two scans of every pair (float64; a zero embedding counts as cos 0).

    Args:
        pairs: pair table (P rows) with ``first_scan_id`` / ``second_scan_id``.
        embeddings: (S, D) scan embeddings in ``scan_ids`` order.
        scan_ids: the S scan IDs.

    Returns:
        (P,) distances in [0, 2].
    """
    first, second = (side.astype(np.float64) for side in pair_embeddings(pairs, embeddings, scan_ids))
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    cosine: npt.NDArray[np.float64]
    cosine = np.sum(first * second, axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)
    return 1.0 - np.clip(cosine, -1.0, 1.0)


def euclidean_distances_for_pairs(
    pairs: pd.DataFrame, embeddings: np.ndarray, scan_ids: Sequence[str]
) -> np.ndarray:
    """Euclidean distance between the two scans of every pair (float64); for a scalar feature (D = 1) it is
    |Δ feature|, where the cosine of two same-sign numbers is always 1 and says nothing.

    Args:
        pairs: pair table (P rows) with ``first_scan_id`` / ``second_scan_id``.
        embeddings: (S, D) scan features in ``scan_ids`` order; scan_ids: the S scan IDs.

    Returns:
        (P,) distances ≥ 0.
    """
    first, second = (side.astype(np.float64) for side in pair_embeddings(pairs, embeddings, scan_ids))
    distance: npt.NDArray[np.float64] = np.linalg.norm(first - second, axis=1)
    return distance


PAIR_DISTANCES: dict[str, Callable[[pd.DataFrame, np.ndarray, Sequence[str]], np.ndarray]] = {
    "cosine": cosine_distances_for_pairs,
    "euclidean": euclidean_distances_for_pairs,
}
"""Distance name → the (P,) distances of a pair table's scans; Fig. 1 uses ``cosine``."""


def spearman_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two (P,) arrays; NaN when it is undefined (fewer than 2 or constant)."""
    if len(x) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.spearmanr(x, y).statistic)


@dataclass(frozen=True)
class DistanceAnalysis:
    """The Fig. 1 data of one encoder and its summary statistics.

    ``change`` (P,) is |Δ target| per pair, ``distance`` (P,) the embedding distance (Fig. 1: cosine),
    ``patient_ids`` (P,) the patient of each pair; ``rho`` is Spearman's ρ(change, distance) and
    ``ci_low``/``ci_high`` its (1 − alpha) patient-bootstrap percentile interval from ``n_boot`` resamples;
    ``labels`` (P,) the true change class of each pair (0 deteriorated, 1 stable, 2 improved) when the pair
    table has them.
    """

    target: str
    change: np.ndarray
    distance: np.ndarray
    patient_ids: np.ndarray
    rho: float
    ci_low: float
    ci_high: float
    n_boot: int
    alpha: float
    labels: np.ndarray | None = None

    @property
    def n_pairs(self) -> int:
        return int(self.distance.size)

    @property
    def n_patients(self) -> int:
        return int(np.unique(self.patient_ids).size)

    def summary(self) -> str:
        """Two lines for a panel: ρ with its CI, and the pair/patient counts."""
        level = f"{100 * (1 - self.alpha):g}%"
        degenerate = np.isnan(self.ci_low) or self.ci_low == self.ci_high  # no bootstrap, or one patient
        ci = "n/a" if degenerate else f"[{self.ci_low:.2f}, {self.ci_high:.2f}]"
        return (
            f"Spearman ρ = {self.rho:.2f}, {level} CI {ci}\n{self.n_pairs} pairs, {self.n_patients} patients"
        )

    def to_metrics(self) -> dict[str, float | int | str]:
        """The scalars for ``metrics.json`` (the per-pair arrays are left out)."""
        return {
            "target": self.target,
            "spearman_rho": self.rho,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "alpha": self.alpha,
            "n_boot": self.n_boot,
            "n_pairs": self.n_pairs,
            "n_patients": self.n_patients,
        }


def distance_vs_change(
    pairs: pd.DataFrame,
    embeddings: np.ndarray,
    scan_ids: Sequence[str],
    target: str | Mapping[str, float] = "score",
    *,
    target_name: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    distance: str = "cosine",
) -> DistanceAnalysis:
    """Cosine (or another :data:`PAIR_DISTANCES`) distance against |Δ target| for every pair, with Spearman
    ρ and a patient-bootstrap CI.

    Args:
        pairs: pair table (P rows): ``first_scan_id``, ``second_scan_id``, ``first_patient_id`` and, for a
            column target, ``first_<target>`` / ``second_<target>``.
        embeddings: (S, D) scan embeddings in ``scan_ids`` order; scan_ids: the S scan IDs.
        target: ``"score"`` (|Δ score| from the pair table), another pair-table quantity ``<column>``
            (read from ``first_<column>`` / ``second_<column>``), or a mapping scan_id → value such as
            the phantom ground truth's ``severity_zone``.
        target_name: label stored in the result (default: the column name, or ``"ground_truth"``).
        n_boot: patient-bootstrap resamples for the CI (0: no CI). seed: the bootstrap's seed.
        alpha: the CI is (1 − alpha).
        distance: a key of :data:`PAIR_DISTANCES` (Fig. 1: ``cosine``; ``euclidean`` for hand features,
            some of which are scalars).

    Raises:
        LearnerError: a missing pair-table column or a scan with no value in the ``target`` mapping.
        ValueError: an unknown ``distance``.
    """
    if distance not in PAIR_DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; expected one of {', '.join(PAIR_DISTANCES)}")
    if "first_patient_id" not in pairs.columns:
        raise LearnerError("the pair table has no 'first_patient_id' column")
    distances = PAIR_DISTANCES[distance](pairs, embeddings, scan_ids)
    first, second = _target_values(pairs, target)
    change = np.abs(second - first)
    patient_ids = pairs["first_patient_id"].astype(str).to_numpy()
    low, high = (
        percentile_interval(
            patient_bootstrap_samples(change, distances, patient_ids, spearman_rho, n_boot, seed), alpha
        )
        if n_boot > 0
        else (float("nan"), float("nan"))
    )
    name = target_name or (target if isinstance(target, str) else "ground_truth")
    return DistanceAnalysis(
        target=name,
        change=change,
        distance=distances,
        patient_ids=patient_ids,
        rho=spearman_rho(change, distances),
        ci_low=low,
        ci_high=high,
        n_boot=n_boot,
        alpha=alpha,
        labels=pairs["label"].to_numpy(dtype=np.int64) if "label" in pairs.columns else None,
    )


CLASS_COLOURS: dict[str, str] = {"deteriorated": "tab:red", "stable": "tab:grey", "improved": "tab:green"}
"""Fig. 1's colour of each true change class."""
FIGURE_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
"""Fig. 1 is written as PNG (the report embeds it) with vector copies beside it."""


def plot_distance_panels(
    analyses: Mapping[str, DistanceAnalysis],
    out_png: str | os.PathLike[str],
    xlabel: str = "|Δ score|",
    *,
    integer_x: bool = False,
    vector: bool = True,
) -> Figure:
    """Fig. 1: one scatter panel per pretraining objective, side by side; PNG, SVG and PDF.

    Each panel's statistics (ρ, its CI, pairs and patients) are in its title, outside the axes, so they
    never hide a point; points are coloured by their true change class (:data:`CLASS_COLOURS`) when the
    analyses carry labels.

    Args:
        analyses: objective name (panel title) → its :class:`DistanceAnalysis`, in panel order.
        out_png: where the PNG goes (written atomically); ``.svg`` and ``.pdf`` copies go beside it.
        xlabel: the x-axis label with its unit, e.g. ``"|Δ score| (S/F)"``.
        integer_x: integer ticks on the x axis (an integer score such as MMSE).
        vector: write the SVG and PDF copies (``runtime.vector_figures``); False: the PNG alone.

    Returns:
        The matplotlib figure (Agg canvas, not registered with pyplot, so nothing global is touched).
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from learner.data.scales import CLASS_NAMES

    if not analyses:
        raise ValueError("plot_distance_panels needs at least one analysis")
    figure = Figure(figsize=(4.0 * len(analyses), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(analyses), sharey=True, squeeze=False)[0]
    for ax, (name, analysis) in zip(axes, analyses.items(), strict=True):
        if analysis.labels is None:
            ax.scatter(analysis.change, analysis.distance, s=14, alpha=0.7, edgecolors="none")
        else:
            for k, cls in enumerate(CLASS_NAMES):
                chosen = analysis.labels == k
                ax.scatter(
                    analysis.change[chosen], analysis.distance[chosen], s=14, alpha=0.75,
                    edgecolors="none", color=CLASS_COLOURS[cls],
                )  # fmt: skip
        ax.set_title(f"{name}\n{analysis.summary()}", fontsize=9)
        ax.set_xlabel(xlabel)
        if integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("embedding cosine distance")
    if any(a.labels is not None for a in analyses.values()):
        handles = [
            Line2D([], [], marker="o", linestyle="", color=CLASS_COLOURS[cls], label=f"true: {cls}")
            for cls in CLASS_NAMES
        ]
        figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    write_figure(figure, out_png, FIGURE_FORMATS if vector else FIGURE_FORMATS[:1], dpi=120)
    return figure


def _target_values(pairs: pd.DataFrame, target: str | Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(P,), (P,) float64 values of the target for the first and the second scan of every pair."""
    if isinstance(target, str):
        columns = (f"first_{target}", f"second_{target}")
        for column in columns:
            if column not in pairs.columns:
                raise LearnerError(f"the pair table has no {column!r} column (target {target!r})")
        return pairs[columns[0]].to_numpy(dtype=np.float64), pairs[columns[1]].to_numpy(dtype=np.float64)
    values = {str(key): float(value) for key, value in target.items()}
    sides = []
    for column in ("first_scan_id", "second_scan_id"):
        ids = pairs[column].astype(str).to_numpy()
        missing = [i for i, scan in enumerate(ids) if scan not in values]
        if missing:
            raise LearnerError(
                f"{len(missing)} pair(s) name a scan with no target value, e.g. {column} "
                f"{ids[missing[0]]!r} in pair row {missing[0]}"
            )
        sides.append(np.array([values[scan] for scan in ids], dtype=np.float64))
    return sides[0], sides[1]
