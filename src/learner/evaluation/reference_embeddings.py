"""Fig. 1's reference embeddings: what a ρ is worth with no pretraining at all.

Section 3's Fig. 1 shows, per objective, how the cosine distance between a test pair's embeddings follows
the change; it has no row for an encoder that learned nothing. :func:`reference_embeddings` embeds the
same scans, with the same clips as the run's encoder, by a frozen randomly initialised copy of the run's
architecture and by the raw pixels, so the Fig. 1 tables can show what the data give for free.

Example::

    references = reference_embeddings("runs/lus-wcl", manifest, test_scan_ids, seed=0)
    references["raw_pixels"].shape  # (S, T·C·h·w)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from learner.data.manifest import Manifest
from learner.errors import ConfigError
from learner.evaluation.embed import embed_dataset, eval_dataset
from learner.layout import RunLayout
from learner.models.registry import build_encoder
from learner.timing import stage
from learner.training.checkpoint import read_meta

RAW_PIXEL_SIDE = 32
"""The raw-pixel reference averages every frame down to at most this many pixels a side (area pooling)."""

REFERENCE_EMBEDDINGS: tuple[str, ...] = ("random_init", "raw_pixels")
"""Fig. 1's reference rows (:func:`reference_embeddings`), in the order the report lists them."""

ClipFeatures = Callable[[torch.Tensor], torch.Tensor]
"""Clips (M, T, C, H, W) → features (M, D), with no learning (e.g. :func:`raw_pixel_features`)."""


@stage("embedding")
def reference_embeddings(
    run_dir: str | os.PathLike[str],
    manifest: Manifest,
    scan_ids: Sequence[str],
    *,
    seed: int,
    clips_per_scan: int = 1,
    which: str = "best",
    device: str = "cpu",
    features: Mapping[str, ClipFeatures] | None = None,
) -> dict[str, np.ndarray]:
    """What Fig. 1's ρ is worth without pretraining: the scans embedded by two references, with the same
    clips as the run's encoder (Section 3's Fig. 1 has no such rows; they say how much of a ρ the data
    give for free).

    * ``random_init``: the run's encoder architecture (``model.backbone`` and its options) randomly
      initialised with ``seed`` (``model.init`` cleared) and frozen, in eval mode.
    * ``raw_pixels``: each clip's frames area-averaged to at most :data:`RAW_PIXEL_SIDE` pixels a side and
      flattened, (T·C·h·w,).

    Args:
        run_dir: a pretraining run directory (its config decides the clips and the architecture).
        manifest: the scans' manifest; scan_ids: the scans to embed (e.g. those of the test pairs).
        seed: the random initialisation's seed. clips_per_scan: K clips averaged per scan.
        features: more pixel features, name → :data:`ClipFeatures`, computed from the same clips in the
            same read of each scan (the ceiling study's hand features); averaged over the K clips too.

    Returns:
        reference name (:data:`REFERENCE_EMBEDDINGS`, then the names of ``features``) → (S, D) float32
        embeddings in ``scan_ids`` order.
    """
    pixel_features: dict[str, ClipFeatures] = {"raw_pixels": raw_pixel_features}
    clashes = sorted(set(features or {}) & set(REFERENCE_EMBEDDINGS))
    if clashes:
        raise ValueError(f"feature name {clashes[0]!r} is taken by a reference embedding")
    pixel_features.update(features or {})
    meta = read_meta(RunLayout(run_dir).checkpoint(which))
    config = meta.config
    records = {record.scan_id: record for record in manifest.records}
    missing = [scan_id for scan_id in scan_ids if scan_id not in records]
    if missing:
        raise ConfigError(f"{manifest.source}: no scan {missing[0]!r} for the reference embeddings")
    scans = eval_dataset(manifest, [records[s] for s in scan_ids], config, meta.encoder.in_channels)
    model_cfg = config.model.model_copy(update={"init": None})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_encoder(
            model_cfg, meta.encoder.in_channels, img_size=config.data.size, frames=config.data.frames
        )
    encoder = encoder.to(device).eval()
    collected: dict[str, list[np.ndarray]] = {name: [] for name in pixel_features}

    def forward(clips: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:  # one read of each scan serves all
        for name, feature in pixel_features.items():
            collected[name].append(_mean_over_clips(clips, feature)[0])
        return _mean_over_clips(clips, lambda x: encoder(x.to(device)).float().cpu())

    with torch.no_grad():
        random_init = embed_dataset(forward, scans, clips_per_scan, skip_bad=False)[2]
    pixels = {name: np.concatenate(parts).astype(np.float32) for name, parts in collected.items()}
    return {"random_init": random_init.astype(np.float32), **pixels}


def _mean_over_clips(
    clips: torch.Tensor, features: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, T, C, H, W) → per-scan mean of ``features`` over its K clips (N, D), and no scores (zeros)."""
    n, k = clips.shape[:2]
    values = features(clips.flatten(0, 1)).reshape(n, k, -1).mean(dim=1)
    return values.numpy(), np.zeros(n, np.float32)


def raw_pixel_features(clips: torch.Tensor) -> torch.Tensor:
    """(M, T, C, H, W) → (M, T·C·h·w): every frame area-averaged to at most RAW_PIXEL_SIDE a side."""
    m, t, c, h, w = clips.shape
    side = (min(h, RAW_PIXEL_SIDE), min(w, RAW_PIXEL_SIDE))
    pooled = torch.nn.functional.adaptive_avg_pool2d(clips.float().reshape(m * t, c, h, w), side)
    return pooled.reshape(m, -1)
