"""The encoder contract θ_V (Section 2.2): clips (N, T, C, H, W) → embeddings (N, D).

Every backbone in :data:`learner.models.registry.ENCODERS` subclasses :class:`Encoder`, through one of its
two kinds: a :class:`FrameEncoder` embeds every frame (or slice) and averages over T (the TSN/TSM
consensus); a :class:`VolumeEncoder` reads the T frames as the depth of one volume (N, C, T, H, W). The
model modules import only this module, so the registry can import them without a cycle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SIZES: tuple[str, ...] = ("tiny", "small", "paper")
"""Size presets every encoder provides: ``tiny`` for CPU tests, ``small``, and the paper-like ``paper``."""

IN_CHANNELS: tuple[int, ...] = (1, 3)
"""Channel counts C every encoder accepts: 1 (grey ultrasound, MRI slices) or 3 (RGB)."""


class L2Normalise(nn.Module):
    """Embeddings (N, D) → the same directions at unit Euclidean length (``model.embed_norm=l2``)."""

    def forward(self, embeddings: Tensor) -> Tensor:
        """(N, D) → (N, D), each row divided by its L2 norm (floored at 1e-12)."""
        return F.normalize(embeddings, dim=-1)


EMBEDDING_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda dim: nn.Identity(),  # the paper's u: the temporal average as it is
    "l2": lambda dim: L2Normalise(),  # every u on the unit sphere, where the cosine terms measure it
    "layer": nn.LayerNorm,  # zero mean, unit variance over D, with a learned per-dimension scale and shift
}
"""``model.embed_norm`` → the module applied to the embedding u (N, D), built from D."""


class Encoder(nn.Module, ABC):
    """Base of every encoder: clips (N, T, C, H, W) → pooled features (N, D) (:meth:`pooled_features`),
    then :attr:`embedding_norm` (``model.embed_norm``; the identity by default).

    Subclasses set ``embed_dim`` (D) and ``in_channels`` (C); :class:`FrameEncoder` and
    :class:`VolumeEncoder` implement :meth:`pooled_features`. The embedding norm sits here, inside θ_V, so
    that pretraining (the contrastive term and θ_M), ``learner embed`` and the classifier all see the same u.
    """

    embed_dim: int
    in_channels: int
    channels_last: torch.memory_format = torch.channels_last
    """The channels-last format of its convolution weights (``runtime.channels_last``): NHWC for 2-D
    kernels, NDHWC (``torch.channels_last_3d``) for a volume's 3-D ones, which NHWC refuses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # nn.Module's signature: subclasses add keywords
        super().__init__(*args, **kwargs)
        self.embedding_norm: nn.Module = nn.Identity()

    def set_embedding_norm(self, name: str) -> None:
        """Apply :data:`EMBEDDING_NORMS` ``[name]`` to every embedding from now on (``LayerNorm`` adds the
        state-dict keys ``embedding_norm.weight`` and ``embedding_norm.bias``).

        Raises:
            ValueError: unknown ``name`` (the message lists the available ones).
        """
        if name not in EMBEDDING_NORMS:
            raise ValueError(f"unknown embedding norm {name!r}; available: {', '.join(EMBEDDING_NORMS)}")
        self.embedding_norm = EMBEDDING_NORMS[name](self.embed_dim)

    def forward(self, clips: Tensor) -> Tensor:
        """Embed clips (N, T, C, H, W) → (N, D)."""
        embeddings: Tensor = self.embedding_norm(self.pooled_features(clips))
        return embeddings

    @abstractmethod
    def pooled_features(self, clips: Tensor) -> Tensor:
        """Clips (N, T, C, H, W) → features (N, D) before the embedding norm."""

    def check_clips(self, clips: Tensor) -> None:
        """Raise ValueError unless ``clips`` is (N, T, C, H, W) with C = ``in_channels``."""
        if clips.ndim != 5:
            raise ValueError(f"clips must have shape (N, T, C, H, W), got {tuple(clips.shape)}")
        if clips.shape[2] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.in_channels} input channel(s) "
                f"but the clips have {clips.shape[2]}"
            )


class FrameEncoder(Encoder):
    """An encoder of frames: the frame features averaged over T (the TSN/TSM consensus, Section 2.2).

    Subclasses implement :meth:`embed_frames`, which sees the frames of all clips flattened to
    (N·T, C, H, W) with each clip's T frames contiguous (clip-major, as TSM expects).
    """

    def pooled_features(self, clips: Tensor) -> Tensor:
        """Clips (N, T, C, H, W) → the mean frame feature (N, D)."""
        return self.frame_features(clips).mean(dim=1)

    def frame_features(self, clips: Tensor) -> Tensor:
        """Per-frame features before the consensus: clips (N, T, C, H, W) → (N, T, D).

        Raises:
            ValueError: ``clips`` is not 5-D or its C is not the encoder's ``in_channels``.
        """
        self.check_clips(clips)
        n, t, c, h, w = clips.shape
        frames = clips.reshape(n * t, c, h, w)  # (N·T, C, H, W); reshape, not view: input may be strided
        return self.embed_frames(frames, t).reshape(n, t, -1)

    @abstractmethod
    def embed_frames(self, frames: Tensor, num_frames: int) -> Tensor:
        """Frames (N·T, C, H, W), each clip's ``num_frames`` frames contiguous → features (N·T, D)."""


class VolumeEncoder(Encoder):
    """An encoder of volumes: a clip's T frames (slices) are the depth axis of one 3-D input.

    Subclasses implement :meth:`embed_volumes`; for the slices to be a volume on a fixed grid, use
    ``data.sampling=resample`` (:mod:`learner.data.sampling`).
    """

    channels_last = torch.channels_last_3d

    def pooled_features(self, clips: Tensor) -> Tensor:
        """Clips (N, T, C, H, W) as volumes (N, C, T, H, W) → (N, D).

        Raises:
            ValueError: ``clips`` is not 5-D or its C is not the encoder's ``in_channels``.
        """
        self.check_clips(clips)
        return self.embed_volumes(clips.transpose(1, 2))  # (N, C, T, H, W): depth = T

    @abstractmethod
    def embed_volumes(self, volumes: Tensor) -> Tensor:
        """Volumes (N, C, D, H, W) → features (N, D_embed)."""
