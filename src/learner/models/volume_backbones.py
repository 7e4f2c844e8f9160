"""3-D encoders from MONAI: a clip's T slices are the depth of one volume (N, C, T, H, W).

* ``resnet18_3d`` — MONAI's 3-D ResNet-18 (``monai.networks.nets.resnet18``, ``spatial_dims=3``; Hara et
  al. 2018, the Med3D layout) as a feature extractor: no classification layer, the last stage
  global-average-pooled. Base width 16 | 32 | 64 for ``tiny`` | ``small`` | ``paper`` (the TSM presets),
  D = 8 · width. Any depth and frame size work (strides pad).
* ``vit_3d`` — MONAI's ViT with ``spatial_dims=3`` on (T, H, W) patches of (2, p, p), p the 2-D preset's
  patch (:data:`~learner.models.monai_backbones.VIT_PRESETS`); the mean of the final patch tokens. The
  position embedding is learned for one token grid, so the encoder is built for one (T, H, W): T
  (``data.frames``) divisible by 2 and H = W (``data.size``) by p.

Volumes on a fixed grid come from ``data.sampling=resample`` (:mod:`learner.data.sampling`). MONAI is
imported in the constructors, so importing the encoder registry stays cheap.
"""

from __future__ import annotations

from torch import Tensor

from learner.models.encoder import VolumeEncoder
from learner.models.monai_backbones import VIT_PRESETS, build_vit
from learner.models.tsm_resnet import WIDTHS

DEPTH_PATCH = 2
"""Slices per ViT patch along depth: 8 slices give 4 token layers."""

MONAI_RESNET_WIDTH = 64
"""The base width of MONAI's ResNet (``get_inplanes()[0]``); a preset's width is a ``widen_factor`` of it."""


class ResNet18VolumeEncoder(VolumeEncoder):
    """MONAI 3-D ResNet-18, global-average-pooled: clips (N, T, C, H, W) → (N, D), D = 8 · width.

    Args:
        in_channels: C, 1 or 3.
        size: ``tiny`` | ``small`` | ``paper`` (base width 16 | 32 | 64, as :class:`TSMResNet18`).
    """

    def __init__(self, *, in_channels: int, size: str = "paper") -> None:
        from monai.networks.nets.resnet import resnet18

        super().__init__()
        width = WIDTHS[size]
        self.in_channels = in_channels
        self.embed_dim = 8 * width
        self.resnet = resnet18(
            spatial_dims=3,
            n_input_channels=in_channels,
            widen_factor=width / MONAI_RESNET_WIDTH,
            feed_forward=False,  # no classification layer: the pooled features are the embedding
        )

    def embed_volumes(self, volumes: Tensor) -> Tensor:
        """Volumes (N, C, D, H, W) → (N, 8 · width)."""
        features: Tensor = self.resnet(volumes)
        return features


class ViTVolumeEncoder(VolumeEncoder):
    """MONAI ViT on volumes, mean of the final (layer-normed) patch tokens: clips (N, T, C, H, W) → (N, D).

    Args:
        in_channels: C, 1 or 3.
        size: a key of :data:`~learner.models.monai_backbones.VIT_PRESETS`; D = its ``hidden_size``.
        img_size: H = W of the slices; divisible by the preset's patch size.
        num_frames: T, the depth; divisible by :data:`DEPTH_PATCH`.

    Raises:
        ValueError: ``img_size`` or ``num_frames`` is not divisible by its patch size.
    """

    def __init__(
        self, *, in_channels: int, size: str = "paper", img_size: int = 112, num_frames: int = 8
    ) -> None:
        super().__init__()
        preset = VIT_PRESETS[size]
        if img_size % preset.patch_size or num_frames % DEPTH_PATCH:
            raise ValueError(
                f"vit_3d size {size!r} needs slices divisible by its patch size {preset.patch_size} and a "
                f"depth divisible by {DEPTH_PATCH}; got img_size={img_size}, num_frames={num_frames}"
            )
        self.in_channels = in_channels
        self.embed_dim = preset.hidden_size
        self.grid = (num_frames, img_size, img_size)
        self.vit = build_vit(
            preset, in_channels, self.grid, (DEPTH_PATCH, preset.patch_size, preset.patch_size)
        )

    def embed_volumes(self, volumes: Tensor) -> Tensor:
        """Volumes (N, C, D, H, W) → (N, hidden_size).

        Raises:
            ValueError: (D, H, W) is not the grid the encoder was built for.
        """
        grid = tuple(volumes.shape[2:])
        if grid != self.grid:
            raise ValueError(
                f"vit_3d was built for volumes of {self.grid} (frames, size, size) but got {grid}; "
                "build it with num_frames = data.frames and img_size = data.size"
            )
        tokens: Tensor
        tokens, _ = self.vit(volumes)  # (N, tokens, hidden_size)
        return tokens.mean(dim=1)
