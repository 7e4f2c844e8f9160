"""Fig. 1 analysis: cosine distances, Spearman ρ against scipy, targets, and the panel figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import cosine

from learner.errors import LearnerError
from learner.evaluation.embedding_analysis import (
    cosine_distances_for_pairs,
    distance_vs_change,
    plot_distance_panels,
)


def _pairs(first: list[str], second: list[str], **columns: list) -> pd.DataFrame:
    patients = [s.split("_")[0] for s in first]
    return pd.DataFrame(
        {"first_scan_id": first, "second_scan_id": second, "first_patient_id": patients,
         "second_patient_id": patients, **columns}
    )  # fmt: skip


def test_cosine_distance_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(5, 4)).astype(np.float32)
    ids = [f"p{i}_v" for i in range(5)]
    pairs = _pairs(ids[:4], ids[1:])
    distances = cosine_distances_for_pairs(pairs, embeddings, ids)
    reference = [
        cosine(embeddings[i].astype(np.float64), embeddings[i + 1].astype(np.float64)) for i in range(4)
    ]
    np.testing.assert_allclose(distances, reference, rtol=1e-6)
    by_hand = cosine_distances_for_pairs(
        _pairs(["x_0"], ["x_1"]), np.array([[1.0, 0.0], [1.0, 1.0]]), ["x_0", "x_1"]
    )
    np.testing.assert_allclose(by_hand, [1 - 1 / np.sqrt(2)])


def _monotone_cohort(n_patients: int = 8) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Each patient's second scan is rotated from the first by an angle that grows with |Δ score|."""
    ids, embeddings, first, second, s1, s2 = [], [], [], [], [], []
    for p in range(n_patients):
        angle = 0.15 * (p + 1)
        ids += [f"p{p}_a", f"p{p}_b"]
        embeddings += [[1.0, 0.0], [np.cos(angle), np.sin(angle)]]
        first.append(f"p{p}_a")
        second.append(f"p{p}_b")
        s1.append(300.0)
        s2.append(300.0 + (-1) ** p * 10.0 * (p + 1))  # both improvements and declines
    pairs = _pairs(first, second, first_score=s1, second_score=s2)
    return pairs, np.array(embeddings, dtype=np.float32), ids


def test_spearman_is_one_on_a_monotone_example() -> None:
    pairs, embeddings, ids = _monotone_cohort()
    analysis = distance_vs_change(pairs, embeddings, ids, target="score", n_boot=200, seed=0)
    np.testing.assert_allclose(analysis.change, 10.0 * np.arange(1, 9))
    assert analysis.rho == pytest.approx(1.0)
    assert analysis.ci_low == pytest.approx(1.0)  # every resample is still perfectly monotone
    assert (analysis.n_pairs, analysis.n_patients) == (8, 8)


def test_spearman_and_targets_match_scipy_on_noisy_data() -> None:
    rng = np.random.default_rng(1)
    n = 30
    ids = [f"p{i // 3}_{i}" for i in range(2 * n)]
    embeddings = rng.normal(size=(2 * n, 5)).astype(np.float32)
    pairs = _pairs(ids[0::2], ids[1::2], first_zone=rng.random(n), second_zone=rng.random(n))
    severity = {scan: float(v) for scan, v in zip(ids, rng.random(2 * n), strict=True)}
    distance = cosine_distances_for_pairs(pairs, embeddings, ids)

    by_column = distance_vs_change(pairs, embeddings, ids, target="zone", n_boot=100, seed=3)
    zone_change = np.abs(pairs["second_zone"].to_numpy() - pairs["first_zone"].to_numpy())
    assert by_column.rho == pytest.approx(stats.spearmanr(zone_change, distance).statistic)
    assert by_column.ci_low <= by_column.rho <= by_column.ci_high
    assert by_column.n_patients == len(set(pairs["first_patient_id"]))

    by_mapping = distance_vs_change(pairs, embeddings, ids, target=severity, n_boot=0)
    severity_change = np.abs([severity[b] - severity[a] for a, b in zip(ids[0::2], ids[1::2], strict=True)])
    np.testing.assert_allclose(by_mapping.change, severity_change)
    assert by_mapping.rho == pytest.approx(stats.spearmanr(severity_change, distance).statistic)
    assert by_mapping.target == "ground_truth"
    assert np.isnan(by_mapping.ci_low)

    with pytest.raises(LearnerError, match=r"no target value, e\.g\. first_scan_id 'p0_0' in pair row 0"):
        distance_vs_change(pairs, embeddings, ids, target={k: v for k, v in severity.items() if k != "p0_0"})
    with pytest.raises(LearnerError, match="'first_age' column"):
        distance_vs_change(pairs, embeddings, ids, target="age")


def test_panels_one_axis_per_objective_with_rho_outside_the_axes(tmp_path) -> None:
    pairs, embeddings, ids = _monotone_cohort()
    rng = np.random.default_rng(2)
    analyses = {
        "MSE": distance_vs_change(pairs, rng.normal(size=embeddings.shape), ids, n_boot=50),
        "MSE+CL": distance_vs_change(pairs, rng.normal(size=embeddings.shape), ids, n_boot=50),
        "MSE+wCL": distance_vs_change(pairs, embeddings, ids, n_boot=50),
    }
    out = tmp_path / "fig" / "fig1.png"
    figure = plot_distance_panels(analyses, out, xlabel="|Δ S/F|")
    panels = figure.axes
    assert [ax.get_title().splitlines()[0] for ax in panels] == ["MSE", "MSE+CL", "MSE+wCL"]
    for ax, analysis in zip(panels, analyses.values(), strict=True):
        assert ax.get_xlabel() == "|Δ S/F|"
        assert f"ρ = {analysis.rho:.2f}" in ax.get_title()  # in the title, outside the axes
        assert len(ax.texts) == 0  # nothing drawn over the points
        offsets = ax.collections[0].get_offsets()
        np.testing.assert_allclose(offsets[:, 0], analysis.change)
        np.testing.assert_allclose(offsets[:, 1], analysis.distance)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 1000
    assert out.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
    assert out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "fig1.pdf",
        "fig1.png",
        "fig1.svg",
    ]  # no temp file
    alone = tmp_path / "alone" / "fig1.png"
    plot_distance_panels(analyses, alone, xlabel="|Δ S/F|", vector=False)  # runtime.vector_figures=false
    assert [p.name for p in alone.parent.iterdir()] == ["fig1.png"]
    assert alone.read_bytes() == data  # the same PNG


def test_panels_colour_points_by_true_class_with_integer_ticks(tmp_path) -> None:
    from matplotlib.colors import to_rgba

    from learner.evaluation.embedding_analysis import CLASS_COLOURS

    pairs, embeddings, ids = _monotone_cohort()
    labels = np.arange(len(pairs)) % 3
    analysis = distance_vs_change(pairs.assign(label=labels), embeddings, ids, n_boot=0)
    figure = plot_distance_panels({"MSE": analysis}, tmp_path / "f.png", integer_x=True)
    (ax,) = [a for a in figure.axes if a.get_xlabel()]
    for k, name in enumerate(("deteriorated", "stable", "improved")):
        collection = ax.collections[k]
        np.testing.assert_allclose(collection.get_offsets()[:, 0], analysis.change[labels == k])
        np.testing.assert_allclose(collection.get_facecolor()[0][:3], to_rgba(CLASS_COLOURS[name])[:3])
    ticks = ax.get_xticks()
    np.testing.assert_array_equal(ticks, np.round(ticks))
    assert "CI n/a" in ax.get_title()  # no bootstrap: no interval
    assert [t.get_text() for t in figure.legends[0].get_texts()] == [
        "true: deteriorated", "true: stable", "true: improved"
    ]  # fmt: skip
