"""Fig. 1's reference rows (issue 20 item 5): a frozen random-init encoder and the raw pixels, checked
against a hand-built encoder, a hand-pooled clip and scipy's Spearman ρ, and shown in the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from learner.config import DatasetSpec
from learner.data.cache import ScanCache, default_cache_root
from learner.data.datasets import ScanDataset
from learner.data.manifest import load_manifest
from learner.data.preprocess import Preprocessor
from learner.data.scales import get_scale
from learner.evaluation.reference_embeddings import (
    REFERENCE_EMBEDDINGS,
    raw_pixel_features,
    reference_embeddings,
)
from learner.experiments.results import ExperimentResult
from learner.models.registry import build_encoder
from learner.report.document import write_report
from learner.training.checkpoint import read_meta

IDS = {"first_scan_id": str, "second_scan_id": str}


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    cosine: np.ndarray = np.einsum("pd,pd->p", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return 1.0 - cosine


@pytest.mark.parametrize(("dataset", "scale"), [("LUS", "sf"), ("MRI", "mmse")])
def test_reference_rows_match_a_hand_built_encoder_and_hand_pooled_pixels(
    tiny_table3: ExperimentResult, tiny_datasets: list[DatasetSpec], dataset: str, scale: str
) -> None:
    out = tiny_table3.out_dir
    folder = out / dataset / "mse" / "seed-0"
    pairs = pd.read_csv(folder / "classifier" / "pairs" / "test.csv", dtype=IDS)
    scan_ids = sorted(set(pairs["first_scan_id"]) | set(pairs["second_scan_id"]))
    spec = next(d for d in tiny_datasets if d.name == dataset)
    manifest = load_manifest(spec.manifest, get_scale(scale))
    references = reference_embeddings(folder / "encoder", manifest, scan_ids, seed=0)
    assert list(references) == list(REFERENCE_EMBEDDINGS)

    # the random-init row: the run's architecture built by hand with torch.manual_seed(seed), frozen
    meta = read_meta(folder / "encoder" / "checkpoints" / "best")
    config = meta.config
    torch.manual_seed(0)
    encoder = build_encoder(
        config.model.model_copy(update={"init": None}),
        meta.encoder.in_channels,
        img_size=config.data.size,
        frames=config.data.frames,
    ).eval()
    records = {r.scan_id: r for r in manifest.records}
    scans = ScanDataset(
        [records[s] for s in scan_ids[:3]],
        ScanCache(default_cache_root(manifest, None), Preprocessor.from_config(config.data)),
        frames=config.data.frames,
        channels=meta.encoder.in_channels,
        train=False,
        augment=None,
        sampling=config.data.sampling,
    )
    clips = torch.stack([scans.eval_clips(i, 1)[0] for i in range(3)])  # (3, T, C, H, W)
    with torch.no_grad():
        expected = encoder(clips).numpy()
    np.testing.assert_allclose(references["random_init"][:3], expected, rtol=1e-4, atol=1e-5)
    other_seed = reference_embeddings(folder / "encoder", manifest, scan_ids[:3], seed=1)["random_init"]
    assert not np.allclose(other_seed, expected)

    # the raw-pixel row: at 32 px nothing is pooled, so it is the flattened clip itself
    assert clips.shape[-2:] == (32, 32)
    np.testing.assert_allclose(references["raw_pixels"][:3], clips.reshape(3, -1).numpy(), atol=1e-7)

    # the recorded ρ is scipy's on these embeddings and the pairs' |Δ score|
    figure = tiny_table3.results.to_json()["figures"][dataset]["score"]
    index = {s: i for i, s in enumerate(scan_ids)}
    change = (pairs["second_score"] - pairs["first_score"]).abs()
    for name, embeddings in references.items():
        first = embeddings[[index[s] for s in pairs["first_scan_id"]]]
        second = embeddings[[index[s] for s in pairs["second_scan_id"]]]
        rho = stats.spearmanr(change, _cosine_distance(first, second)).statistic
        row = figure["references"][name]
        assert row["spearman_rho"] == pytest.approx(rho, abs=1e-6, nan_ok=True)
        assert row["n_pairs"] == len(pairs) == figure["panels"]["mse"]["n_pairs"]


def test_raw_pixels_are_block_means_of_every_frame() -> None:
    clips = torch.rand(2, 3, 1, 64, 96)  # (M, T, C, H, W)
    blocks = clips.reshape(2, 3, 1, 32, 2, 32, 3).mean(dim=(4, 6))  # 64 x 96 → 32 x 32
    torch.testing.assert_close(raw_pixel_features(clips), blocks.reshape(2, -1))
    small = torch.rand(2, 3, 3, 16, 20)
    torch.testing.assert_close(raw_pixel_features(small), small.reshape(2, -1))  # already small: kept


def test_the_report_lists_the_reference_rows_under_every_fig1_table(tiny_table3: ExperimentResult) -> None:
    text = write_report(tiny_table3.out_dir).read_text()
    figure_part = text.split("## Fig. 1")[1]
    tables = figure_part.count("| Loss | Spearman ρ |")
    assert tables == 4  # LUS and MRI, score and latent
    assert figure_part.count("| *frozen random-init encoder* |") == tables
    assert figure_part.count("| *raw pixels* |") == tables
