"""Which T frames form a clip: TSN segment sampling (Wang et al. 2016, as used by TSM, Section 2.2), or
the whole scan resampled to T slices (``data.sampling``, :data:`SAMPLINGS`).

The scan's ``n`` frames are split into T contiguous segments ``[⌊k·n/T⌋, ⌊(k+1)·n/T⌋)``; a clip takes one
frame per segment — a uniformly random one when training, the centre one when evaluating (deterministic).
With ``n < T`` some segments are empty and take the frame at their start, so frames repeat in order.
The segments have one definition, :func:`segment_bounds`: :func:`segment_indices` picks one clip's frames on
the host (NumPy generator, the loader path), :func:`segment_picks` a batch's on their device (torch
generator, ``data.device_data``).

Volumes use the same rule: the cache holds only the foreground slice extent
(:mod:`learner.data.preprocess`), so the eval rule spreads T slices evenly over the anatomy.

With ``data.sampling=resample`` the cached array (T', size, size) is first resampled as a whole to the fixed
grid (T, size, size) by trilinear interpolation (:func:`resample_volume`, ``torch.nn.functional.interpolate``,
half-voxel-centred, no antialiasing), the input a 3-D encoder expects; segment sampling of T frames from T
then takes every slice, in train and eval alike (no random jitter; K eval clips are identical).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

SAMPLINGS: tuple[str, ...] = ("segments", "resample")
"""``data.sampling``: TSN segments of the cached frames, or the cached scan resampled to T slices."""


Ints = TypeVar("Ints", npt.NDArray[np.int64], torch.Tensor)
"""Frame counts and indices: a NumPy array (one clip on the host) or a tensor (a batch, on its device)."""


def segment_bounds(n_frames: Ints, num_segments: int) -> tuple[Ints, Ints]:
    """``(starts, lengths)`` of the T segments of scans of ``n_frames`` frames: the one definition of the
    TSN segments, used by :func:`segment_indices` (a scan at a time, NumPy, on the host) and
    :func:`segment_picks` (a batch of scans, torch, on their device).

    Args:
        n_frames: frames of each scan, shape ``(...)`` int64 (each >= 1), a NumPy array or a tensor.
        num_segments: T, frames per clip (T >= 1).

    Returns:
        starts and lengths, each ``(..., T)`` int64 of ``n_frames``' kind (and device); an empty segment
        (n < T) has length 1 at its start.
    """
    k: Ints
    if isinstance(n_frames, torch.Tensor):
        k, n = torch.arange(num_segments, device=n_frames.device), n_frames.to(torch.int64).unsqueeze(-1)
    else:
        k, n = np.arange(num_segments, dtype=np.int64), n_frames.astype(np.int64)[..., None]
    starts = k * n // num_segments  # (..., T)
    lengths = ((k + 1) * n // num_segments - starts).clip(min=1)  # an empty segment keeps its start
    return starts, lengths


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
    starts, lengths = segment_bounds(np.asarray(n_frames, dtype=np.int64), num_segments)
    if not train:
        return starts + lengths // 2
    if generator is None:
        raise ValueError("segment_indices(train=True) needs a numpy Generator")
    return starts + generator.integers(0, lengths)


def segment_picks(
    n_frames: torch.Tensor, num_segments: int, *, train: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Frame indices of a batch of clips, ``(B, T)`` int64, on ``n_frames``' device, with no host sync:
    the segments of :func:`segment_bounds`, a uniformly random frame in each when training (drawn from
    ``generator``, a ``torch.Generator`` on that device), the centre frame otherwise (then equal to
    :func:`segment_indices`, row by row).

    Args:
        n_frames: frames of each scan, shape ``(B,)`` int64 (each >= 1; not checked here, which would
            wait for the device).
        num_segments: T, frames per clip.
        train: random frame per segment (needs ``generator``) or the centre frame.
        generator: the source of randomness for ``train``.
    """
    starts, lengths = segment_bounds(n_frames, num_segments)  # (B, T) each
    if not train:
        return starts + lengths // 2
    if generator is None:
        raise ValueError("segment_picks(train=True) needs a torch.Generator")
    u = torch.rand(starts.shape, generator=generator, dtype=torch.float64, device=starts.device)
    offset = (u * lengths).to(torch.int64)  # floor of U[0, 1) · length: uniform over the segment
    return starts + torch.minimum(offset, lengths - 1)  # u · length may round up to length


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
