"""TSN segment sampling (Wang et al. 2016, as used by TSM, Section 2.2): which T frames form a clip.

The scan's ``n`` frames are split into T contiguous segments ``[⌊k·n/T⌋, ⌊(k+1)·n/T⌋)``; a clip takes one
frame per segment — a uniformly random one when training, the centre one when evaluating (deterministic).
With ``n < T`` some segments are empty and take the frame at their start, so frames repeat in order.

Volumes use the same rule: the cache holds only the foreground slice extent
(:mod:`learner.data.preprocess`), so the eval rule spreads T slices evenly over the anatomy.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


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
