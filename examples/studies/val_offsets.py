"""Does a decision policy chosen on the val patients' own visit pairs carry over to the test pairs?

For every classifier of a sweep or Table 3 folder this takes the pair classifier's class probabilities on the
val split's consecutive-visit pairs (a cohort with repeat visits: ``learner phantom lus --longitudinal``,
ADNI), chooses log-probability offsets for "deteriorated" and "improved" that give the largest val macro-F1
while the val accuracy stays within 5 points of always answering "stable", and applies them to the test
pairs. It prints, per (setting, loss), the mean over seeds of the test accuracy and macro-F1 against
always-majority, with and without the offsets, and each seed's pair::

    python examples/studies/val_offsets.py /tmp/study/wp-LUS --manifest /tmp/study/lus-long/manifest.csv
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score

from learner.data.manifest import load_manifest
from learner.data.pairs import intra_patient_pairs
from learner.data.scales import ChangeLabel, get_scale
from learner.evaluation.embed import embedding_cache_path
from learner.evaluation.metrics import macro_f1
from learner.evaluation.pair_classifier import FittedPairClassifier, pair_features

STABLE = int(ChangeLabel.STABLE)
SHIFTS = np.linspace(-2.0, 4.0, 31)
"""Candidate offsets subtracted from a change class's log-probability (positive: fewer changes called)."""


def offsets_on(log_p: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(deteriorated, 0, improved) offsets of the best macro-F1 within 5 accuracy points of "stable"."""
    floor = np.mean(labels == STABLE) - 0.05
    best, best_f1 = np.zeros(3), -1.0
    for low, high in itertools.product(SHIFTS, repeat=2):
        offsets = np.array([low, 0.0, high])
        answer = (log_p - offsets).argmax(1)
        macro = macro_f1(labels, answer)
        if accuracy_score(labels, answer) >= floor and macro > best_f1:
            best, best_f1 = offsets, macro
    return best


def gaps(labels: np.ndarray, answer: np.ndarray) -> tuple[float, float]:
    """(accuracy, macro-F1) minus always-"stable"'s, in points."""
    majority = np.full_like(labels, STABLE)
    return (
        100 * (accuracy_score(labels, answer) - accuracy_score(labels, majority)),
        100 * (macro_f1(labels, answer) - macro_f1(labels, majority)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a sweep or table3 folder")
    parser.add_argument("--manifest", type=Path, required=True, help="the cohort's manifest (split column)")
    parser.add_argument("--scale", default="sf")
    args = parser.parse_args()
    scale = get_scale(args.scale)
    manifest = load_manifest(args.manifest, scale)
    val_pairs, _ = intra_patient_pairs(manifest.by_split("val"), scale)
    rows: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for folder in sorted(args.folder.glob("**/classifier/classifier")):
        run = folder.parent
        record = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        encoder = (run / record["encoder_run_relative"]).resolve()  # the sweep may have moved
        # the table the classifier was fitted on: this manifest and the classification's K clips per scan
        path, _ = embedding_cache_path(encoder, manifest, clips_per_scan=record["clips_per_scan"])
        table = np.load(path)
        ids = [str(s) for s in table["scan_ids"]]
        fitted = FittedPairClassifier.load(folder)
        test = pd.read_csv(run / "pairs" / "test.csv")
        log_val, log_test = (
            np.log(
                fitted.predict_proba(pair_features(p, table["embeddings"], ids, fitted.meta.combine)) + 1e-12
            )
            for p in (val_pairs, test)
        )
        chosen = offsets_on(log_val, val_pairs["label"].to_numpy())
        labels = test["label"].to_numpy()
        key = (run.parent.parent.parent.name, run.parent.parent.name)  # (setting, loss) of .../seed-k
        rows.setdefault(key, []).append(
            gaps(labels, log_test.argmax(1)) + gaps(labels, (log_test - chosen).argmax(1))
        )
    print(f"{len(val_pairs)} val visit pairs; points against always-stable, mean over seeds")
    print("| setting | loss | classifier Δacc | ΔF1 | with val offsets Δacc | ΔF1 | per seed (Δacc, ΔF1) |")
    print("|---|---|---|---|---|---|---|")
    for (setting, loss), values in rows.items():
        mean = np.mean(values, axis=0)
        seeds = ", ".join(f"({v[2]:+.1f}, {v[3]:+.1f})" for v in values)
        figures = " | ".join(f"{m:+.1f}" for m in mean)
        print(f"| {setting} | {loss} | {figures} | {seeds} |")


if __name__ == "__main__":
    main()
