"""Do the seeds' encoders err alike? The calibrated answer on predicted scores averaged over seeds.

For each loss of one or more Table 3 folders of one cohort (merged by seed; val patients with repeat
visits, e.g. ``learner demo --longitudinal``), this averages the encoders' predicted scores over every
subset of S seeds (S = 1, 3 and all), answers the test pairs with the *Δ predicted score, calibrated* rule
of the averaged scores (the val change model refitted on them, :mod:`learner.evaluation.change_posterior`),
and prints the mean accuracy and macro-F1 over the subsets of each size beside always-majority. It also
prints how alike the seeds err: the mean correlation between seeds of the test scans' errors (predicted
minus recorded score) and, with a phantom's ``--ground-truth``, of their residuals from a least-squares
line on the latent zone severity (what the images show). An average of encoders that err alike is no
better than one of them::

    python examples/studies/seed_ensemble.py runs/demo/table3-demo-longitudinal runs/long-s34 \\
        --manifest runs/demo/phantom-lus-demo-longitudinal/manifest.csv \\
        --ground-truth runs/demo/phantom-lus-demo-longitudinal/ground_truth.csv
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from learner.config import PairConfig
from learner.data.manifest import Manifest, load_manifest
from learner.data.pairs import intra_patient_pairs
from learner.data.scales import get_scale
from learner.evaluation.baselines import majority_row
from learner.evaluation.embed import EmbeddingTable, embedding_cache_path
from learner.evaluation.metrics import classification_metrics
from learner.experiments.answers import calibrated_labels, predicted_scores


def seed_scores(
    folders: list[Path], manifest: Manifest, dataset: str
) -> dict[str, dict[int, EmbeddingTable]]:
    """Each loss's embedding tables of ``dataset`` by seed: the tables its Table 3 cells classified (K clips
    per scan, as each cell records)."""
    tables: dict[str, dict[int, EmbeddingTable]] = {}
    for folder in folders:
        for cell in json.loads((folder / "results.json").read_text(encoding="utf-8"))["cells"]:
            if cell["dataset"] == dataset:
                encoder = folder / cell["dir"] / "encoder"
                path, _ = embedding_cache_path(encoder, manifest, clips_per_scan=cell["clips_per_scan"])
                tables.setdefault(cell["loss"], {})[cell["seed"]] = EmbeddingTable.load(path)
    if not tables:
        raise SystemExit(f"error: no cell of dataset {dataset!r} in {', '.join(map(str, folders))}")
    return tables


def averaged(tables: list[EmbeddingTable]) -> EmbeddingTable:
    """One table whose predicted scores are the tables' mean (the embeddings are not used here)."""
    first = tables[0]
    scores = np.mean([t.scores.astype(np.float64) for t in tables], axis=0)
    return EmbeddingTable(first.scan_ids, first.embeddings, scores, "average", first.clips_per_scan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+", help="Table 3 folders of one cohort")
    parser.add_argument("--manifest", type=Path, required=True, help="the cohort's manifest (split column)")
    parser.add_argument("--dataset", default="LUS", help="the folders' dataset name (Table 3's column)")
    parser.add_argument("--scale", default="sf")
    parser.add_argument("--ground-truth", type=Path, help="a phantom's ground_truth.csv (severity_zone)")
    args = parser.parse_args()
    scale = get_scale(args.scale)
    manifest = load_manifest(args.manifest, scale=scale)
    pairing = PairConfig()  # consecutive visits of one site, the default of the tables this reads
    test_pairs, _ = intra_patient_pairs(
        list(manifest.by_split("test")), scale, pairing.intra, pairing.match_site
    )
    truth = test_pairs["label"].to_numpy()
    majority = majority_row(test_pairs["label_name"].value_counts().to_dict())
    print(
        f"always-majority: {100 * majority.accuracy:.1f} / {100 * majority.macro_f1:.1f} "
        f"({len(truth)} test pairs)"
    )
    test_ids = [r.scan_id for r in manifest.by_split("test")]
    recorded = np.array([r.score for r in manifest.by_split("test")], dtype=np.float64)
    latent = None
    if args.ground_truth is not None:
        latent = pd.read_csv(args.ground_truth).set_index("scan_id").loc[test_ids, "severity_zone"].to_numpy()
    for loss, by_seed in seed_scores(args.folders, manifest, args.dataset).items():
        seeds = sorted(by_seed)
        for size in sorted({1, min(3, len(seeds)), len(seeds)}):
            results = []
            for subset in itertools.combinations(seeds, size):
                table = averaged([by_seed[s] for s in subset])
                answered = calibrated_labels(
                    scale, manifest, table, *predicted_scores(test_pairs, table), pairing
                )
                if answered is not None:
                    metrics = classification_metrics(truth, answered[0])
                    results.append((100 * metrics["accuracy"], 100 * metrics["macro_f1"]))
            if not results:
                raise SystemExit(f"error: no calibrated answer for {loss}: the val split has no visit pairs")
            accuracy, macro_f1 = np.mean(results, axis=0)
            print(
                f"{loss}: mean of {size} seed(s), {len(results)} subsets: calibrated answer "
                f"{accuracy:.1f} / {macro_f1:.1f}"
            )
        if len(seeds) < 2:
            print(f"{loss}: one seed, no correlation between seeds")
            continue
        scores = [dict(zip(by_seed[s].scan_ids, by_seed[s].scores, strict=True)) for s in seeds]
        predicted = np.array([[by_id[i] for i in test_ids] for by_id in scores], dtype=np.float64)
        print(
            f"{loss}: the test scans' errors correlate {mean_correlation(predicted - recorded):.2f} "
            "between seeds (mean over seed pairs)"
        )
        if latent is not None:
            design = np.c_[np.ones(len(test_ids)), latent.astype(np.float64)]
            fitted = design @ np.linalg.lstsq(design, predicted.T, rcond=None)[0]
            print(
                f"{loss}: their residuals from a line on the latent severity correlate "
                f"{mean_correlation(predicted - fitted.T):.2f}"
            )


def mean_correlation(rows: np.ndarray) -> float:
    """The mean Pearson correlation over every pair of rows of (seeds, scans)."""
    matrix = np.corrcoef(rows)
    return float(matrix[~np.eye(len(rows), dtype=bool)].mean())


if __name__ == "__main__":
    main()
