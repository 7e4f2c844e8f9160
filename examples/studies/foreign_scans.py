"""Does an encoder's predicted score or embedding give away a scan of a kind it never trained on?

For one pretraining run this embeds each given file exactly as ``learner predict`` does (the run's
preprocessing, the TSN centre frames), and prints its predicted score and the cosine distance from its
embedding to its k-th nearest train-scan embedding, beside the same distance for the run's val and test
scans (from the run's embedding cache of its manifest, ``learner embed``): ``p`` is the share of val scans
at least as far (1 / (n + 1) when none is), so a small ``p`` would flag the file as unlike the training
data. On the demo's LUS encoder the answer is no (docs/experiments.md, "A scan of another kind")::

    learner phantom mri /tmp/mri --patients 2,1,1 --size 32
    python examples/studies/foreign_scans.py runs/demo/table3-demo/LUS/mse/seed-0/encoder /tmp/mri/images/*/*
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from learner.data.datasets import clips_from_frames
from learner.data.manifest import load_manifest
from learner.data.preprocess import Preprocessor
from learner.data.scales import scale_from_config
from learner.data.scan_kinds import kind_of_file
from learner.evaluation.embed import EmbeddingTable, embed_clips, embedding_cache_path
from learner.training.checkpoint import load_regressor


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """(N, D) → (N, D) float64 rows of length 1."""
    rows = embeddings.astype(np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def kth_distance(queries: np.ndarray, references: np.ndarray, k: int) -> np.ndarray:
    """(Q, D), (N, D) unit rows → (Q,) cosine distance from each query to its k-th nearest reference."""
    return np.sort(1.0 - queries @ references.T, axis=1)[:, k - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("encoder", type=Path, help="a pretraining run (its embedding cache of its manifest)")
    parser.add_argument("scans", type=Path, nargs="+", help="files to embed as `learner predict` would")
    parser.add_argument("-k", type=int, default=5, help="the neighbour whose distance counts")
    args = parser.parse_args()
    model, meta = load_regressor(args.encoder, which="best")
    data = meta.config.data
    manifest = load_manifest(data.manifest, scale_from_config(data))
    cache, _ = embedding_cache_path(args.encoder, manifest, which="best", clips_per_scan=1)
    if not cache.is_file():
        parser.error(f"{cache} not found: run `learner embed {args.encoder}` first")
    table = EmbeddingTable.load(cache)
    split = {record.scan_id: record.split for record in manifest.records}
    by_split = {
        name: unit_rows(table.embeddings[[split[s] == name for s in table.scan_ids]])
        for name in ("train", "val", "test")
    }
    val = kth_distance(by_split["val"], by_split["train"], args.k)
    sizes = ", ".join(f"{len(rows)} {name}" for name, rows in by_split.items())
    print(f"{args.encoder}: {sizes} scans; trained on {', '.join(meta.scan_kinds) or '(not recorded)'}")
    for name in ("val", "test"):
        distances = kth_distance(by_split[name], by_split["train"], args.k)
        quantiles = ", ".join(f"{q:.0%} {v:.4f}" for q, v in zip((0.5, 0.9, 0.99, 1.0), np.quantile(
            distances, (0.5, 0.9, 0.99, 1.0)), strict=True))  # fmt: skip
        print(f"{name} scans, cosine distance to the train scans (k = {args.k}): {quantiles}")
    print("\n| file | kind | predicted score | distance | p |\n|---|---|---|---|---|")
    preprocessor = Preprocessor.from_config(data)
    for path in args.scans:
        frames = preprocessor.load(path)
        clips = clips_from_frames(frames, data.frames, 1, meta.encoder.in_channels, sampling=data.sampling)
        embedding, score = embed_clips(model, torch.stack([clips]), meta.score_standardisation)
        distance = kth_distance(unit_rows(embedding), by_split["train"], args.k)[0]
        p = (1 + np.sum(val >= distance)) / (1 + len(val))
        print(f"| {path.name} | {kind_of_file(path)} | {score[0]:.1f} | {distance:.4f} | {p:.3f} |")


if __name__ == "__main__":
    main()
