"""The encoder contract θ_V (Section 2.2): clips (N, T, C, H, W) → embeddings (N, D).

Every backbone in :data:`learner.models.registry.ENCODERS` subclasses :class:`Encoder`; the model modules
import only this module, so the registry can import them without a cycle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

SIZES: tuple[str, ...] = ("tiny", "small", "paper")
"""Size presets every encoder provides: ``tiny`` for CPU tests, ``small``, and the paper-like ``paper``."""

IN_CHANNELS: tuple[int, ...] = (1, 3)
"""Channel counts C every encoder accepts: 1 (grey ultrasound, MRI slices) or 3 (RGB)."""


class Encoder(nn.Module, ABC):
    """Base of every encoder: clips (N, T, C, H, W) → embeddings (N, D), the frame features averaged over T.

    Subclasses set ``embed_dim`` (D) and ``in_channels`` (C) and implement :meth:`embed_frames`, which
    sees the frames of all clips flattened to (N·T, C, H, W) with each clip's T frames contiguous
    (clip-major, as TSM expects). The temporal average is the TSN/TSM consensus (Section 2.2).
    """

    embed_dim: int
    in_channels: int

    def forward(self, clips: Tensor) -> Tensor:
        """Embed clips (N, T, C, H, W) → (N, D)."""
        return self.frame_features(clips).mean(dim=1)

    def frame_features(self, clips: Tensor) -> Tensor:
        """Per-frame features before the consensus: clips (N, T, C, H, W) → (N, T, D).

        Raises:
            ValueError: ``clips`` is not 5-D or its C is not the encoder's ``in_channels``.
        """
        if clips.ndim != 5:
            raise ValueError(f"clips must have shape (N, T, C, H, W), got {tuple(clips.shape)}")
        n, t, c, h, w = clips.shape
        if c != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.in_channels} input channel(s) "
                f"but the clips have {c}"
            )
        frames = clips.reshape(n * t, c, h, w)  # (N·T, C, H, W); reshape, not view: input may be strided
        return self.embed_frames(frames, t).reshape(n, t, -1)

    @abstractmethod
    def embed_frames(self, frames: Tensor, num_frames: int) -> Tensor:
        """Frames (N·T, C, H, W), each clip's ``num_frames`` frames contiguous → features (N·T, D)."""
