"""``learner experiment ceiling`` (issue 19 item 7 / issue 20 item 5): the ceiling study end to end on a
tiny phantom, checked against a hand count of the test pairs and scipy's Spearman ρ; and its refusal of a
manifest without latent values."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from learner.data.manifest import load_manifest
from learner.data.scales import get_scale
from learner.evaluation.embed import embed_scans
from learner.evaluation.hand_features import HAND_FEATURES
from learner.evaluation.reference_embeddings import REFERENCE_EMBEDDINGS
from learner.layout import RunLayout

CliRun = Callable[[list[str]], tuple[int, str, str]]

TINY_RUN = [
    "--epochs", "1", "--frames", "4", "--size", "32",
    "--set", "runtime.workers=0", "--set", "runtime.device=cpu", "--set", "model.size=tiny",
    "--set", "optim.max_steps_per_epoch=2", "--set", "classifier.bootstrap=30",
]  # fmt: skip
"""One epoch of two steps through the tiny TSM, 30 bootstrap resamples: a few seconds on a CPU."""


def _consecutive_test_pairs(manifest: pd.DataFrame) -> int:
    """Fig. 1's test pairs counted by hand: within each test patient and site, every scan of a day times
    every scan of the next day that site was scanned."""
    test = manifest[manifest["split"] == "test"]
    days: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for patient, site, visit in zip(test["patient_id"], test["site"], test["visit"], strict=True):
        days[(patient, site)][visit] += 1
    count = 0
    for per_day in days.values():
        scans = [per_day[day] for day in sorted(per_day)]
        count += sum(a * b for a, b in itertools.pairwise(scans))
    return count


@pytest.mark.slow
def test_ceiling_end_to_end_on_a_tiny_phantom(cli: CliRun, tmp_path: Path) -> None:
    cohort, out = tmp_path / "cohort", tmp_path / "ceiling"
    code, _, err = cli(
        ["phantom", "lus", str(cohort), "--patients", "8,4,4", "--seed", "5", "--frames", "4",
         "--size", "32", "--workers", "0"]
    )  # fmt: skip
    assert code == 0, err
    manifest_path = cohort / "manifest.csv"
    code, printed, err = cli(["experiment", "ceiling", str(manifest_path), "--out", str(out), *TINY_RUN])
    assert code == 0, err

    layout = RunLayout(out)
    table = layout.table("ceiling", ".md").read_text(encoding="utf-8")  # written with the report
    assert table.strip() in printed
    assert table.strip() in (out / "REPORT.md").read_text(encoding="utf-8")
    metrics = json.loads(layout.metrics.read_text(encoding="utf-8"))
    assert json.loads(layout.record.read_text(encoding="utf-8"))["kind"] == "ceiling"
    methods = ["oracle", *REFERENCE_EMBEDDINGS, *HAND_FEATURES]
    assert [row["method"] for row in metrics["rows"]] == methods
    assert [row["distance"] for row in metrics["rows"]] == ["cosine"] * 3 + ["euclidean"] * 4
    for row in metrics["rows"]:
        rho = row["analysis"]["spearman_rho"]
        assert f"| {row['label']} | {row['distance']} | {rho:+.3f} |" in table

    # the pairs: every test patient's consecutive days, as Fig. 1 takes them
    frame = pd.read_csv(manifest_path, dtype=str)
    assert metrics["n_pairs"] == _consecutive_test_pairs(frame) > 0
    assert all(row["analysis"]["n_pairs"] == metrics["n_pairs"] for row in metrics["rows"])

    # the oracle was trained on the latent: its manifest's score is the latent column, with MSE alone
    latent_frame = pd.read_csv(layout.latent_manifest, dtype={"scan_id": str})
    np.testing.assert_allclose(latent_frame["score"], latent_frame["latent"])
    oracle_config = layout.oracle.config.read_text(encoding="utf-8")
    assert "name: mse\n" in oracle_config
    assert "scale: custom" in oracle_config
    oracle_split = pd.read_csv(layout.oracle.splits, dtype=str)  # the oracle never saw a test patient
    test_patients = set(frame.loc[frame["split"] == "test", "patient_id"])
    assert set(oracle_split.loc[oracle_split["split"] == "test", "patient_id"]) == test_patients

    # the oracle's ρ, recomputed with scipy from its own embeddings and the latents
    manifest = load_manifest(manifest_path, get_scale("sf"))
    latent = {r.scan_id: float(r.latent) for r in manifest.records}  # type: ignore[arg-type]
    table_e = embed_scans(layout.oracle.root, manifest)
    index = {scan: i for i, scan in enumerate(table_e.scan_ids)}
    test = manifest.by_split("test")
    by_day: dict[tuple[str, str | None], dict[float, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in test:
        by_day[(r.patient_id, r.site)][r.visit_order].append(r.scan_id)
    change, distance = [], []
    for per_day in by_day.values():
        days = [per_day[d] for d in sorted(per_day)]
        for earlier, later in itertools.pairwise(days):
            for a in earlier:
                for b in later:
                    u, v = table_e.embeddings[index[a]], table_e.embeddings[index[b]]
                    distance.append(1 - float(u @ v) / float(np.linalg.norm(u) * np.linalg.norm(v)))
                    change.append(abs(latent[b] - latent[a]))
    oracle_row = metrics["rows"][0]
    assert oracle_row["analysis"]["spearman_rho"] == pytest.approx(
        stats.spearmanr(change, distance).statistic, abs=1e-6
    )


def test_a_manifest_without_latent_values_is_refused_in_one_line(cli: CliRun, tmp_path: Path) -> None:
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "patient_id,scan_id,path,visit,score\nP1,s1,a.mp4,1,300\nP1,s2,b.mp4,2,250\n", encoding="utf-8"
    )
    out = tmp_path / "ceiling"
    code, _, err = cli(["experiment", "ceiling", str(manifest), "--out", str(out)])
    assert code == 2
    assert err.count("\n") == 1
    assert str(manifest) in err
    assert "no 'latent' column" in err
    assert not out.exists()  # refused before any work
