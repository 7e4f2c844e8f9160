"""Scan readers: one entry point, :func:`read_scan`, that turns any supported file into frames.

Every reader returns a :class:`Scan` whose ``frames`` are ``(T, H, W)`` grey or ``(T, H, W, 3)`` RGB,
``uint8`` for videos and images, ``float32`` for volumes and for deeper-than-8-bit images. The frame axis
is time for clips and the slice axis for volumes (Section 2.1: LUS videos, ADNI MRI volumes).

Readers are chosen from :data:`READERS` by file suffix (case-insensitive, ``.nii.gz`` as one suffix):

* video ``mp4 avi mov mpeg mpg gif`` — PyAV, falling back to imageio's Pillow plugin where PyAV fails
  (GIF variants FFmpeg mis-reads; for other containers PyAV's error is reported);
* DICOM ``dcm`` (and extensionless files with the ``DICM`` preamble) — pydicom, single- and multi-frame,
  YBR colour converted to RGB, MONOCHROME1 inverted, pixel spacing kept;
* NIfTI ``nii nii.gz`` — nibabel, reoriented to RAS+ and sliced along ``nifti_axis``;
* images ``png jpg jpeg bmp tif tiff`` — Pillow (multi-page TIFFs become several frames);
* a folder of numbered frame files (any image suffix or ``dcm``) — one clip, sorted numerically.

``meta`` holds only technical fields (source format, fps, pixel spacing in mm, frame count, ...). For DICOM
the fields are copied from an explicit allow-list, so no patient-identifying header ever leaves the reader.
Every failure is a :class:`~learner.errors.ScanReadError` whose one-line message names the file.

Every reader checks what the file *declares* (frames × rows × columns × samples, times the bytes per sample
of the frames it returns) against one limit, :func:`max_scan_bytes` (``LEARNER_MAX_SCAN_GB``, default
:data:`DEFAULT_MAX_SCAN_GB`), before it allocates the frames: a 1 KB ``.nii.gz`` whose header claims 1400³
voxels or a DICOM claiming 10⁵ frames is refused in one line, not answered with a ``MemoryError`` or the
kernel's OOM killer. Where a header may lie or say nothing (videos, GIFs, folders of frames) the frames
decoded so far are counted against the same limit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import stat
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from learner.config import NiftiAxis
from learner.errors import ConfigError, ScanReadError

log = logging.getLogger(__name__)

BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # RGB → luma weights


@dataclass(frozen=True)
class Scan:
    """Decoded frames plus technical metadata.

    Attributes:
        frames: ``(T, H, W)`` grey or ``(T, H, W, 3)`` RGB; ``uint8`` (video, image) or ``float32`` (volume).
        meta: ``source_format``, ``n_frames``, ``fps`` (or None), ``pixel_spacing`` ((row, col) mm, or None)
            and reader-specific technical fields. Never any patient-identifying field.
    """

    frames: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


DEFAULT_MAX_SCAN_GB = 4.0
"""The default limit on one decoded scan: far above a clinical clip or volume (a 256³ float32 MRI volume is
0.07 GB, 64 frames of 1080p RGB 0.4 GB), below what a laptop can hold twice (a reader briefly holds a
decoded scan and a copy of it)."""

MAX_SCAN_GB_VARIABLE = "LEARNER_MAX_SCAN_GB"
"""The environment variable that overrides :data:`DEFAULT_MAX_SCAN_GB`. An environment variable rather than a
config key, because the limit is about the machine, not the experiment (it changes no result, so it belongs
in no cache key), and the spawned cache workers inherit it."""


def max_scan_bytes() -> int:
    """The limit on one decoded scan in bytes: ``LEARNER_MAX_SCAN_GB`` (decimal GB) or the default.

    Raises:
        ConfigError: the variable is set to anything but a positive number.
    """
    text = os.environ.get(MAX_SCAN_GB_VARIABLE, "").strip()
    try:
        gigabytes = float(text) if text else DEFAULT_MAX_SCAN_GB
    except ValueError:
        gigabytes = math.nan
    if not (math.isfinite(gigabytes) and gigabytes > 0):
        raise ConfigError(f"{MAX_SCAN_GB_VARIABLE}={text[:40]!r}: should be a positive number of GB")
    return int(gigabytes * 1e9)


@dataclass(frozen=True)
class ReadOptions:
    """Options every reader receives (each uses the ones that apply to it)."""

    nifti_axis: NiftiAxis = "axial"
    max_frames: int | None = None
    grey: bool = False
    max_bytes: int = field(default_factory=max_scan_bytes)
    """The most bytes the decoded frames may take."""


def refuse_oversize(path: Path, shape: tuple[int, ...], itemsize: int, max_bytes: int, what: str) -> None:
    """Refuse frames of ``shape`` × ``itemsize`` bytes over ``max_bytes``, before anything allocates them.

    Args:
        path: the file named in the message.
        shape: the declared (or decoded so far) frames, e.g. ``(T, H, W)`` or ``(T, H, W, 3)``.
        itemsize: bytes per sample of the frames the reader returns (1 for uint8, 4 for float32).
        max_bytes: the limit (:func:`max_scan_bytes`).
        what: how the size is known, e.g. ``"the NIfTI header declares"``.

    Raises:
        ScanReadError: one line naming the file, the shape, its size and the limit.
    """
    size = math.prod(shape) * itemsize
    if size > max_bytes:
        dims = " × ".join(str(n) for n in shape)
        raise ScanReadError(
            f"{path}: {what} {dims} samples of {itemsize} byte(s) = {size / 1e9:.3g} GB decoded, over the "
            f"{max_bytes / 1e9:.3g} GB limit for one scan (set {MAX_SCAN_GB_VARIABLE} to raise it)"
        )


Reader = Callable[[Path, ReadOptions], Scan]


def read_scan(
    path: str | os.PathLike[str],
    *,
    nifti_axis: NiftiAxis = "axial",
    max_frames: int | None = None,
    grey: bool = False,
    max_bytes: int | None = None,
) -> Scan:
    """Read a video, DICOM, NIfTI volume, image or folder of frames into a :class:`Scan`.

    Args:
        path: the file or folder.
        nifti_axis: which RAS+ axis of a volume becomes the frame axis (axial: inferior → superior,
            coronal: posterior → anterior, sagittal: left → right).
        max_frames: decode at most this many frames from the start (None: all).
        grey: return ``(T, H, W)`` luminance for colour sources too (videos are then decoded straight to
            grey, which takes a third of the memory and about half the time).
        max_bytes: the most bytes the decoded frames may take (None: :func:`max_scan_bytes`).

    Raises:
        ScanReadError: missing, unsupported, truncated or corrupt file, zero frames, a 2-D or 4-D volume,
            non-finite voxels, frames over ``max_bytes``. The message names the file.
        ConfigError: ``LEARNER_MAX_SCAN_GB`` is not a positive number.
    """
    source = Path(path)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames should be >= 1 or None, got {max_frames}")
    if not source.exists():
        raise ScanReadError(f"{source}: file not found")
    refuse_special_file(source)
    if source.is_file() and source.stat().st_size == 0:
        raise ScanReadError(f"{source}: file is empty")
    reader = read_frame_folder if source.is_dir() else _reader_for(source)
    limit = max_scan_bytes() if max_bytes is None else max_bytes
    scan = reader(source, ReadOptions(nifti_axis, max_frames, grey, limit))
    if grey and scan.frames.ndim == 4:
        scan = Scan(luminance(scan.frames), scan.meta)
    frames = scan.frames
    if frames.shape[0] == 0:
        raise ScanReadError(f"{source}: contains zero frames")
    if not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
        raise ScanReadError(f"{source}: decoded to an unsupported frame layout {frames.shape}")
    if frames.dtype.kind == "f":  # float sources (NIfTI, float TIFF/DICOM): NaN would become 0 in uint8
        bad = int(frames.size - np.count_nonzero(np.isfinite(frames)))
        if bad:
            raise ScanReadError(f"{source}: {bad} NaN/inf pixel(s) or voxel(s)")
    low, high = float(frames.min()), float(frames.max())
    if low == high:  # an all-black image or video, or a constant volume (nothing to normalise either)
        raise ScanReadError(f"{source}: every pixel or voxel is {low:g}; a blank scan carries no image")
    height, width = frames.shape[1:3]
    if min(height, width) < MIN_SIDE:
        raise ScanReadError(
            f"{source}: frames of {height} × {width} pixels; a scan needs ≥ {MIN_SIDE} a side"
        )
    scan.meta["n_frames"] = int(frames.shape[0])
    return scan


MIN_SIDE = 4
"""The fewest pixels a frame may have a side: below it (a 1 × 1 icon, a 1 × 5000 strip) it is no scan."""

_SPECIAL_FILES: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def refuse_special_file(path: Path) -> None:
    """Refuse anything but a regular file or a folder before opening it (opening a FIFO blocks forever).

    Raises:
        ScanReadError: one line naming ``path`` and what it is.
    """
    mode = path.stat().st_mode
    for test, what in _SPECIAL_FILES:
        if test(mode):
            raise ScanReadError(f"{path}: is {what}, not a regular file; refusing to read it")


def suffix_of(path: Path) -> str:
    """Lower-case suffix used for reader lookup (``.nii.gz`` counts as one suffix)."""
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_dicom(path: Path) -> bool:
    """True when ``path`` carries the DICOM preamble (128 bytes, then ``DICM``)."""
    with path.open("rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def _reader_for(path: Path) -> Reader:
    suffix = suffix_of(path)
    if suffix in READERS:
        return READERS[suffix]
    if suffix == "" and is_dicom(path):
        return read_dicom
    supported = " ".join(sorted(READERS))
    raise ScanReadError(f"{path}: unsupported file type {suffix or '(no suffix)'!r}; supported: {supported}")


def scan_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a scan, found without decoding it (``learner data check``): it cannot
    be opened (no permission, a symbolic link to itself), it is a named pipe or a device, its type has no
    reader, it is empty; for a folder of frames, the same of each frame file. None when nothing is wrong
    that such a look can find (decoding may still fail: ``learner data cache`` decodes every scan).

    A missing file is not this function's to report (the manifest's own check names it).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: cannot read it: {exc.strerror}"
    if not stat.S_ISDIR(mode):
        return _file_problem(path, mode, READERS)
    try:
        members = frame_files(path)
    except OSError as exc:
        return f"{path}: cannot read the folder: {exc.strerror}"
    return next((problem for member in members if (problem := _frame_problem(member))), None)


def frame_files(folder: Path) -> list[Path]:
    """The frames of a folder of frames, in reading order (:func:`natural_key`): its entries whose suffix has
    a frame reader (:data:`FRAME_READERS`), except sub-folders and hidden entries (a name starting with
    ``.``, such as the ``._frame1.png`` metadata macOS writes beside every file it copies).

    The one listing of ``learner data check`` (:func:`scan_file_problem`, the manifest's "no frame files")
    and of :func:`read_frame_folder`, so that the check passes only a folder the reader can take. A frame
    that is no regular file (a named pipe, a broken symbolic link) is listed: both refuse it by name.

    Raises:
        OSError: the folder cannot be listed.
    """
    named = (p for p in folder.iterdir() if suffix_of(p) in FRAME_READERS and not _is_hidden(p))
    return sorted((p for p in named if not p.is_dir()), key=natural_key)


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _frame_problem(member: Path) -> str | None:
    """Why a listed frame cannot be read, found without decoding it (:func:`_file_problem`); None if none."""
    try:
        mode = os.stat(member).st_mode
    except OSError as exc:
        return f"{member}: cannot read it: {exc.strerror}"
    return _file_problem(member, mode, FRAME_READERS)


def _file_problem(path: Path, mode: int, readers: dict[str, Reader]) -> str | None:
    for test, what in _SPECIAL_FILES:
        if test(mode):
            return f"{path}: is {what}, not a regular file"
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        return f"{path}: cannot read it: {exc.strerror}"
    suffix = suffix_of(path)
    if suffix not in readers and not (suffix == "" and len(head) == 132 and head[128:] == b"DICM"):
        supported = " ".join(sorted(readers))
        return f"{path}: unsupported file type {suffix or '(no suffix)'!r}; supported: {supported}"
    if not head:
        return f"{path}: empty file (0 bytes)"
    return None


def luminance(frames: np.ndarray) -> np.ndarray:
    """(..., 3) RGB → (...) ITU-R BT.601 luma; uint8 stays uint8 (rounded), float stays float32."""
    luma = frames.astype(np.float32) @ BT601
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8) if frames.dtype == np.uint8 else luma


def _stack_frames(frames: list[np.ndarray], path: Path) -> np.ndarray:
    """Stack per-frame arrays; frames whose size changes mid-clip are an error, not a silent crop."""
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise ScanReadError(f"{path}: frame size changes within the clip ({sorted(shapes)})")
    return np.stack(frames) if frames else np.zeros((0, 0, 0), np.uint8)


# --------------------------------------------------------------------------------------------- video
def read_video(path: Path, options: ReadOptions) -> Scan:
    """Video or animated GIF → ``(T, H, W, 3)`` uint8 RGB (``(T, H, W)`` for grey pixel formats)."""
    import av

    check = _TRUNCATION_CHECKS.get(suffix_of(path))
    if check is not None and (problem := check(path)):
        raise ScanReadError(f"{path}: file is truncated ({problem})")
    failure: Exception | None = None
    try:
        frames, meta = _decode_pyav(path, options)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        frames, meta, failure = [], {}, exc
    if not frames and suffix_of(path) in _PILLOW_FALLBACK:
        log.info("%s: PyAV decoded no frames (%s); trying imageio", path, type(failure).__name__)
        frames, meta = _decode_imageio(path, options, failure)
    elif failure is not None:
        raise _decode_error(path, "video", failure) from failure
    return Scan(_stack_frames(frames, path), meta)


def _decode_pyav(path: Path, options: ReadOptions) -> tuple[list[np.ndarray], dict[str, Any]]:
    import av
    from av.video.reformatter import VideoReformatter

    max_frames = options.max_frames
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ScanReadError(f"{path}: contains no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # FFmpeg could not open a decoder for it (a corrupt header, say)
            raise ScanReadError(f"{path}: its video stream has no decoder (corrupt, or an unsupported codec)")
        stream.thread_type = "AUTO"
        grey = options.grey or (stream.codec_context.pix_fmt or "").startswith("gray")
        declared = min(stream.frames, max_frames or stream.frames)  # 0: the container does not say
        layout = (stream.codec_context.height, stream.codec_context.width, *(() if grey else (3,)))
        refuse_oversize(path, (declared, *layout), 1, options.max_bytes, "the video declares")
        frames: list[np.ndarray] = []
        pix_fmt = "gray" if grey else "rgb24"
        # One reformatter (one swscale context) for the clip: ``frame.to_ndarray(format=...)`` builds a new
        # one for every frame, ~4x the decoding time; the arrays are bit-identical.
        reformatter = VideoReformatter()
        for frame in container.decode(stream):
            frames.append(reformatter.reformat(frame, format=pix_fmt).to_ndarray())
            _refuse_decoded(path, frames, options.max_bytes)
            if max_frames is not None and len(frames) >= max_frames:
                break
        rate = stream.average_rate or stream.guessed_rate
        meta = {
            "source_format": suffix_of(path).lstrip("."),
            "decoder": "pyav",
            "codec": stream.codec_context.name,
            "fps": float(rate) if rate else None,
            "pixel_spacing": None,
        }
    return frames, meta


def _decode_imageio(
    path: Path, options: ReadOptions, pyav_error: Exception | None
) -> tuple[list[np.ndarray], dict[str, Any]]:
    import imageio.v3 as iio
    from PIL import Image

    max_frames = options.max_frames
    frames: list[np.ndarray] = []
    try:
        with bombs_refused():
            for frame in iio.imiter(path, plugin="pillow"):
                frames.append(_to_uint8_rgb_or_grey(np.asarray(frame), path))
                _refuse_decoded(path, frames, options.max_bytes)
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # not OSError subclasses
        raise _decode_error(path, "video", exc) from exc
    except (OSError, ValueError, RuntimeError, SyntaxError) as exc:
        raise _decode_error(path, "video", pyav_error or exc) from exc
    meta = {
        "source_format": suffix_of(path).lstrip("."),
        "decoder": "imageio",
        "fps": None,
        "pixel_spacing": None,
    }
    return frames, meta


def _refuse_decoded(path: Path, frames: list[np.ndarray], max_bytes: int) -> None:
    """The frame count a video declares may be missing or false: count the frames decoded so far too."""
    refuse_oversize(
        path, (len(frames), *frames[-1].shape), frames[-1].itemsize, max_bytes, "decoding reached"
    )


def _to_uint8_rgb_or_grey(frame: np.ndarray, path: Path) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) → (H, W) or (H, W, 3) uint8 (alpha dropped)."""
    if frame.dtype != np.uint8:
        raise ScanReadError(f"{path}: expected 8-bit video frames, got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[-1] == 1:
        return frame[..., 0]
    if frame.ndim == 3 and frame.shape[-1] == 4:
        return frame[..., :3]
    return frame


@contextlib.contextmanager
def bombs_refused() -> Iterator[None]:
    """Pillow's decompression-bomb *warning* (a frame over ``Image.MAX_IMAGE_PIXELS``, about 89 MP, and under
    twice that, where Pillow raises) raised as an error: no scan this toolkit resizes to a few hundred
    pixels needs more, and decoding one (a fuzzed 16 × 16 GIF declared 91 MP) takes seconds and gigabytes."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _decode_error(path: Path, what: str, exc: BaseException) -> ScanReadError:
    """One-line error naming the file, what failed and the library's whole message, its lines joined.

    The whole message, not its first line: pydicom's first line ends in "... by all available plugins:"
    and the reason (each plugin's complaint) follows on the next lines.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = " ".join(lines) if lines else "no details"
    return ScanReadError(f"{path}: cannot decode {what} ({type(exc).__name__}: {detail})")


_PILLOW_FALLBACK = (".gif",)  # the video formats imageio's Pillow plugin can read


# Decoders stop quietly at a cut-off end for several containers (a partial clip looks valid), so the
# container's own structure is checked first: the declared RIFF size (AVI), the top-level box sizes
# (MP4/MOV), the trailer byte (GIF). MPEG program streams carry no such record and are not checked.
def _riff_truncation(path: Path) -> str | None:
    with path.open("rb") as handle:
        head = handle.read(12)
    if len(head) < 12 or head[:4] != b"RIFF":
        return None  # not RIFF at all: the decoder reports the real problem
    declared = int.from_bytes(head[4:8], "little") + 8
    size = path.stat().st_size
    return f"RIFF header declares {declared} bytes, file has {size}" if size < declared else None


def _box_truncation(path: Path) -> str | None:
    size = path.stat().st_size
    offset = 0
    with path.open("rb") as handle:
        while offset + 8 <= size:
            handle.seek(offset)
            header = handle.read(16)
            box_size, box_type = int.from_bytes(header[:4], "big"), header[4:8]
            if box_size == 1 and len(header) == 16:  # 64-bit "largesize" follows the type
                box_size = int.from_bytes(header[8:16], "big")
            if box_size == 0:  # the box runs to the end of the file
                return None
            if box_size < 8 or not box_type.isascii() or not box_type.decode("ascii").isprintable():
                return None  # not an ISO-BMFF layout: the decoder reports the real problem
            if offset + box_size > size:
                name = box_type.decode("latin-1")
                return f"box {name!r} at byte {offset} declares {box_size} bytes, {size - offset} remain"
            offset += box_size
    return None


def _gif_truncation(path: Path) -> str | None:
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
    return None if last == b"\x3b" else "no GIF trailer byte at the end"


_TRUNCATION_CHECKS: dict[str, Callable[[Path], str | None]] = {
    ".avi": _riff_truncation,
    ".mp4": _box_truncation,
    ".mov": _box_truncation,
    ".gif": _gif_truncation,
}


# --------------------------------------------------------------------------------------------- images
_PIL_FLOAT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def read_image(path: Path, options: ReadOptions) -> Scan:
    """Still image (or multi-page TIFF) → ``(T, H, W)`` / ``(T, H, W, 3)``; EXIF orientation applied.

    8-bit images stay ``uint8``; 16-bit and float images become ``float32`` (normalised later like volumes).
    """
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    frames: list[np.ndarray] = []
    try:
        with bombs_refused(), Image.open(path) as image:  # reads the header only; refuses bombs
            check = _IMAGE_TRUNCATION_CHECKS.get(image.format or "")
            if check is not None and (problem := check(path)):
                raise ScanReadError(f"{path}: file is truncated ({problem})")
            pages = min(getattr(image, "n_frames", 1), options.max_frames or math.inf)
            samples, itemsize = _pil_layout(image.mode)
            shape = (int(pages), image.height, image.width, *((samples,) if samples > 1 else ()))
            refuse_oversize(path, shape, itemsize, options.max_bytes, "the image declares")
            for page in ImageSequence.Iterator(image):
                frames.append(_pil_array(ImageOps.exif_transpose(page)))
                if options.max_frames is not None and len(frames) >= options.max_frames:
                    break
    except (
        UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
        ValueError, SyntaxError,
    ) as exc:  # fmt: skip
        raise _decode_error(path, "image", exc) from exc
    meta = {"source_format": suffix_of(path).lstrip("."), "fps": None, "pixel_spacing": None}
    return Scan(_stack_frames(frames, path), meta)


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type → samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_truncation(path: Path) -> str | None:
    """Pillow zero-fills the rows of a PNG whose compressed stream ends early but cleanly, so the
    decompressed IDAT size is checked against the size IHDR implies (per Adam7 pass when interlaced)."""
    data = path.read_bytes()
    offset, idat, header = 8, bytearray(), None
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR" and len(body) >= 13:
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        offset += 12 + length
    if header is None:
        return None  # not a PNG Pillow would read: Pillow reports the real problem
    width, height, depth, colour, _, _, interlace = header
    bits = depth * _PNG_CHANNELS.get(colour, 1)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            expected += rows * (1 + -(-columns * bits // 8))
    stream, pending, got = zlib.decompressobj(), bytes(idat), 0
    try:
        while pending and got < expected:  # counted in 1 MiB pieces: the pixels are never held here
            piece = stream.decompress(pending, min(1 << 20, expected - got))
            got, pending = got + len(piece), stream.unconsumed_tail
            if not piece:
                break
    except zlib.error:
        return None  # a corrupt stream: Pillow reports it
    return f"pixel data holds {got} of {expected} bytes" if got < expected else None


_IMAGE_TRUNCATION_CHECKS: dict[str, Callable[[Path], str | None]] = {"PNG": _png_truncation}


def _pil_layout(mode: str) -> tuple[int, int]:
    """(samples per pixel, bytes per sample) of what :func:`_pil_array` returns for a page of ``mode``."""
    if mode in _PIL_FLOAT_MODES:
        return 1, 4
    return (1, 1) if mode in ("1", "L", "LA") else (3, 1)


def _pil_array(image: Any) -> np.ndarray:
    samples, itemsize = _pil_layout(image.mode)
    if itemsize == 4:
        return np.asarray(image, dtype=np.float32)
    return np.asarray(image.convert("L" if samples == 1 else "RGB"), dtype=np.uint8)


# --------------------------------------------------------------------------------------------- DICOM
def read_dicom(path: Path, options: ReadOptions) -> Scan:
    """DICOM (single- or multi-frame) → ``(T, H, W)`` / ``(T, H, W, 3)``.

    YBR_FULL / YBR_FULL_422 are converted to RGB by pydicom's decoder; MONOCHROME1 is inverted so that
    bright always means high signal (``255 − x`` for 8-bit data; negation for float data, which the
    percentile normalisation of :mod:`learner.data.preprocess` maps back to 0–255). A modality rescale
    (slope/intercept) yields ``float32``; so do grey images deeper than 8 bits.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels.processing import apply_modality_lut  # the defining modules (for mypy)
    from pydicom.pixels.utils import pixel_array

    try:
        ds = pydicom.dcmread(path, force=True)
        if "PixelData" not in ds:
            raise ScanReadError(f"{path}: DICOM file has no pixel data")
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        colour = int(ds.get("SamplesPerPixel", 1)) == 3
        rescaled = not colour and ("RescaleSlope" in ds or "RescaleIntercept" in ds)
        # pydicom decodes every frame whatever max_frames says; the frames come back uint8 or float32
        itemsize = 1 if int(ds.get("BitsAllocated", 8)) <= 8 and not rescaled else 4
        shape = (n_frames, int(ds.get("Rows", 0)), int(ds.get("Columns", 0)), *((3,) if colour else ()))
        refuse_oversize(path, shape, itemsize, options.max_bytes, "the DICOM header declares")
        pixels = pixel_array(ds)
    except (InvalidDicomError, AttributeError, OSError, ValueError, KeyError, EOFError, RuntimeError) as exc:
        # Messages from pydicom describe structure (lengths, tags, syntaxes), never element values.
        raise _decode_error(path, "DICOM", exc) from exc

    frames = pixels if n_frames > 1 else pixels[np.newaxis]  # (T, H, W[, 3])
    if options.max_frames is not None:
        frames = frames[: options.max_frames]
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if rescaled:
        frames = apply_modality_lut(frames, ds)
    if frames.dtype != np.uint8:
        frames = frames.astype(np.float32)
    if photometric == "MONOCHROME1":
        frames = 255 - frames if frames.dtype == np.uint8 else -frames
    meta = {
        "source_format": "dicom",
        "modality": str(ds.get("Modality", "")) or None,
        "photometric_interpretation": photometric or None,
        "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "")) or None,
        "fps": _dicom_fps(ds),
        "pixel_spacing": _dicom_spacing(ds),
    }
    return Scan(np.ascontiguousarray(frames), meta)


def _dicom_fps(ds: Any) -> float | None:
    frame_time = ds.get("FrameTime")  # milliseconds per frame
    if frame_time:
        return 1000.0 / float(frame_time)
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        if ds.get(keyword):
            return float(ds.get(keyword))
    return None


def _dicom_spacing(ds: Any) -> tuple[float, float] | None:
    """(row, col) spacing in mm: PixelSpacing, ImagerPixelSpacing, or the first ultrasound region (cm)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if ds.get(keyword):
            row, col = (float(v) for v in ds.get(keyword))
            return (row, col)
    regions = ds.get("SequenceOfUltrasoundRegions")
    if regions:
        region = regions[0]
        cm = 3  # PhysicalUnits code for centimetres
        if region.get("PhysicalUnitsXDirection") == cm and region.get("PhysicalUnitsYDirection") == cm:
            return (float(region.PhysicalDeltaY) * 10.0, float(region.PhysicalDeltaX) * 10.0)
    return None


# --------------------------------------------------------------------------------------------- NIfTI
# RAS+ voxel axes (0: left→right, 1: posterior→anterior, 2: inferior→superior) as (frame, row, col); rows
# are then flipped so that anterior (axial) or superior (coronal, sagittal) is at the top of each frame.
_NIFTI_AXES: dict[str, tuple[int, int, int]] = {
    "axial": (2, 1, 0),
    "coronal": (1, 2, 0),
    "sagittal": (0, 2, 1),
}


def read_nifti(path: Path, options: ReadOptions) -> Scan:
    """NIfTI volume → ``(T, H, W)`` float32 slices along ``options.nifti_axis`` of the RAS+ volume.

    The volume is reoriented with ``nib.as_closest_canonical``. ``pixel_spacing`` is the (row, col)
    voxel size in mm and ``slice_spacing`` the spacing along the frame axis.
    """
    import nibabel as nib

    if options.nifti_axis not in _NIFTI_AXES:
        raise ValueError(f"nifti_axis should be one of {sorted(_NIFTI_AXES)}, got {options.nifti_axis!r}")
    try:
        image = nib.load(path)
        # nib.load is typed FileBasedImage; a NIfTI file loads as a SpatialImage, which has .shape
        shape = tuple(int(s) for s in image.shape)  # type: ignore[attr-defined]
        if len(shape) < 3 or min(shape[:3]) < 2:
            raise ScanReadError(f"{path}: NIfTI image is 2-D (shape {shape}); a 3-D volume is needed")
        if any(s > 1 for s in shape[3:]):
            raise ScanReadError(
                f"{path}: NIfTI image is {len(shape)}-D (shape {shape}); one volume is needed"
            )
        # the whole volume is read as float32 whatever max_frames says (slices are cut after reorienting)
        refuse_oversize(path, shape[:3], 4, options.max_bytes, "the NIfTI header declares")
        image = nib.as_closest_canonical(image)
        volume = image.get_fdata(dtype=np.float32)
        volume = volume.reshape(volume.shape[:3])  # drop trailing singleton axes (e.g. a 1-point time axis)
        zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as exc:
        raise _decode_error(path, "NIfTI", exc) from exc
    frame_axis, row_axis, col_axis = _NIFTI_AXES[options.nifti_axis]
    frames = np.flip(volume.transpose(frame_axis, row_axis, col_axis), axis=1)  # (T, H, W)
    if options.max_frames is not None:
        frames = frames[: options.max_frames]
    meta = {
        "source_format": "nifti",
        "orientation": "RAS",
        "nifti_axis": options.nifti_axis,
        "fps": None,
        "pixel_spacing": (zooms[row_axis], zooms[col_axis]),
        "slice_spacing": zooms[frame_axis],
    }
    return Scan(np.ascontiguousarray(frames, dtype=np.float32), meta)


# --------------------------------------------------------------------------------------------- folders
def read_frame_folder(path: Path, options: ReadOptions) -> Scan:
    """A folder of numbered frame files (``frame_2.png`` before ``frame_10.png``) → one clip.

    The frames are :func:`frame_files`; a frame that is no regular file or cannot be opened is refused
    before it is read (opening a named pipe would wait forever). Hidden files are ignored; other files with
    no frame reader are counted in ``meta["ignored_files"]``.
    """
    members = frame_files(path)
    ignored = sum(
        1 for p in path.iterdir() if p.is_file() and not _is_hidden(p) and suffix_of(p) not in FRAME_READERS
    )
    if ignored:
        log.warning("%s: ignored %d file(s) that are not frames", path, ignored)
    frames: list[np.ndarray] = []
    first_meta: dict[str, Any] = {}
    for member in members:
        if problem := _frame_problem(member):
            raise ScanReadError(problem)
        scan = FRAME_READERS[suffix_of(member)](member, options)
        if not frames:  # the first member tells what all of them declare: refuse before reading the rest
            total = min(len(members) * len(scan.frames), options.max_frames or math.inf)
            declared = (int(total), *scan.frames.shape[1:])
            refuse_oversize(
                path, declared, scan.frames.itemsize, options.max_bytes, "the frame files declare"
            )
        first_meta = first_meta or scan.meta
        if frames and (scan.frames.shape[1:] != frames[0].shape[1:] or scan.frames.dtype != frames[0].dtype):
            raise ScanReadError(
                f"{member}: frame {scan.frames.shape[1:]} {scan.frames.dtype} does not match the folder's "
                f"first frame {frames[0].shape[1:]} {frames[0].dtype}"
            )
        frames.append(scan.frames)
        if options.max_frames is not None and sum(len(f) for f in frames) >= options.max_frames:
            break
    stacked = np.concatenate(frames)[: options.max_frames] if frames else np.zeros((0, 0, 0), np.uint8)
    meta = {
        "source_format": "frames",
        "n_files": len(members),
        "ignored_files": ignored,
        "fps": None,
        "pixel_spacing": first_meta.get("pixel_spacing"),
    }
    return Scan(stacked, meta)


def natural_key(path: Path) -> tuple[tuple[int, int | str], ...]:
    """Sort key comparing digit runs as numbers: frame_2 < frame_10."""
    parts = re.split(r"(\d+)", path.name.lower())
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts)


_VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mpeg", ".mpg", ".gif")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Suffix → reader for single files (see the module docstring).
READERS: dict[str, Reader] = {
    **dict.fromkeys(_VIDEO_SUFFIXES, read_video),
    **dict.fromkeys(_IMAGE_SUFFIXES, read_image),
    ".dcm": read_dicom,
    ".nii": read_nifti,
    ".nii.gz": read_nifti,
}

#: Readers allowed for the members of a folder of frames.
FRAME_READERS: dict[str, Reader] = {**dict.fromkeys(_IMAGE_SUFFIXES, read_image), ".dcm": read_dicom}
