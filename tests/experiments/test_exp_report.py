"""``learner report`` on the shared Table 3 run: data source, table, regression quality, pair balance."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from learner.experiments.results import ExperimentResult
from learner.report import write_report


def test_report_states_the_source_and_carries_the_numbers(tiny_table3: ExperimentResult) -> None:
    out = tiny_table3.out_dir
    report = write_report(out)
    text = report.read_text()
    assert report == out / "REPORT.md"
    assert "**Data source: PHANTOM.**" in text.split("##")[0]  # before the first section
    assert (out / "table3.md").read_text().splitlines()[0] in text  # written with the report
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        assert (out / image).is_file()

    regression = text.split("## Regression quality of each encoder")[1].split("\n## ")[0]
    for dataset in ("LUS", "MRI"):
        for loss in ("mse", "mse+wcl"):
            best = json.loads((out / dataset / loss / "seed-0" / "encoder" / "metrics.json").read_text())[
                "best"
            ]
            row = next(
                line for line in regression.splitlines() if line.startswith(f"| {dataset} | {loss} | 0 |")
            )
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            assert cells[4] == f"{best['val_mae']:.3f}"
            assert cells[6] == f"{best['baseline_mae']:.3f}"
            assert cells[7] == f"{100 * (1 - best['val_mae'] / best['baseline_mae']):.1f}%"
            # the best checkpoint's val predictions (issue 23 point 3) reproduce its MAE and its baseline's
            encoder = out / dataset / loss / "seed-0" / "encoder"
            predictions = pd.read_csv(encoder / "val_predictions.csv")
            train_mean = json.loads((encoder / "metrics.json").read_text())["train_mean"]
            error = (predictions["predicted"] - predictions["score"]).abs().mean()
            assert error == pytest.approx(best["val_mae"], rel=1e-6)
            assert (predictions["score"] - train_mean).abs().mean() == pytest.approx(best["baseline_mae"])
            low, high = (float(x) for x in cells[8].strip("[]").split(","))
            gain = best["baseline_mae"] - best["val_mae"]
            assert low - 1e-3 <= gain <= high + 1e-3  # the point estimate lies in its interval
            assert (cells[-1] in ("yes", "clearly")) == (low > 0)
    balance = text.split("## Class balance of every pair set")[1].split("\n## ")[0]
    for dataset in ("LUS", "MRI"):
        for split in ("train", "val", "test"):
            pairs = pd.read_csv(out / dataset / "mse" / "seed-0" / "classifier" / "pairs" / f"{split}.csv")
            counts = pairs["label_name"].value_counts()
            expected = [counts.get(name, 0) for name in ("deteriorated", "stable", "improved")]
            expected_row = (
                f"| {dataset} | 0 | {split} | " + " | ".join(map(str, [*expected, len(pairs)])) + " |"
            )
            assert expected_row in balance.splitlines()
    assert "### Config" in text
    assert '"packages"' in text  # the environment record
