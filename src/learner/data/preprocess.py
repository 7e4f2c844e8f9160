"""Deterministic preprocessing: a decoded :class:`~learner.data.readers.Scan` → the compact uint8 array
the cache stores and every epoch reads (the deterministic part of the pipeline, before any randomness).

Steps, in order:

1. **Volume crop** — with any crop but ``none``, float data (volumes) are cut to the 3-D bounding box of
   their foreground: voxels above ``volume_threshold`` × the 99th percentile (the non-zero voxels when the
   background is exactly zero), after a 3×3×3 binary opening that removes isolated background-noise specks.
   The slices then cover the anatomy, not the empty slabs around it, so the TSN eval rule of Section 2.2
   spreads T slices over the foreground extent.
2. **Frame budget** — at most ``max_cached_frames`` frames, evenly spaced over the clip.
3. **Grey** — colour becomes luminance (ITU-R BT.601) when ``channels == 1``; :meth:`Preprocessor.load`
   asks the reader for grey frames, so videos are decoded straight to luma.
4. **Crop** of 8-bit clips (:data:`CROPS`) — ``none``; ``foreground``: bounding box of pixels brighter than
   a threshold in any frame; ``fan``: bounding box of pixels that *vary over time* and are bright enough —
   the ultrasound fan, without the static burned-in text, logos and borders around it (a single frame or
   a static clip falls back to ``foreground``).
5. **Square and resize** — the crop is zero-padded to a centred square (no distortion of the anatomy), then
   resized to ``size × size`` with bilinear, antialiased ``torch.nn.functional.interpolate``.
6. **Intensity** — float data (volumes, deep images) are scaled so the 1st–99th percentiles of the
   non-zero voxels map to 0–255; 8-bit videos keep their values.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from learner.config import NiftiAxis
from learner.data.readers import Scan, luminance, read_scan
from learner.formats import FORMATS

log = logging.getLogger(__name__)

_RESIZE_CHUNK = 16  # frames resized at once: bounds float32 memory for long, large clips

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)


@dataclass(frozen=True)
class Preprocessor:
    """Scan → uint8 ``(T', size, size)`` (grey) or ``(T', size, size, 3)`` (``channels == 3``, colour source).

    Args:
        size: output height = width.
        channels: 1 converts colour to grey; 3 keeps colour (a grey source stays grey, the dataset
            repeats the channel).
        crop: ``none``, ``fan`` or ``foreground`` (see :data:`CROPS`).
        max_cached_frames: frame budget T' (evenly subsampled when the scan is longer).
        nifti_axis: slicing axis of NIfTI volumes (part of the cache key, as it changes the frames).
        intensity_threshold: grey level (0–255) above which a pixel counts as foreground.
        motion_threshold: temporal standard deviation (grey levels) above which a pixel counts as moving.
        volume_threshold: fraction of a volume's 99th percentile above which a voxel is foreground.
    """

    size: int = 112
    channels: Literal[1, 3] = 1
    crop: str = "fan"
    max_cached_frames: int = 64
    nifti_axis: NiftiAxis = "axial"
    intensity_threshold: float = 12.0
    motion_threshold: float = 3.0
    volume_threshold: float = 0.1

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"crop should be one of {sorted(CROPS)}, got {self.crop!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels should be 1 or 3, got {self.channels}")
        if self.size < 1 or self.max_cached_frames < 1:
            raise ValueError(
                f"size and max_cached_frames should be >= 1, got {self.size}, {self.max_cached_frames}"
            )

    @classmethod
    def from_config(cls, data: object) -> Preprocessor:
        """Build from a :class:`learner.config.DataConfig`."""
        return cls(
            size=data.size,  # type: ignore[attr-defined]
            channels=data.channels,  # type: ignore[attr-defined]
            crop=data.crop,  # type: ignore[attr-defined]
            max_cached_frames=data.max_cached_frames,  # type: ignore[attr-defined]
            nifti_axis=data.nifti_axis,  # type: ignore[attr-defined]
        )

    def key(self) -> str:
        """Stable 16-hex-digit hash of every parameter plus the ``preprocess`` format version."""
        text = json.dumps({**asdict(self), "version": FORMATS["preprocess"]}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def load(self, path: str | os.PathLike[str]) -> np.ndarray:
        """Read ``path`` (grey straight from the decoder when ``channels == 1``) and preprocess it; a scan
        smaller than ``size`` (once per frame size and process) or nearly blank is warned about when it is
        decoded (:func:`upsampled`, :func:`nearly_blank`)."""
        scan = read_scan(path, nifti_axis=self.nifti_axis, grey=self.channels == 1)
        small = upsampled(scan.frames, self.size)
        if small is not None and small not in _WARNED_SIZES:  # a cohort of one size: one line, not one a scan
            _WARNED_SIZES.add(small)
            log.warning("%s: %s (other scans of this size are not named)", path, small)
        if (blank := nearly_blank(scan.frames)) is not None:
            log.warning("%s: %s", path, blank)
        return self(scan)

    def __call__(self, scan: Scan) -> np.ndarray:
        """Preprocess ``scan.frames`` ((T, H, W) or (T, H, W, 3)) into the cached uint8 array."""
        frames = scan.frames
        volume = frames.dtype != np.uint8
        if volume and self.crop != "none":
            frames = frames[self.volume_box(frames)]
        frames = frames[even_indices(len(frames), self.max_cached_frames)]
        if frames.ndim == 4 and self.channels == 1:
            frames = luminance(frames)
        if not volume:
            y0, y1, x0, x1 = CROPS[self.crop](self, frames if frames.ndim == 3 else luminance(frames))
            frames = frames[:, y0:y1, x0:x1]
        frames = pad_to_square(frames)
        resized: npt.NDArray[np.float32] = resize(frames, self.size)
        if volume:
            low, high = _percentiles(frames)
            resized = (resized - low) * (255.0 / max(high - low, float(np.finfo(np.float32).tiny)))
        return np.clip(np.rint(resized), 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------------------------------ crops
    def no_crop(self, grey: np.ndarray) -> Box:
        """The whole frame."""
        return (0, grey.shape[1], 0, grey.shape[2])

    def foreground_box(self, grey: np.ndarray) -> Box:
        """Bounding box of the pixels brighter than ``intensity_threshold`` in any frame of (T, H, W)."""
        return _mask_box(grey.max(axis=0) > self.intensity_threshold) or self.no_crop(grey)

    def fan_box(self, grey: np.ndarray) -> Box:
        """Bounding box of the pixels of (T, H, W) that move over time and are bright somewhere in the clip.

        Burned-in text, calibration bars and borders are static, so their temporal standard deviation is
        ~0 (only codec noise) and they drop out. Falls back to :meth:`foreground_box` for single frames and
        clips with no motion.
        """
        if len(grey) < 2:
            return self.foreground_box(grey)
        moving = grey.std(axis=0, dtype=np.float32) > self.motion_threshold
        bright = grey.max(axis=0) > self.intensity_threshold
        return _mask_box(moving & bright) or self.foreground_box(grey)

    def volume_box(self, frames: np.ndarray) -> tuple[slice, slice, slice]:
        """(slices, rows, cols) of the foreground of a float volume (T, H, W[, 3]); everything if none."""
        from scipy import ndimage

        grey = frames if frames.ndim == 3 else luminance(frames)
        mask = grey > self.volume_threshold * max(float(np.percentile(grey, 99)), 0.0)
        depth = min(3, len(grey))  # a 1- or 2-slice image is opened in-plane only
        mask = ndimage.binary_opening(mask, structure=np.ones((depth, 3, 3), dtype=bool))
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        box = _mask_box(mask.any(axis=0))
        if box is None:
            return (slice(None), slice(None), slice(None))
        y0, y1, x0, x1 = box
        return (slice(int(slices[0]), int(slices[-1]) + 1), slice(y0, y1), slice(x0, x1))


#: Crop name → method returning the (y0, y1, x0, x1) box of an 8-bit clip from its grey frames (T, H, W).
CROPS: dict[str, Callable[[Preprocessor, np.ndarray], Box]] = {
    "none": Preprocessor.no_crop,
    "foreground": Preprocessor.foreground_box,
    "fan": Preprocessor.fan_box,
}


def even_indices(n: int, budget: int) -> np.ndarray:
    """``min(n, budget)`` indices evenly spaced over ``range(n)``, first and last included (int64)."""
    if n <= budget:
        return np.arange(n)
    return np.rint(np.linspace(0, n - 1, budget)).astype(np.int64)


def pad_to_square(frames: np.ndarray) -> np.ndarray:
    """Zero-pad (T, H, W[, C]) symmetrically so that H == W."""
    h, w = frames.shape[1:3]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = [(0, 0), (top, side - h - top), (left, side - w - left)] + [(0, 0)] * (frames.ndim - 3)
    return np.pad(frames, pad)


def resize(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, S, S[, C]) → (T, size, size[, C]) float32, bilinear with antialiasing, in chunks of frames."""
    import torch
    import torch.nn.functional as F

    colour = frames.ndim == 4
    out = np.empty((len(frames), size, size, *frames.shape[3:]), dtype=np.float32)
    for start in range(0, len(frames), _RESIZE_CHUNK):
        chunk = torch.from_numpy(
            np.ascontiguousarray(frames[start : start + _RESIZE_CHUNK], dtype=np.float32)
        )
        chunk = chunk.permute(0, 3, 1, 2) if colour else chunk.unsqueeze(1)  # (t, C, S, S)
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        chunk = chunk.permute(0, 2, 3, 1) if colour else chunk.squeeze(1)  # (t, size, size[, C])
        out[start : start + len(chunk)] = chunk.numpy()
    return out


def _mask_box(mask: np.ndarray) -> Box | None:
    """Half-open bounding box of the True pixels of (H, W) ``mask``, or None when there are none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)


def _percentiles(frames: np.ndarray) -> tuple[float, float]:
    """1st and 99th percentile of the non-zero values (all values when every value is zero)."""
    values = frames[frames != 0]
    values = values if values.size else frames.ravel()
    low, high = np.percentile(values, [1.0, 99.0])
    return float(low), float(high)


NEARLY_BLANK = 0.99
"""A scan whose middle 99% of pixel values (a 1-in-16 sample) is one value is nearly blank."""


def upsampled(frames: np.ndarray, size: int) -> str | None:
    """Frames ``(T, H, W[, 3])`` smaller than ``size`` a side are upsampled, which adds no detail: why."""
    height, width = frames.shape[1:3]
    if min(height, width) >= size:
        return None
    return f"frames of {height} × {width} pixels are upsampled to data.size={size}"


def nearly_blank(frames: np.ndarray) -> str | None:
    """A few stray pixels on a constant image (a wholly constant one is refused by the reader): why."""
    step = max(1, len(frames) // 32)  # at most about 32 frames, every 4th pixel
    sample = frames[::step, ::4, ::4].astype(np.float32, copy=False)
    tail = (1 - NEARLY_BLANK) / 2 * 100
    low, high = np.percentile(sample, [tail, 100 - tail])
    return f"nearly blank: {NEARLY_BLANK:.0%} of its pixels are {low:g}" if low == high else None


_WARNED_SIZES: set[str] = set()
"""The size warnings given in this process (a nearly blank scan is always named)."""
