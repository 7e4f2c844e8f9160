"""Decode-once scan cache: each scan is read and preprocessed once into a uint8 ``.npy`` that every later
epoch memory-maps (so after the first epoch no video is decoded again).

Layout: ``<root>/<entry>-<identity>.npy`` where ``entry`` hashes the absolute path and the
:meth:`Preprocessor.key` and ``identity`` hashes the file's size and ``mtime_ns``. Changing the file or any
preprocessing parameter therefore misses the old array and rebuilds; a rebuild removes the stale
``<entry>-*.npy`` siblings. Arrays are written to a temporary name and renamed into place
(:mod:`learner.atomic`), so concurrent writers of one entry cannot corrupt it: the last complete write wins
and readers only ever see whole files.

Example::

    cache = ScanCache(default_cache_root(manifest, cfg.runtime.cache_dir), Preprocessor.from_config(cfg.data))
    frames = cache.get(manifest.records[0])  # (T', H, W) uint8, memory-mapped
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from learner.atomic import atomic_path
from learner.data.manifest import ScanRecord
from learner.data.preprocess import Preprocessor
from learner.errors import ScanReadError

if TYPE_CHECKING:
    from learner.config import DataConfig
    from learner.data.manifest import Manifest

log = logging.getLogger(__name__)


class ScanCache:
    """Memory-mapped, decode-once cache of preprocessed scans under ``root``.

    Attributes:
        root: the cache folder (created on first write).
        preprocessor: the deterministic :class:`Preprocessor` whose output is cached.
        decode_count: scans this instance decoded (not counting cache hits).
    """

    def __init__(self, root: Path, preprocessor: Preprocessor) -> None:
        self.root = Path(root)
        self.preprocessor = preprocessor
        self.decode_count = 0

    def path_for(self, source: ScanRecord | str | os.PathLike[str]) -> Path:
        """The cache file that holds ``source`` as it is now on disk (it may not exist yet)."""
        path = _source_path(source)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise ScanReadError(f"{path}: file not found") from None
        if path.is_dir():  # a folder of frames changes when any member does
            members = [p.stat() for p in path.iterdir() if p.is_file()]
            size, mtime = sum(m.st_size for m in members), max((m.st_mtime_ns for m in members), default=0)
        else:
            size, mtime = stat.st_size, stat.st_mtime_ns
        entry = _digest(f"{path}\0{self.preprocessor.key()}", 20)
        identity = _digest(f"{size}:{mtime}", 12)
        return self.root / f"{entry}-{identity}.npy"

    def ensure(self, source: ScanRecord | str | os.PathLike[str]) -> tuple[Path, bool]:
        """Build the entry for ``source`` unless it exists: (cache file, True when this call decoded it)."""
        target = self.path_for(source)
        if target.exists():
            return target, False
        frames = self.preprocessor.load(_source_path(source))
        with atomic_path(target) as tmp, tmp.open("wb") as handle:
            np.save(handle, frames)  # a file handle: np.save would append ".npy" to a path
        self.decode_count += 1
        entry = target.name.rsplit("-", 1)[0]
        for stale in self.root.glob(f"{entry}-*.npy"):
            if stale != target:
                stale.unlink(missing_ok=True)
        return target, True

    def get(self, source: ScanRecord | str | os.PathLike[str]) -> np.ndarray:
        """The preprocessed scan, ``(T', H, W)`` or ``(T', H, W, 3)`` uint8, memory-mapped read-only.

        Raises:
            ScanReadError: the scan cannot be read (the message names the file).
        """
        target, _ = self.ensure(source)
        scan: np.ndarray = np.load(target, mmap_mode="r")
        return scan


@dataclass(frozen=True)
class CacheReport:
    """What :func:`build_cache` did: files ``built`` and ``reused``, ``skipped`` (scan_id, reason) pairs."""

    built: int
    reused: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def default_cache_root(manifest: Manifest, cache_dir: Path | None) -> Path:
    """``cache_dir`` (``runtime.cache_dir``) if set, else ``<manifest folder>/.learner-cache``."""
    return Path(cache_dir) if cache_dir is not None else manifest.root / ".learner-cache"


def build_cache(
    manifest: Manifest,
    data_cfg: DataConfig,
    workers: int = 2,
    skip_bad: bool = False,
    *,
    cache_dir: Path | None = None,
) -> CacheReport:
    """Decode every scan of ``manifest`` into the cache ahead of training, with a progress bar.

    Each distinct file is built once (rows sharing a file share its entry). ``workers`` >= 2 decodes in
    that many processes; 0 or 1 decodes in this process.

    Args:
        manifest: the validated manifest (``.root``, ``.records``).
        data_cfg: preprocessing parameters.
        workers: decoding processes.
        skip_bad: list unreadable scans in ``CacheReport.skipped`` (every row of the file, with the
            reason) instead of raising.
        cache_dir: the cache folder (``runtime.cache_dir``); None: :func:`default_cache_root`.

    Raises:
        ScanReadError: the first unreadable scan, when ``skip_bad`` is False.
    """
    from rich.progress import Progress

    started = time.perf_counter()
    cache = ScanCache(default_cache_root(manifest, cache_dir), Preprocessor.from_config(data_cfg))
    rows: dict[Path, list[str]] = defaultdict(list)
    for record in manifest.records:
        rows[Path(record.path)].append(record.scan_id)
    built = reused = 0
    skipped: list[tuple[str, str]] = []
    with Progress(transient=True, disable=not sys.stdout.isatty()) as progress:  # no bar in a log file
        task = progress.add_task("caching scans", total=len(rows))
        for path, outcome in _outcomes(cache, list(rows), workers):
            if isinstance(outcome, ScanReadError):
                if not skip_bad:
                    raise outcome
                log.warning("skipped unreadable scan: %s", outcome)
                skipped.extend((scan_id, str(outcome)) for scan_id in rows[path])
            elif outcome:
                built += 1
            else:
                reused += 1
            progress.advance(task)
    return CacheReport(built, reused, skipped, time.perf_counter() - started)


def _outcomes(
    cache: ScanCache, paths: Sequence[Path], workers: int
) -> Iterator[tuple[Path, bool | ScanReadError]]:
    """(path, built? or its read error) as each finishes, in this process or in a spawn-started pool.

    Entries already cached are answered here first, so a warm cache (every run after the first) never
    starts a pool of processes that each import torch.
    """
    misses = []
    for path in paths:
        try:
            hit = cache.path_for(path).exists()
        except ScanReadError as exc:
            yield path, exc
            continue
        if hit:
            yield path, False
        else:
            misses.append(path)
    if workers <= 1 or len(misses) <= 1:
        for path in misses:
            yield path, _ensure_one(cache.root, cache.preprocessor, path)
        return
    paths = misses
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # fork after torch/OpenMP start-up can deadlock
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
    try:
        futures = {pool.submit(_ensure_one, cache.root, cache.preprocessor, path): path for path in paths}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an early stop drops the queued scans


def _ensure_one(root: Path, preprocessor: Preprocessor, path: Path) -> bool | ScanReadError:
    """Worker task: build one entry; a read error is returned (not raised) so the caller decides."""
    try:
        return ScanCache(root, preprocessor).ensure(path)[1]
    except ScanReadError as exc:
        return exc


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one decoding process per core; intra-op threads would oversubscribe


def _source_path(source: ScanRecord | str | os.PathLike[str]) -> Path:
    path = source.path if isinstance(source, ScanRecord) else Path(source)
    return Path(os.path.abspath(path))


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]
