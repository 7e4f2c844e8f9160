"""``learner report`` on the shared Table 3 run: data source, table, regression quality, pair balance."""

from __future__ import annotations

import json
import re

import pandas as pd

from learner.experiments.results import ExperimentResult
from learner.report import write_report


def test_report_states_the_source_and_carries_the_numbers(tiny_table3: ExperimentResult) -> None:
    out = tiny_table3.out_dir
    report = write_report(out)
    text = report.read_text()
    assert report == out / "REPORT.md"
    assert "**Data source: PHANTOM.**" in text.split("##")[0]  # before the first section
    assert tiny_table3.table.splitlines()[0] in text
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
            assert cells[3:5] == [f"{best['val_mae']:.3f}", f"{best['baseline_mae']:.3f}"]
            assert cells[5] == f"{100 * (1 - best['val_mae'] / best['baseline_mae']):.1f}%"
            beats = best["val_mae"] < best["baseline_mae"]
            assert (cells[-1] != "**no**") == beats
    margins = [
        1 - c["regression"]["val_mae"] / c["regression"]["baseline_mae"]
        for c in tiny_table3.results.to_json()["cells"]
    ]
    assert (
        f"{sum(m > 0 for m in margins)} of 4 encoders beat" in regression
        or "All 4 encoders clearly" in regression
    )

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
