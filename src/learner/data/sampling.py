"""Which T frames form a clip: TSN segment sampling (Wang et al. 2016, as used by TSM, Section 2.2), or
the whole scan resampled to T slices (``data.sampling``, :data:`SAMPLINGS`).

The scan's ``n`` frames are split into T contiguous segments ``[⌊k·n/T⌋, ⌊(k+1)·n/T⌋)``; a clip takes one
frame per segment — a uniformly random one when training, the centre one when evaluating (deterministic).
With ``n < T`` some segments are empty and take the frame at their start, so frames repeat in order.

Volumes use the same rule: the cache holds only the foreground slice extent
(:mod:`learner.data.preprocess`), so the eval rule spreads T slices evenly over the anatomy.

With ``data.sampling=resample`` the cached array (T', size, size) is first resampled as a whole to the fixed
grid (T, size, size) by trilinear interpolation (:func:`resample_volume`, ``torch.nn.functional.interpolate``,
half-voxel-centred, no antialiasing), the input a 3-D encoder expects; segment sampling of T frames from T
then takes every slice, in train and eval alike (no random jitter; K eval clips are identical).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

SAMPLINGS: tuple[str, ...] = ("segments", "resample")
"""``data.sampling``: TSN segments of the cached frames, or the cached scan resampled to T slices."""


def segment_indices(
    n_frames: int, num_segments: int, *, train: bool, generator: np.random.Generator | None = None
) -> np.ndarray:
    """Frame indices of one clip, shape ``(num_segments,)`` int64, non-decreasing.

    Args:
        n_frames: frames available (n >= 1).
        num_segments: T, frames per clip (T >= 1).
        train: random frame per segment (needs ``generator``) or the centre frame (eval).
        generator: the source of randomness for ``train``; ignored in eval.

    Example::

        segment_indices(10, 3, train=False)  # segments [0,3) [3,6) [6,10) → array([1, 4, 8])
    """
    if n_frames < 1 or num_segments < 1:
        raise ValueError(f"n_frames and num_segments should be >= 1, got {n_frames} and {num_segments}")
    k = np.arange(num_segments, dtype=np.int64)
    starts = k * n_frames // num_segments
    lengths: npt.NDArray[np.int64]
    lengths = np.maximum((k + 1) * n_frames // num_segments - starts, 1)  # an empty segment keeps its start
    if not train:
        return starts + lengths // 2
    if generator is None:
        raise ValueError("segment_indices(train=True) needs a numpy Generator")
    return starts + generator.integers(0, lengths)


def resample_volume(volume: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
    """A scan (T', H, W) or (T', H, W, 3) → float32 (D, H2, W2) or (D, H2, W2, 3) on the grid (D, H2, W2).

    Trilinear interpolation with voxel centres aligned (``align_corners=False``: output voxel k samples
    input position (k + ½)·T'/D − ½, clamped to the edge voxels), each colour channel separately. Values
    keep their scale (uint8 input → floats in [0, 255]).
    """
    if volume.ndim not in (3, 4) or min(grid) < 1:
        raise ValueError(
            f"volume must be (T, H, W) or (T, H, W, 3) and grid >= 1, got {volume.shape}, {grid}"
        )
    tensor = torch.from_numpy(np.asarray(volume, dtype=np.float32))
    tensor = tensor.permute(3, 0, 1, 2) if volume.ndim == 4 else tensor.unsqueeze(0)  # (C, T', H, W)
    resized = F.interpolate(tensor.unsqueeze(0), size=grid, mode="trilinear", align_corners=False)[0]
    out = resized.permute(1, 2, 3, 0) if volume.ndim == 4 else resized[0]
    return out.contiguous().numpy()


def sampling_source(cached: np.ndarray, frames: int, sampling: str) -> np.ndarray:
    """The array a clip's T frames are drawn from: ``cached`` itself (``segments``), or ``cached``
    (T', H, W[, 3]) resampled to (T, H, W[, 3]) (``resample``).

    Raises:
        ValueError: ``sampling`` is not one of :data:`SAMPLINGS`.
    """
    if sampling == "segments":
        return cached
    if sampling == "resample":
        return resample_volume(cached, (frames, *cached.shape[1:3]))
    raise ValueError(f"unknown sampling {sampling!r}; available: {', '.join(SAMPLINGS)}")
