"""ViT and Swin wrappers: per-frame embedding with temporal averaging, and the frame-size rules."""

from __future__ import annotations

import pytest
import torch

from learner.config import ModelConfig
from learner.errors import ConfigError
from learner.models.monai_backbones import SWIN_PRESETS, VIT_PRESETS, SwinEncoder, ViTEncoder
from learner.models.registry import build_encoder, create_encoder


@pytest.mark.parametrize("name", ["vit", "swin"])
def test_frames_are_embedded_independently_then_averaged(name: str) -> None:
    encoder = create_encoder(name, in_channels=1, size="tiny", img_size=32).eval()
    clips = torch.rand(2, 3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled = encoder(clips)
        singles = torch.stack([encoder(clips[:, t : t + 1]) for t in range(3)], dim=1)  # (N, T, D)
        reversed_order = encoder(clips.flip(1))
    torch.testing.assert_close(pooled, singles.mean(dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reversed_order, pooled, rtol=1e-5, atol=1e-6)


def test_embedding_widths_follow_the_presets() -> None:
    vit = ViTEncoder(in_channels=3, size="tiny", img_size=32)
    swin = SwinEncoder(in_channels=3, size="tiny", img_size=32)
    assert vit.embed_dim == VIT_PRESETS["tiny"].hidden_size == 48
    assert swin.embed_dim == 8 * SWIN_PRESETS["tiny"].embed_dim == 96  # no merge after the last stage
    with torch.no_grad():
        assert swin(torch.rand(1, 2, 3, 32, 32)).shape == (1, 96)


def test_swin_accepts_grids_that_windows_do_not_divide() -> None:
    # 48 px, patch 2: stage grids 24, 12, 6, 3 with window 4, so every stage pads its windows.
    encoder = SwinEncoder(in_channels=1, size="tiny", img_size=48).eval()
    with torch.no_grad():
        out = encoder(torch.rand(1, 2, 1, 48, 48, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (1, 96)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("backbone", "size", "img_size", "needed"),
    [("vit", "tiny", 36, "patch size 8"), ("swin", "tiny", 40, "= 16"), ("swin", "paper", 100, "= 16")],
)
def test_indivisible_frame_sizes_are_config_errors(
    backbone: str, size: str, img_size: int, needed: str
) -> None:
    encoder_class = {"vit": ViTEncoder, "swin": SwinEncoder}[backbone]
    with pytest.raises(ValueError, match=needed):
        encoder_class(in_channels=1, size=size, img_size=img_size)
    with pytest.raises(ConfigError, match=r"data\.size") as caught:
        build_encoder(ModelConfig(backbone=backbone, size=size), 1, img_size=img_size)  # type: ignore[arg-type]
    assert needed in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("name", "size"), [("vit", 64), ("swin", 24)])
def test_frames_of_the_wrong_size_are_value_errors(name: str, size: int) -> None:
    encoder = create_encoder(name, in_channels=1, size="tiny", img_size=32)
    with pytest.raises(ValueError, match=f"{size}×{size}"):
        encoder(torch.zeros(1, 2, 1, size, size))
