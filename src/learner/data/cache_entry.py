"""One scan cache entry file: its format, the full check that never trusts it, and this process's record of
the entries it checked (:mod:`learner.data.cache` names, builds and reads entries through it).

An entry is ``MAGIC``, a 4-byte little-endian header length, a JSON header (format version, dtype ``uint8``,
shape, the source identity it was built from, the CRC-32 of the pixel bytes) padded so that the pixels start
on a 64-byte boundary, then the pixels. :func:`read_entry` checks all of it: a truncated, zeroed,
byte-flipped or foreign file (a float or object ``.npy`` dropped in its place, an entry copied from another
scan) raises :class:`CorruptEntryError`.

Once per process: :func:`verified_entry` records each entry it checked in full with the file's identity
(size, ``mtime_ns``, inode) and afterwards only compares that identity (one ``stat``), so the CRC-32 of an
unchanged entry is computed once per process, not on every read. Processes forked later (DataLoader
workers) inherit the record; a spawned one receives the entries under a cache's root with the pickled
:class:`~learner.data.cache.ScanCache` (:func:`verified_under`, :func:`adopt_verified`). What is and is not
checked again is stated at :func:`verified_entry`.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISFIFO, S_ISREG
from typing import BinaryIO, TypeGuard

import numpy as np

from learner.atomic import atomic_path
from learner.formats import FORMATS

MAGIC = b"\x93LEARNER-SCAN\n"
_LENGTH_BYTES = 4
_ALIGN = 64  # the pixels start on a 64-byte boundary (memory-mapped reads stay aligned)
_MAX_HEADER = 4096


class CorruptEntryError(Exception):
    """A cache entry that failed its check (internal: the cache rebuilds it, users never see this)."""


@dataclass(frozen=True)
class VerifiedEntry:
    """An entry file checked in full: its identity then (size, ``mtime_ns``, inode), the source it was
    checked for and where its pixels lie (what a later read maps without reading them)."""

    identity: tuple[int, int, int]
    source: str
    shape: tuple[int, ...]
    offset: int


_VERIFIED: dict[Path, VerifiedEntry] = {}
"""The entries this process checked in full (:func:`verified_entry`), by path: filled by whichever read
came first (``build_cache`` reads every entry), inherited by the processes it forks."""


def verified_under(root: Path) -> dict[Path, VerifiedEntry]:
    """This process's checked entries in the folder ``root`` (what a spawned worker is handed)."""
    return {path: known for path, known in _VERIFIED.items() if path.parent == root}


def adopt_verified(entries: dict[Path, VerifiedEntry]) -> None:
    """Record ``entries``, checked by the process that started this one; an entry this process checked
    itself stays as it saw it."""
    for path, known in entries.items():
        _VERIFIED.setdefault(path, known)


def write_entry(path: Path, frames: np.ndarray, source: str) -> None:
    """Atomically write ``frames`` (uint8) as a cache entry whose header records ``source`` and a CRC-32."""
    pixels = np.ascontiguousarray(frames)
    if pixels.dtype != np.uint8:
        raise ValueError(f"cache entries hold uint8 frames, got {pixels.dtype}")
    fields = {
        "format": FORMATS["scan_cache"],
        "dtype": "uint8",
        "shape": list(pixels.shape),
        "source": source,
        "crc32": zlib.crc32(pixels.data),
    }
    header = json.dumps(fields).encode()
    header += b" " * (-(len(MAGIC) + _LENGTH_BYTES + len(header)) % _ALIGN)
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        handle.write(MAGIC + len(header).to_bytes(_LENGTH_BYTES, "little") + header)
        handle.write(pixels.data.cast("B"))


def verified_entry(path: Path, source: str) -> np.ndarray:
    """The entry's pixels, memory-mapped read-only: checked in full (:func:`read_entry`) the first time this
    process (or the process it was forked from) reads the file, afterwards only by its identity.

    The check is recorded with the file's size, ``mtime_ns`` and inode as it saw them: a rewritten, replaced,
    truncated or grown entry has another identity and is checked in full again (the cache's own writes
    always replace the file: a new inode). Not re-checked: a change that keeps all three, i.e. bytes that
    rot on the medium, or a same-size rewrite in place within one tick of the file system's clock (some
    kernels stamp files with a clock of a few milliseconds). A process started afresh (every ``learner``
    command, every run) checks each entry it reads in full once.

    Raises:
        FileNotFoundError: no entry. CorruptEntryError: the full check failed (nothing is recorded).
    """
    stat = path.stat()  # FileNotFoundError: no entry yet
    identity = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    known = _VERIFIED.get(path)
    if known is not None and known.identity == identity and known.source == source:
        return np.memmap(path, dtype=np.uint8, mode="r", offset=known.offset, shape=known.shape)
    pixels, offset = read_entry(path, source)
    _VERIFIED[path] = VerifiedEntry(identity, source, pixels.shape, offset)
    return pixels


def read_entry(path: Path, source: str) -> tuple[np.ndarray, int]:
    """(pixels memory-mapped read-only, their byte offset) after checking everything the header claims.

    Raises:
        FileNotFoundError: no entry. CorruptEntryError: anything else wrong, with the reason.
    """
    try:
        with _opened_entry(path) as handle:
            head = handle.read(len(MAGIC) + _LENGTH_BYTES)
            if len(head) < len(MAGIC) + _LENGTH_BYTES or head[: len(MAGIC)] != MAGIC:
                raise CorruptEntryError(f"not a learner cache entry ({len(head)}-byte start)")
            length = int.from_bytes(head[len(MAGIC) :], "little")
            if length > _MAX_HEADER:
                raise CorruptEntryError(f"header length {length} exceeds {_MAX_HEADER}")
            raw = handle.read(length)
        size = path.stat().st_size
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CorruptEntryError(f"cannot read it ({exc.strerror or exc})") from None
    if len(raw) < length:
        raise CorruptEntryError(f"header cut off at {len(head) + len(raw)} bytes")
    shape, crc = _checked_header(raw, source)
    offset = len(MAGIC) + _LENGTH_BYTES + length
    expected = offset + math.prod(shape)
    if size != expected:
        raise CorruptEntryError(f"{size} bytes where the header declares {expected}")
    pixels = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape)
    if zlib.crc32(pixels.data) != crc:
        raise CorruptEntryError("checksum mismatch: the pixels changed after writing")
    return pixels, offset


def _opened_entry(path: Path) -> BinaryIO:
    """``path`` opened for reading, refused unless it is a regular file: opened without blocking, so that a
    named pipe (FIFO) at an entry's name is a corrupt entry (rebuilt, the pipe replaced) instead of a
    ``data cache`` that waits forever for a writer.

    Raises:
        FileNotFoundError: no entry. CorruptEntryError: not a regular file. OSError: it cannot be opened.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(descriptor).st_mode
        if not S_ISREG(mode):
            kind = "a named pipe (FIFO)" if S_ISFIFO(mode) else "not a regular file"
            raise CorruptEntryError(f"{kind} where an entry belongs")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _checked_header(raw: bytes, source: str) -> tuple[tuple[int, ...], int]:
    """(shape, crc32) of a header that is valid JSON with the current format, uint8 pixels of a frame
    layout and ``source`` as its identity."""
    try:
        fields = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptEntryError("header is not valid JSON") from None
    if not isinstance(fields, dict):
        raise CorruptEntryError("header is not a JSON object")
    if fields.get("format") != FORMATS["scan_cache"]:
        raise CorruptEntryError(
            f"format {fields.get('format')!r}; this learner writes {FORMATS['scan_cache']}"
        )
    if fields.get("dtype") != "uint8":
        raise CorruptEntryError(f"dtype {fields.get('dtype')!r}, not uint8")
    shape, crc = fields.get("shape"), fields.get("crc32")
    if not _frame_layout(shape):
        raise CorruptEntryError(f"shape {shape!r} is not (T, H, W) or (T, H, W, 3)")
    if type(crc) is not int:
        raise CorruptEntryError("header has no checksum")
    if fields.get("source") != source:
        raise CorruptEntryError(f"built from {fields.get('source')!r}, not from this file")
    return tuple(shape), crc


def _frame_layout(shape: object) -> TypeGuard[list[int]]:
    """A JSON shape of positive ints, ``(T, H, W)`` or ``(T, H, W, 3)``."""
    if not isinstance(shape, list) or not all(type(n) is int and n >= 1 for n in shape):
        return False
    return len(shape) == 3 or (len(shape) == 4 and shape[-1] == 3)
