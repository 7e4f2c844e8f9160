"""Decode-once scan cache: each scan is read and preprocessed once into a checksummed uint8 entry that every
later epoch memory-maps (so after the first epoch no video is decoded again).

Layout: ``<root>/<entry>-<identity>.lcache`` where ``entry`` hashes the absolute path and the
:meth:`Preprocessor.key` and ``identity`` hashes the file's content (BLAKE2b of its bytes) with its size,
``mtime_ns``, inode and ``ctime_ns`` (for a frame folder: every member's name, in the order the reader takes
them, with those five), so a swapped, rewritten or re-extracted file is never served stale, even where
every ``stat`` field came out as before (a file system with coarse or no ctime). Changing the file or any
preprocessing parameter therefore misses the old entry and rebuilds; a rebuild removes the stale
``<entry>-*`` siblings. An instance hashes a source once, and again only when its ``stat`` fields change, so
the bytes of each scan are read once per process for its identity (about 1.3 ms per MB, under 0.2% of a
decode: BENCHMARKS.md, "Scan cache: content identity"). Entries are written to a temporary name and renamed
into place (:mod:`learner.atomic`), so concurrent writers of one entry cannot corrupt it: the last complete
write wins and readers only ever see whole files.

The cache never trusts its files. An entry (:mod:`learner.data.cache_entry`) is a header (format, shape,
the source identity it was built from, the CRC-32 of the pixels) and the pixels; reading checks all of it:
a truncated, zeroed, byte-flipped or foreign file (a float or object ``.npy`` dropped in its place, an
entry copied from another scan) fails the check and is rebuilt from its source — counted as "rebuilt
(corrupt)" by :func:`build_cache` — and never used. A process checks an entry in full once, then only its
``stat`` (size, ``mtime_ns``, inode) on later reads (:func:`~learner.data.cache_entry.verified_entry`), so
an epoch costs one ``stat`` per item; DataLoader workers inherit the entries their parent checked
(``build_cache`` reads every one).

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
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from learner.atomic import usable_folder
from learner.data.cache_entry import (
    CorruptEntryError,
    adopt_verified,
    verified_entry,
    verified_under,
    write_entry,
)
from learner.data.manifest import ScanRecord
from learner.data.preprocess import Preprocessor
from learner.data.readers import natural_key, refuse_special_file
from learner.data.workers import die_with_parent
from learner.errors import OutputError, ScanReadError

if TYPE_CHECKING:
    from learner.config import DataConfig
    from learner.data.manifest import Manifest

log = logging.getLogger(__name__)

SUFFIX = ".lcache"

Outcome = Literal["built", "reused", "rebuilt"]
"""What :meth:`ScanCache.ensure` did: decoded a missing entry, reused a sound one, rebuilt a corrupt one."""


@dataclass(frozen=True)
class _Entry:
    """Where a source's entry lives and the identity its header must record."""

    path: Path
    source: str


class ScanCache:
    """Memory-mapped, decode-once, checksummed cache of preprocessed scans under ``root``.

    Attributes:
        root: the cache folder (created on first write).
        preprocessor: the deterministic :class:`Preprocessor` whose output is cached.
        decode_count: scans this instance decoded (not counting cache hits), rebuilds included.
        rebuilt_count: entries this instance found corrupt and rebuilt.
    """

    def __init__(self, root: Path, preprocessor: Preprocessor) -> None:
        self.root = Path(root)
        self.preprocessor = preprocessor
        self.decode_count = 0
        self.rebuilt_count = 0
        self._versions: dict[Path, str] = {}  # source file → its identity, while its stat fields hold

    def path_for(self, source: ScanRecord | str | os.PathLike[str]) -> Path:
        """The cache file that holds ``source`` as it is now on disk (it may not exist yet)."""
        return self._entry(source).path

    def ensure(self, source: ScanRecord | str | os.PathLike[str]) -> tuple[Path, Outcome]:
        """Build the entry for ``source`` unless a sound one exists: (cache file, what was done)."""
        entry, _, outcome = self._fetch(source)
        return entry.path, outcome

    def get(self, source: ScanRecord | str | os.PathLike[str]) -> np.ndarray:
        """The preprocessed scan, ``(T', H, W)`` or ``(T', H, W, 3)`` uint8, memory-mapped read-only.

        Raises:
            ScanReadError: the scan cannot be read (the message names the file).
            OutputError: the cache folder cannot be written.
        """
        return self._fetch(source)[1]

    def is_cached(self, source: ScanRecord | str | os.PathLike[str]) -> bool:
        """Whether a sound entry for ``source`` exists (checked as a read is; a corrupt one is not)."""
        try:
            entry = self._entry(source)
            verified_entry(entry.path, entry.source)
        except (FileNotFoundError, CorruptEntryError):
            return False
        return True

    def _fetch(self, source: ScanRecord | str | os.PathLike[str]) -> tuple[_Entry, np.ndarray, Outcome]:
        entry = self._entry(source)
        outcome: Outcome = "built"
        try:
            return entry, verified_entry(entry.path, entry.source), "reused"
        except FileNotFoundError:
            pass
        except CorruptEntryError as exc:
            log.warning(
                "cache entry %s is corrupt (%s); rebuilding it from %s", entry.path, exc, entry.source
            )
            outcome = "rebuilt"
        frames = self.preprocessor.load(_source_path(source))
        write_entry(entry.path, frames, entry.source)
        self.decode_count += 1
        self.rebuilt_count += outcome == "rebuilt"
        stem = entry.path.name.rsplit("-", 1)[0]
        for stale in self.root.glob(f"{stem}-*{SUFFIX}"):
            if stale != entry.path:
                stale.unlink(missing_ok=True)
        try:
            return entry, verified_entry(entry.path, entry.source), outcome
        except (CorruptEntryError, FileNotFoundError) as exc:  # the file just written does not read back
            raise OutputError(f"{entry.path}: cache entry does not read back after writing ({exc})") from exc

    def _entry(self, source: ScanRecord | str | os.PathLike[str]) -> _Entry:
        path = _source_path(source)
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise ScanReadError(f"{path}: file not found") from None
        except OSError as exc:
            raise ScanReadError(f"{path}: cannot read ({exc.strerror})") from None
        if path.is_dir():  # a folder of frames changes when any member does, or when they swap names
            members = sorted((p for p in path.iterdir() if p.is_file()), key=natural_key)
            version = ";".join(f"{p.name}={self._identity(p, p.stat())}" for p in members)
        else:
            version = self._identity(path, stat)
        key = self.preprocessor.key()
        entry, identity = _digest(f"{path}\0{key}", 20), _digest(version, 12)
        return _Entry(self.root / f"{entry}-{identity}{SUFFIX}", f"{path}|{key}|{_digest(version, 16)}")

    def _identity(self, path: Path, stat: os.stat_result) -> str:
        """``path``'s version: its stat fields and a content hash, hashed again only when a field changed."""
        fields = f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}:{stat.st_ctime_ns}"
        known = self._versions.get(path)
        if known is None or not known.startswith(f"{fields}:"):
            known = self._versions[path] = f"{fields}:{content_digest(path)}"
        return known

    def __getstate__(self) -> dict[str, Any]:
        """The instance with this process's checked entries under its root: a spawned process (a DataLoader
        worker where ``spawn`` is the default) trusts them as a forked one, which inherits them."""
        return self.__dict__ | {"_verified": verified_under(self.root)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        adopt_verified(state.pop("_verified"))
        self.__dict__.update(state)


def content_digest(path: Path) -> str:
    """BLAKE2b (128-bit) of the file's bytes, read in streamed blocks (never the whole file in memory).

    The stat fields alone are not enough: ctime, which no program can set back, is as coarse as the
    kernel's clock tick on some file systems and absent on others, so a same-size rewrite with its mtime
    restored can leave every field as it was. BLAKE2b is the fastest strong hash in :mod:`hashlib`.

    Raises:
        ScanReadError: the file cannot be read, or is a FIFO or device (opening a FIFO blocks forever).
    """
    refuse_special_file(path)
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    except OSError as exc:
        raise ScanReadError(f"{path}: cannot read ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class CacheReport:
    """What :func:`build_cache` did: files ``built`` (new), ``reused`` and ``rebuilt`` (corrupt entries
    decoded again), ``skipped`` (scan_id, reason) pairs."""

    built: int
    reused: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    rebuilt: int = 0


def default_cache_root(manifest: Manifest, cache_dir: Path | None) -> Path:
    """``cache_dir`` (``runtime.cache_dir``) if set, else ``<manifest folder>/.learner-cache``."""
    return Path(cache_dir) if cache_dir is not None else manifest.root / ".learner-cache"


SKIP_BAD_HINT = "fix or drop that manifest row, or skip bad scans with --set data.skip_bad_scans=true"
"""The way out of a scan that stops :func:`build_cache`: ``pretrain`` and the experiments, which build the
cache before training, have no ``--skip-bad`` flag, but every command that builds it takes ``--set``
(``data cache`` also takes ``--skip-bad``)."""


def build_cache(
    manifest: Manifest,
    data_cfg: DataConfig,
    workers: int = 2,
    skip_bad: bool = False,
    *,
    cache_dir: Path | None = None,
    cache: ScanCache | None = None,
) -> CacheReport:
    """Decode every scan of ``manifest`` into the cache ahead of training, with a progress bar.

    Each distinct file is built once (rows sharing a file share its entry). ``workers`` >= 2 decodes in
    that many processes; 0 or 1 decodes in this process. Every existing entry is checked (header and
    checksum); a corrupt one is rebuilt and counted in ``rebuilt``. Every entry is read in this process
    (an entry a worker built is read back here), so that later reads here and in the processes this one
    forks (DataLoader workers) find it checked (:func:`verified_entry`).

    Args:
        manifest: the validated manifest (``.root``, ``.records``).
        data_cfg: preprocessing parameters.
        workers: decoding processes.
        skip_bad: list unreadable scans in ``CacheReport.skipped`` (every row of the file, with the
            reason) instead of raising.
        cache_dir: the cache folder (``runtime.cache_dir``); None: :func:`default_cache_root`.
        cache: the :class:`ScanCache` to fill, instead of a new one at ``cache_dir``.

    Raises:
        ScanReadError: the first unreadable scan, when ``skip_bad`` is False (with :data:`SKIP_BAD_HINT`).
        OutputError: the cache folder is a file or cannot be written.
    """
    from rich.progress import Progress

    started = time.perf_counter()
    root = cache.root if cache is not None else default_cache_root(manifest, cache_dir)
    usable_folder(root, "runtime.cache_dir" if cache_dir is not None else "the scan cache folder")
    cache = cache or ScanCache(root, Preprocessor.from_config(data_cfg))
    rows: dict[Path, list[str]] = defaultdict(list)
    for record in manifest.records:
        rows[Path(record.path)].append(record.scan_id)
    counts: dict[Outcome, int] = {"built": 0, "reused": 0, "rebuilt": 0}
    skipped: list[tuple[str, str]] = []
    with Progress(transient=True, disable=not sys.stdout.isatty()) as progress:  # no bar in a log file
        task = progress.add_task("caching scans", total=len(rows))
        for path, outcome in _outcomes(cache, list(rows), workers):
            if isinstance(outcome, ScanReadError):
                if not skip_bad:
                    raise ScanReadError(f"{outcome}; {SKIP_BAD_HINT}") from None
                log.warning("skipped unreadable scan: %s", outcome)
                skipped.extend((scan_id, str(outcome)) for scan_id in rows[path])
            else:
                counts[outcome] += 1
            progress.advance(task)
    seconds = time.perf_counter() - started
    return CacheReport(counts["built"], counts["reused"], skipped, seconds, counts["rebuilt"])


def _outcomes(
    cache: ScanCache, paths: Sequence[Path], workers: int
) -> Iterator[tuple[Path, Outcome | ScanReadError]]:
    """(path, outcome or its read error) as each finishes, in this process or in a spawn-started pool.

    Sound entries are answered here first, so a warm cache (every run after the first) never starts a
    pool of processes that each import torch.
    """
    misses = []
    for path in paths:
        try:
            hit = cache.is_cached(path)
        except ScanReadError as exc:
            yield path, exc
            continue
        if hit:
            yield path, "reused"
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
            path, outcome = futures[future], future.result()
            if not isinstance(outcome, ScanReadError):
                try:
                    cache.ensure(path)  # checked here once, not again in each loader worker forked later
                except ScanReadError as exc:  # the scan became unreadable after its worker decoded it
                    outcome = exc
            yield path, outcome
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an early stop drops the queued scans


def _ensure_one(root: Path, preprocessor: Preprocessor, path: Path) -> Outcome | ScanReadError:
    """Worker task: build one entry; a read error is returned (not raised) so the caller decides."""
    try:
        return ScanCache(root, preprocessor).ensure(path)[1]
    except ScanReadError as exc:
        return exc


def _init_worker() -> None:
    die_with_parent()  # first: a parent killed while torch loads leaves this worker to exit at once
    import torch

    torch.set_num_threads(1)  # one decoding process per core; intra-op threads would oversubscribe


def _source_path(source: ScanRecord | str | os.PathLike[str]) -> Path:
    path = source.path if isinstance(source, ScanRecord) else Path(source)
    return Path(os.path.abspath(path))


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]
