"""Deterministic preprocessing: a decoded :class:`~learner.data.readers.Scan` → the compact uint8 array
the cache stores and every epoch reads (the deterministic part of the pipeline, before any randomness).

Steps, in order:

1. **Frame budget** — at most ``max_cached_frames`` frames, evenly spaced over the clip. For volumes the
   slices are first restricted to the foreground (non-zero) extent, so "evenly spaced" covers the anatomy,
   not the empty slabs around it (the TSN eval rule of Section 2.2 then spreads T slices over it).
2. **Grey** — colour is converted to luminance (ITU-R BT.601) when ``channels == 1``.
3. **Crop** (:data:`CROPS`) — ``none``; ``foreground``: bounding box of pixels brighter than a
   threshold; ``fan``: bounding box of pixels that *vary over time* and are bright enough — the
   ultrasound fan, without the static burned-in text, logos and borders around it. A single frame or a
   static clip falls back to ``foreground``. Volumes use the non-zero bounding box for both.
4. **Square and resize** — the crop is zero-padded to a centred square (no distortion of the anatomy), then
   resized to ``size × size`` with bilinear, antialiased ``torch.nn.functional.interpolate``.
5. **Intensity** — float data (volumes, deep images) are scaled so the 1st–99th percentiles of the
   non-zero voxels map to 0–255; 8-bit videos keep their values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from learner.data.readers import NiftiAxis, Scan

PREPROCESS_VERSION = 1  # bump when the output of an unchanged parameter set changes
BT601 = np.array([0.299, 0.587, 0.114], dtype=np.float32)
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
    """

    size: int = 112
    channels: Literal[1, 3] = 1
    crop: str = "fan"
    max_cached_frames: int = 64
    nifti_axis: NiftiAxis = "axial"
    intensity_threshold: float = 12.0
    motion_threshold: float = 3.0

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
        """Stable 16-hex-digit hash of every parameter plus :data:`PREPROCESS_VERSION`."""
        text = json.dumps({**asdict(self), "version": PREPROCESS_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __call__(self, scan: Scan) -> np.ndarray:
        """Preprocess ``scan.frames`` ((T, H, W) or (T, H, W, 3)) into the cached uint8 array."""
        frames = scan.frames
        volume = frames.dtype != np.uint8
        if volume and self.crop != "none":
            frames = frames[_nonzero_extent(frames)]
        frames = frames[even_indices(len(frames), self.max_cached_frames)]
        if frames.ndim == 4 and self.channels == 1:
            frames = luminance(frames)
        grey = frames if frames.ndim == 3 else luminance(frames)
        y0, y1, x0, x1 = CROPS[self.crop](self, grey, volume)
        frames = pad_to_square(frames[:, y0:y1, x0:x1])
        resized = resize(frames, self.size)
        if volume:
            low, high = _percentiles(frames)
            resized = (resized - low) * (255.0 / max(high - low, np.finfo(np.float32).tiny))
        return np.clip(np.rint(resized), 0, 255).astype(np.uint8)

    # ------------------------------------------------------------------------------------------ crops
    def no_crop(self, grey: np.ndarray, volume: bool) -> Box:
        """The whole frame."""
        return (0, grey.shape[1], 0, grey.shape[2])

    def foreground_box(self, grey: np.ndarray, volume: bool) -> Box:
        """Bounding box of the non-zero (volume) or brighter-than-threshold (video) pixels of any frame."""
        peak = grey.max(axis=0)
        mask = peak != 0 if volume else peak > self.intensity_threshold
        return _mask_box(mask) or self.no_crop(grey, volume)

    def fan_box(self, grey: np.ndarray, volume: bool) -> Box:
        """Bounding box of the pixels that move over time and are bright somewhere in the clip.

        Burned-in text, calibration bars and borders are static, so their temporal standard deviation is
        ~0 (only codec noise) and they drop out. Falls back to :meth:`foreground_box` for volumes, single
        frames and clips with no motion.
        """
        if volume or len(grey) < 2:
            return self.foreground_box(grey, volume)
        moving = grey.std(axis=0, dtype=np.float32) > self.motion_threshold
        bright = grey.max(axis=0) > self.intensity_threshold
        return _mask_box(moving & bright) or self.foreground_box(grey, volume)


#: Crop name → method returning the (y0, y1, x0, x1) box from grey frames (T, H, W).
CROPS: dict[str, Callable[[Preprocessor, np.ndarray, bool], Box]] = {
    "none": Preprocessor.no_crop,
    "foreground": Preprocessor.foreground_box,
    "fan": Preprocessor.fan_box,
}


def even_indices(n: int, budget: int) -> np.ndarray:
    """``min(n, budget)`` indices evenly spaced over ``range(n)``, first and last included (int64)."""
    if n <= budget:
        return np.arange(n)
    return np.rint(np.linspace(0, n - 1, budget)).astype(np.int64)


def luminance(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) RGB → (T, H, W) BT.601 luma, same dtype family (uint8 stays uint8)."""
    luma = frames.astype(np.float32) @ BT601
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8) if frames.dtype == np.uint8 else luma


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


def _nonzero_extent(frames: np.ndarray) -> slice:
    """The slice range (along T) of a volume that holds any non-zero voxel (all slices if none does)."""
    occupied = np.flatnonzero(frames.reshape(len(frames), -1).any(axis=1))
    return slice(int(occupied[0]), int(occupied[-1]) + 1) if occupied.size else slice(None)


def _percentiles(frames: np.ndarray) -> tuple[float, float]:
    """1st and 99th percentile of the non-zero values (all values when every value is zero)."""
    values = frames[frames != 0]
    values = values if values.size else frames.ravel()
    low, high = np.percentile(values, [1.0, 99.0])
    return float(low), float(high)
