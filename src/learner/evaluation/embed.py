"""The frozen encoder as a feature extractor (Section 2.4): every scan embedded once, cached on disk.

After pretraining, θ_V is frozen; each scan becomes one embedding u (D,) and, through θ_M, one predicted
health score. Clips are taken deterministically: the TSN centre frame of each of T segments
(:mod:`learner.data.sampling`); with ``clips_per_scan = K > 1`` the K clips take evenly offset positions
inside every segment (the centres of K equal sub-segments) and the K embeddings (and K score predictions)
are averaged.

The table is cached at ``RUN_DIR/embeddings/<fingerprint>-<inputs>-<K>.npz`` where ``fingerprint`` is the
checkpoint's weight hash (:func:`learner.training.checkpoint.checkpoint_fingerprint`) and ``inputs`` hashes
every scan (ID, file, size, mtime) plus the preprocessing, T and sampling of the run's config. Every
classifier on one encoder reuses the file; retraining the encoder or changing a scan or the manifest
changes the name, so a stale table is never read. The ``.npz`` holds plain arrays only and is loaded
with ``allow_pickle=False``.

Example::

    table = embed_scans("runs/lus-wcl", manifest, clips_per_scan=1)
    X = pair_features(pairs, table.embeddings, table.scan_ids, "difference")
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from learner.atomic import atomic_path, check_outputs, usable_file
from learner.config import Config
from learner.data.cache import ScanCache, default_cache_root
from learner.data.datasets import ScanDataset
from learner.data.manifest import Manifest, ScanRecord
from learner.data.preprocess import Preprocessor
from learner.data.scan_kinds import cohort_mismatch
from learner.errors import CheckpointError, ConfigError, ScanReadError
from learner.formats import FORMATS
from learner.layout import RunLayout
from learner.losses.regression import ScoreStandardiser
from learner.models.heads import ScoreRegressor
from learner.timing import stage
from learner.training.checkpoint import CheckpointMeta, checkpoint_fingerprint, load_regressor, read_meta

log = logging.getLogger(__name__)

EMBED_BATCH = 32  # scans (× K clips) per encoder forward: bounds memory


@dataclass(frozen=True)
class EmbeddingTable:
    """One row per scan: ``embeddings`` (S, D) float32 and predicted ``scores`` (S,) float32 in score units.

    ``skipped`` lists (scan_id, reason) of unreadable scans left out (only with ``skip_bad``).
    """

    scan_ids: list[str]
    embeddings: np.ndarray
    scores: np.ndarray
    fingerprint: str
    clips_per_scan: int
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.embeddings.shape[0] != len(self.scan_ids) or self.scores.shape != (len(self.scan_ids),):
            raise ValueError(
                f"embeddings (S, D) and scores (S,) must have S = {len(self.scan_ids)} rows, got "
                f"{self.embeddings.shape} and {self.scores.shape}"
            )

    def save(self, path: Path) -> Path:
        """Atomically write the table as an ``.npz`` of plain arrays (no pickled objects)."""
        with atomic_path(path) as tmp:
            self.write_npz(tmp)
        return path

    def write_npz(self, path: Path) -> None:
        """Write the ``.npz`` to ``path`` as it is (not atomic; :meth:`save` is)."""
        skipped = np.array([list(s) for s in self.skipped], dtype=str).reshape(-1, 2)
        with path.open("wb") as handle:
            np.savez(
                handle,
                scan_ids=np.array(self.scan_ids, dtype=str),
                embeddings=self.embeddings.astype(np.float32),
                scores=self.scores.astype(np.float32),
                fingerprint=np.array(self.fingerprint),
                clips_per_scan=np.array(self.clips_per_scan),
                skipped=skipped,
            )

    @classmethod
    def load(cls, path: Path) -> EmbeddingTable:
        """Read a table written by :meth:`save` (``allow_pickle=False``)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(
                    scan_ids=[str(s) for s in data["scan_ids"]],
                    embeddings=data["embeddings"],
                    scores=data["scores"],
                    fingerprint=str(data["fingerprint"]),
                    clips_per_scan=int(data["clips_per_scan"]),
                    skipped=[(str(a), str(b)) for a, b in data["skipped"]],
                )
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: unreadable embedding table ({exc})") from None


def embedding_frame(
    table: EmbeddingTable, manifest: Manifest, splits: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """The table as one row per embedded scan: ``scan_id``, ``patient_id``, ``split``, ``score`` (the
    manifest's), ``predicted_score`` and ``emb_0 … emb_{D-1}``.

    ``split`` is the patient's in ``splits`` (a pretraining run's ``splits.csv``), else the manifest's,
    else empty (a patient the run never saw, in a manifest without a split column).
    """
    records = {record.scan_id: record for record in manifest.records}
    rows = [records[scan_id] for scan_id in table.scan_ids]
    known = splits or {}
    columns: dict[str, Any] = {
        "scan_id": table.scan_ids,
        "patient_id": [r.patient_id for r in rows],
        "split": [known.get(r.patient_id) or r.split or "" for r in rows],
        "score": np.array([r.score for r in rows], dtype=np.float64),
        "predicted_score": table.scores.astype(np.float64),
    }
    columns |= {f"emb_{d}": table.embeddings[:, d] for d in range(table.embeddings.shape[1])}
    return pd.DataFrame(columns)


def _write_parquet(table: EmbeddingTable, frame: Callable[[], pd.DataFrame], tmp: Path) -> None:
    frame().to_parquet(tmp, index=False)


def _write_csv(table: EmbeddingTable, frame: Callable[[], pd.DataFrame], tmp: Path) -> None:
    frame().to_csv(tmp, index=False)


def _write_npz(table: EmbeddingTable, frame: Callable[[], pd.DataFrame], tmp: Path) -> None:
    table.write_npz(tmp)  # the cache's own format (EmbeddingTable.load reads it back)


EMBEDDING_WRITERS: dict[str, Callable[[EmbeddingTable, Callable[[], pd.DataFrame], Path], None]] = {
    ".parquet": _write_parquet,
    ".csv": _write_csv,
    ".npz": _write_npz,
}
"""File suffix of ``learner embed --out`` → writer."""


def check_embedding_output(
    path: str | os.PathLike[str],
    manifest: Manifest,
    *,
    force: bool = False,
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Path:
    """``path`` once it is known that :func:`write_embeddings` may write the embeddings of ``manifest``
    there: run it before the scans are embedded.

    Raises:
        ConfigError: a suffix that names no format of :data:`EMBEDDING_WRITERS`.
        OutputError: a place that cannot take a file (:func:`learner.atomic.usable_file`); ``path`` is the
            manifest's file or one of ``inputs`` (name → path; even with ``force``), or exists (without
            ``force``): :func:`learner.atomic.check_outputs`.
    """
    target = usable_file(path, "--out")
    if target.suffix.lower() not in EMBEDDING_WRITERS:
        raise ConfigError(
            f"{target}: unknown embedding file type {target.suffix!r}; use {', '.join(EMBEDDING_WRITERS)}"
        )
    # a manifest built from a table has its data root as source: only a manifest file is an input to keep
    read = {"the manifest": manifest.source} if manifest.source.is_file() else {}
    check_outputs([target], force=force, inputs=read | dict(inputs or {}))
    return target


def write_embeddings(
    table: EmbeddingTable,
    manifest: Manifest,
    path: str | os.PathLike[str],
    *,
    splits: Mapping[str, str] | None = None,
    force: bool = False,
) -> Path:
    """Atomically write ``table`` to ``path`` in the format its suffix names (:data:`EMBEDDING_WRITERS`);
    tables as :func:`embedding_frame` (``manifest`` and ``splits`` give the per-scan columns). An existing
    file is replaced only with ``force``; the manifest's own file never.

    Raises:
        ConfigError, OutputError: as :func:`check_embedding_output`.
    """
    target = check_embedding_output(path, manifest, force=force)
    writer = EMBEDDING_WRITERS[target.suffix.lower()]
    with atomic_path(target) as tmp:
        writer(table, lambda: embedding_frame(table, manifest, splits), tmp)
    return target


@torch.no_grad()
def embed_clips(
    model: ScoreRegressor, clips: torch.Tensor, standardiser: ScoreStandardiser
) -> tuple[np.ndarray, np.ndarray]:
    """Clips (N, K, T, C, H, W) of N scans → mean embeddings (N, D) and mean predicted scores (N,).

    The K clips of a scan are averaged after the encoder (embeddings) and after the head (scores, turned
    from standardised units back into score units). The model is in eval mode, so BatchNorm uses its
    running statistics and a scan's result does not depend on the other scans in the batch.
    """
    n, k = clips.shape[:2]
    device = next(model.parameters()).device
    embeddings, predicted = model(clips.flatten(0, 1).to(device))  # (N·K, D), (N·K,) standardised
    scores = standardiser.destandardise(predicted.double())
    mean_embeddings = embeddings.float().reshape(n, k, -1).mean(dim=1)  # (N, D)
    return mean_embeddings.cpu().numpy(), scores.reshape(n, k).mean(dim=1).float().cpu().numpy()


def inputs_hash(manifest: Manifest, config: Config) -> str:
    """16 hex digits over every scan's (ID, path, size, mtime) and the run's preprocessing, T and sampling."""
    digest = hashlib.sha256()
    preprocessing = {
        "key": Preprocessor.from_config(config.data).key(),
        "frames": config.data.frames,
        "sampling": config.data.sampling,
        "format": FORMATS["embedding_cache"],
    }
    digest.update(json.dumps(preprocessing, sort_keys=True).encode())
    for record in manifest.records:
        try:
            stat = record.path.stat()
            identity = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            identity = "missing"
        digest.update(f"{record.scan_id}\0{record.path}\0{identity}\n".encode())
    return digest.hexdigest()[:16]


def embedding_cache_path(
    run_dir: str | os.PathLike[str], manifest: Manifest, *, which: str = "best", clips_per_scan: int = 1
) -> tuple[Path, str]:
    """Where :func:`embed_scans` keeps the table for this checkpoint, manifest and K, and the fingerprint."""
    run = RunLayout(run_dir)
    fingerprint = checkpoint_fingerprint(run.checkpoint(which))
    config = read_meta(run.checkpoint(which)).config
    name = f"{fingerprint[:16]}-{inputs_hash(manifest, config)}-{clips_per_scan}.npz"
    return run.embeddings / name, fingerprint


@stage("embedding")
def embed_scans(
    run_dir: str | os.PathLike[str],
    manifest: Manifest,
    *,
    which: str = "best",
    clips_per_scan: int = 1,
    device: str = "cpu",
    skip_bad: bool = False,
) -> EmbeddingTable:
    """Embed every scan of ``manifest`` with the frozen encoder of ``RUN_DIR/checkpoints/<which>``.

    Args:
        run_dir: a pretraining run directory.
        manifest: the scans to embed (usually the one the encoder was trained on; any validated manifest).
        which: ``best`` or ``last`` checkpoint.
        clips_per_scan: K deterministic clips averaged per scan (K = 1: TSN centre frames).
        device: where the encoder runs.
        skip_bad: leave unreadable scans out (listed in ``skipped`` and logged) instead of raising.

    Returns:
        The :class:`EmbeddingTable`, rows in manifest order; read from the cache when it is current.

    Raises:
        CheckpointError: no such checkpoint or unusable metadata. ScanReadError: an unreadable scan
            (without ``skip_bad``). ConfigError: ``clips_per_scan > 1`` for a run with
            ``data.sampling=resample``.
    """
    if clips_per_scan < 1:
        raise ValueError(f"clips_per_scan should be >= 1, got {clips_per_scan}")
    target, fingerprint = embedding_cache_path(run_dir, manifest, which=which, clips_per_scan=clips_per_scan)
    if target.is_file():
        return EmbeddingTable.load(target)
    model, meta = load_regressor(run_dir, which=which, device=device)
    table = embed_manifest(
        model, meta, manifest, fingerprint, clips_per_scan=clips_per_scan, skip_bad=skip_bad, where=run_dir
    )
    table.save(target)
    return table


def embed_manifest(
    model: ScoreRegressor,
    meta: CheckpointMeta,
    manifest: Manifest,
    fingerprint: str,
    *,
    clips_per_scan: int = 1,
    skip_bad: bool = False,
    where: str | os.PathLike[str] = "the encoder",
) -> EmbeddingTable:
    """:func:`embed_scans` with the encoder already loaded (``model`` in eval mode, its checkpoint's
    ``meta``), nothing cached; ``fingerprint`` identifies its weights and ``where`` names it in errors. Scans
    of kinds the encoder was not trained on are embedded all the same, with a warning counting them."""
    config = meta.config
    if config.data.sampling == "resample" and clips_per_scan > 1:
        raise ConfigError(
            f"clips per scan {clips_per_scan} needs data.sampling=segments; the run {where} resamples "
            "every scan to one grid, so it has one clip per scan"
        )
    if (foreign := cohort_mismatch(manifest.records, meta.scan_kinds, manifest.source)) is not None:
        log.warning("%s", foreign)
    scans = eval_dataset(manifest, manifest.records, config, meta.encoder.in_channels)
    kept, skipped, embeddings, scores = embed_dataset(
        lambda clips: embed_clips(model, clips, meta.score_standardisation), scans, clips_per_scan, skip_bad
    )
    dim = model.encoder.embed_dim
    return EmbeddingTable(
        scan_ids=kept,
        embeddings=embeddings if kept else np.zeros((0, dim), np.float32),
        scores=scores if kept else np.zeros(0, np.float32),
        fingerprint=fingerprint,
        clips_per_scan=clips_per_scan,
        skipped=skipped,
    )


ClipForward = Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]]
"""Clips (N, K, T, C, H, W) of N scans → embeddings (N, D) and predicted scores (N,)."""


def eval_dataset(
    manifest: Manifest, records: Sequence[ScanRecord], config: Config, channels: int
) -> ScanDataset:
    """The eval clips that validation saw during training, of ``records`` (scans of ``manifest``)."""
    cache = ScanCache(
        default_cache_root(manifest, config.runtime.cache_dir), Preprocessor.from_config(config.data)
    )
    return ScanDataset(
        list(records),
        cache,
        frames=config.data.frames,
        channels=channels,
        train=False,
        augment=None,
        sampling=config.data.sampling,
    )


def embed_dataset(
    forward: ClipForward, scans: ScanDataset, clips_per_scan: int, skip_bad: bool
) -> tuple[list[str], list[tuple[str, str]], np.ndarray, np.ndarray]:
    """Every scan of ``scans`` through ``forward`` in batches of :data:`EMBED_BATCH`: the kept scan IDs,
    the (scan_id, reason) of unreadable scans (only with ``skip_bad``; else the error is raised), the
    embeddings (S, D) and scores (S,) of the kept scans (empty arrays when none is kept)."""
    kept: list[str] = []
    skipped: list[tuple[str, str]] = []
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(scans), EMBED_BATCH):
        clips: list[torch.Tensor] = []
        for index, record in enumerate(scans.records[start : start + EMBED_BATCH], start):
            try:
                clips.append(scans.eval_clips(index, clips_per_scan))  # (K, T, C, H, W)
            except ScanReadError as exc:
                if not skip_bad:
                    raise
                log.warning("embedding: skipped unreadable scan %s: %s", record.scan_id, exc)
                skipped.append((record.scan_id, str(exc)))
                continue
            kept.append(record.scan_id)
        if clips:
            parts.append(forward(torch.stack(clips)))  # (N, K, T, C, H, W)
    if not parts:
        return kept, skipped, np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
    return kept, skipped, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
