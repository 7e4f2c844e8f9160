"""Hand features of a clip: what simple, unlearned measurements of the pixels say about a scan's change.

The ceiling study (:mod:`learner.experiments.ceiling`) sets these against learned embeddings on Fig. 1's
test pairs: if a row mean already follows the latent severity better than an encoder, the encoder has not
learned what the pixels offer for free. Each feature maps the same preprocessed eval clips the encoders see,
``(M, T, C, H, W)`` in [0, 1]-ish intensity, to ``(M, D)``; the channels are averaged first (a grey clip
repeated for RGB weights gives the same features as the grey clip).

==========================  ============================================================================
``mean_frame``              the frames averaged over time, flattened: ``(M, H·W)``
``depth_profile``           the mean brightness of each row (depth below the probe): ``(M, H)``
``lower_half_brightness``   the mean brightness of rows ``H // 2`` to ``H − 1``, the deeper half: ``(M, 1)``
``column_variance``         per frame, the variance over columns of the column means, averaged over time:
                            ``(M, 1)``; vertical bright lines (LUS B-lines) make columns unequal
==========================  ============================================================================

Example::

    features = {name: feature(clips) for name, feature in HAND_FEATURES.items()}
    features["depth_profile"].shape  # (M, H)
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _grey(clips: torch.Tensor) -> torch.Tensor:
    """(M, T, C, H, W) → (M, T, H, W) float32, the channels averaged."""
    if clips.ndim != 5:
        raise ValueError(f"expected clips (M, T, C, H, W), got shape {tuple(clips.shape)}")
    return clips.float().mean(dim=2)


def mean_frame(clips: torch.Tensor) -> torch.Tensor:
    """(M, T, C, H, W) → (M, H·W): the clip's frames (and channels) averaged, flattened row by row."""
    return _grey(clips).mean(dim=1).flatten(1)


def depth_profile(clips: torch.Tensor) -> torch.Tensor:
    """(M, T, C, H, W) → (M, H): the mean of each row over columns and frames (brightness by depth)."""
    return _grey(clips).mean(dim=(1, 3))


def lower_half_brightness(clips: torch.Tensor) -> torch.Tensor:
    """(M, T, C, H, W) → (M, 1): the mean of rows ``H // 2`` … ``H − 1`` over columns and frames (for an
    odd H the middle row counts as lower)."""
    grey = _grey(clips)
    return grey[:, :, grey.shape[2] // 2 :, :].mean(dim=(1, 2, 3)).unsqueeze(1)


def column_variance(clips: torch.Tensor) -> torch.Tensor:
    """(M, T, C, H, W) → (M, 1): per frame the population variance over the W column means (mean over rows),
    averaged over the T frames. Per frame, not of the mean frame, so that a line that moves between frames
    still counts."""
    column_means = _grey(clips).mean(dim=2)  # (M, T, W)
    return column_means.var(dim=2, unbiased=False).mean(dim=1).unsqueeze(1)


HAND_FEATURES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean_frame": mean_frame,
    "depth_profile": depth_profile,
    "lower_half_brightness": lower_half_brightness,
    "column_variance": column_variance,
}
"""Feature name → clips (M, T, C, H, W) → features (M, D), in the order the ceiling table lists them."""
