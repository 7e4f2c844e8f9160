"""ViT and Swin from MONAI, applied per frame and averaged over T (the Table 4 ablation backbones).

Both are MONAI's 2-D networks (``spatial_dims=2``; torchvision-free, einops is the only extra): every
frame of every clip is embedded independently, then the frame features are averaged over T, the same
consensus the TSM encoder uses (Section 2.2, Section 3.2).

Frame-size requirements (checked; a ValueError, which :func:`learner.models.registry.build_encoder` turns
into a ConfigError naming ``data.size``):

* ViT: frames must be exactly ``img_size`` (the position embedding is learned for its token grid) and
  ``img_size`` must be divisible by the patch size.
* Swin: frames must be divisible by ``patch · 2^3`` (16 for every preset), so the patch embedding and the
  three patch merges between the four stages never zero-pad. Windows need not divide the grid (Swin pads
  them and masks the padding), and a grid smaller than the window shrinks the window to the grid.
  MONAI's ``SwinTransformer`` also merges after the last stage; Swin-T does not, so that merge is
  removed: D = 8 · embed_dim (768 for ``paper``, as Swin-T).

Every parameter takes part in the forward pass (DDP needs no ``find_unused_parameters``): the
cross-attention norm MONAI builds, unused, in every ViT block is replaced by an identity.

MONAI is imported in the constructors, so importing the encoder registry stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from learner.models.encoder import FrameEncoder


@dataclass(frozen=True)
class ViTPreset:
    """ViT hyper-parameters; the MLP width is 4 · hidden_size as in ViT."""

    hidden_size: int
    num_layers: int
    num_heads: int
    patch_size: int


@dataclass(frozen=True)
class SwinPreset:
    """Swin hyper-parameters (four stages, as MONAI builds them)."""

    embed_dim: int
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    window_size: int
    patch_size: int


VIT_PRESETS: dict[str, ViTPreset] = {
    "tiny": ViTPreset(hidden_size=48, num_layers=2, num_heads=4, patch_size=8),
    "small": ViTPreset(hidden_size=192, num_layers=6, num_heads=3, patch_size=16),
    "paper": ViTPreset(hidden_size=768, num_layers=12, num_heads=12, patch_size=16),  # ViT-B/16
}

# Patch 2 at 112 px gives the 56 × 56 first-stage grid Swin-T gets from 224 px with patch 4.
SWIN_PRESETS: dict[str, SwinPreset] = {
    "tiny": SwinPreset(
        embed_dim=12, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=4, patch_size=2
    ),
    "small": SwinPreset(
        embed_dim=48, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), window_size=7, patch_size=2
    ),
    "paper": SwinPreset(  # Swin-T
        embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, patch_size=2
    ),
}


def build_vit(
    preset: ViTPreset, in_channels: int, grid: int | tuple[int, int, int], patch: int | tuple[int, int, int]
) -> nn.Module:
    """A MONAI ViT of ``preset`` without a classification head, on frames (``grid`` = H = W, 2-D) or on
    volumes (``grid`` = (D, H, W), 3-D), cut into patches of ``patch``."""
    from monai.networks.nets.vit import ViT

    vit = ViT(
        in_channels=in_channels,
        img_size=grid,
        patch_size=patch,
        hidden_size=preset.hidden_size,
        mlp_dim=4 * preset.hidden_size,
        num_layers=preset.num_layers,
        num_heads=preset.num_heads,
        classification=False,
        spatial_dims=2 if isinstance(grid, int) else 3,
        qkv_bias=True,
    )
    for block in vit.blocks:
        # MONAI builds this norm even without cross-attention; unused, it would get no gradient and
        # break DDP's every-parameter-is-used check.
        block.norm_cross_attn = nn.Identity()
    return vit


class ViTEncoder(FrameEncoder):
    """MONAI ViT per frame, mean of the final (layer-normed) patch tokens: clips (N, T, C, H, W) → (N, D).

    Args:
        in_channels: C, 1 or 3.
        size: a key of :data:`VIT_PRESETS`; D = its ``hidden_size``.
        img_size: H = W of the frames; divisible by the preset's patch size.

    Raises:
        ValueError: ``img_size`` is not divisible by the patch size.
    """

    def __init__(self, *, in_channels: int, size: str = "paper", img_size: int = 112) -> None:
        super().__init__()
        preset = VIT_PRESETS[size]
        if img_size % preset.patch_size:
            raise ValueError(
                f"vit size {size!r} needs frames divisible by its patch size {preset.patch_size}; "
                f"got img_size={img_size}"
            )
        self.in_channels = in_channels
        self.embed_dim = preset.hidden_size
        self.img_size = img_size
        self.vit = build_vit(preset, in_channels, img_size, preset.patch_size)

    def embed_frames(self, frames: Tensor, num_frames: int) -> Tensor:
        """Frames (N·T, C, H, W) → (N·T, D); frames are independent, ``num_frames`` is unused."""
        h, w = frames.shape[-2:]
        if (h, w) != (self.img_size, self.img_size):
            raise ValueError(
                f"vit was built for {self.img_size}×{self.img_size} frames but got {h}×{w}; "
                "build it with img_size = the frame size"
            )
        tokens: Tensor
        tokens, _ = self.vit(frames)  # (N·T, tokens, D)
        return tokens.mean(dim=1)


class SwinEncoder(FrameEncoder):
    """MONAI Swin Transformer per frame, last stage global-average-pooled: clips (N, T, C, H, W) → (N, D).

    Args:
        in_channels: C, 1 or 3.
        size: a key of :data:`SWIN_PRESETS`; D = 8 · its ``embed_dim``.
        img_size: H = W of the frames; divisible by ``patch_size · 8``.

    Raises:
        ValueError: ``img_size`` is not divisible by ``patch_size · 8``.
    """

    def __init__(self, *, in_channels: int, size: str = "paper", img_size: int = 112) -> None:
        from monai.networks.nets.swin_unetr import SwinTransformer

        super().__init__()
        preset = SWIN_PRESETS[size]
        self.size = size
        self.multiple = preset.patch_size * 2 ** (len(preset.depths) - 1)
        self._check_size(img_size, img_size)
        self.in_channels = in_channels
        self.embed_dim = preset.embed_dim * 2 ** (len(preset.depths) - 1)
        self.swin = SwinTransformer(
            in_chans=in_channels,
            embed_dim=preset.embed_dim,
            window_size=(preset.window_size, preset.window_size),
            patch_size=(preset.patch_size, preset.patch_size),
            depths=preset.depths,
            num_heads=preset.num_heads,
            spatial_dims=2,
        )
        # Swin-T has no merge after its last stage (torch types Module.__setattr__ without None)
        self.swin.layers4[0].downsample = None  # type: ignore[assignment]

    def _check_size(self, h: int, w: int) -> None:
        if h % self.multiple or w % self.multiple:
            raise ValueError(
                f"swin size {self.size!r} needs frame height and width divisible by "
                f"patch·2^3 = {self.multiple}; got {h}×{w}"
            )

    def embed_frames(self, frames: Tensor, num_frames: int) -> Tensor:
        """Frames (N·T, C, H, W) → (N·T, D); frames are independent, ``num_frames`` is unused."""
        self._check_size(*frames.shape[-2:])
        last: Tensor = self.swin(frames, normalize=True)[-1]  # (N·T, D, H / (patch·8), W / (patch·8))
        return last.mean(dim=(2, 3))
