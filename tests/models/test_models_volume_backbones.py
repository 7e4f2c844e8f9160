"""The 3-D encoders: T read as depth, MONAI's 3-D ResNet-18 and ViT, their sizes and their errors."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets.resnet import ResNet
from torch import Tensor

from learner.config import ModelConfig
from learner.errors import ConfigError
from learner.models import tsm_resnet
from learner.models.encoder import SIZES, VolumeEncoder
from learner.models.registry import CONFIG_OPTIONS, ENCODERS, build_encoder, create_encoder
from learner.models.volume_backbones import DEPTH_PATCH, ResNet18VolumeEncoder, ViTVolumeEncoder


class CornerVoxels(VolumeEncoder):
    """A stub whose embedding is the volume's corner voxel column: (N, C, D, H, W) → (N, C·D)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_channels = 2
        self.embed_dim = 6

    def embed_volumes(self, volumes: Tensor) -> Tensor:
        return volumes[:, :, :, 0, 0].flatten(1)


def test_a_volume_encoder_reads_the_frames_as_depth() -> None:
    clips = torch.arange(2 * 3 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 3, 2, 4, 4)  # (N, T, C, H, W)
    embeddings = CornerVoxels()(clips)
    # entry c·T + t of scan n is frame t's channel c: the volume is (N, C, T, H, W)
    expected = torch.stack([clips[n, :, :, 0, 0].T.flatten() for n in range(2)])
    assert torch.equal(embeddings, expected)
    with pytest.raises(ValueError, match=r"built for 2 input channel\(s\) but the clips have 1"):
        CornerVoxels()(torch.zeros(1, 3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"shape \(N, T, C, H, W\)"):
        CornerVoxels()(torch.zeros(3, 2, 4, 4))


@pytest.mark.parametrize("size", SIZES)
def test_resnet18_3d_is_monai_resnet18_without_its_classifier(size: str) -> None:
    encoder = ResNet18VolumeEncoder(in_channels=1, size=size)
    width = tsm_resnet.WIDTHS[size]
    assert isinstance(encoder.resnet, ResNet)
    assert encoder.resnet.fc is None
    assert encoder.embed_dim == 8 * width
    assert encoder.resnet.conv1.weight.shape == (width, 1, 7, 7, 7)  # a 3-D stem on C = 1
    assert [len(stage) for stage in (encoder.resnet.layer1, encoder.resnet.layer4)] == [2, 2]


@pytest.mark.parametrize(("depth", "side"), [(1, 16), (3, 20), (8, 32)])
def test_resnet18_3d_takes_any_grid(depth: int, side: int) -> None:
    encoder = create_encoder("resnet18_3d", in_channels=1, size="tiny").eval()
    with torch.no_grad():
        embeddings = encoder(torch.rand(2, depth, 1, side, side, generator=torch.Generator().manual_seed(0)))
    assert embeddings.shape == (2, 128)
    assert torch.isfinite(embeddings).all()


def test_resnet18_3d_mixes_slices_unlike_a_per_slice_average() -> None:
    encoder = create_encoder("resnet18_3d", in_channels=1, size="tiny").eval()
    clips = torch.rand(1, 4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.allclose(encoder(clips), encoder(clips.flip(1)), atol=1e-4)


def test_vit_3d_tokens_are_depth_and_frame_patches() -> None:
    encoder = ViTVolumeEncoder(in_channels=1, size="tiny", img_size=32, num_frames=4)
    patch = 8  # the tiny 2-D ViT preset's patch
    assert encoder.vit.patch_embedding.n_patches == (4 // DEPTH_PATCH) * (32 // patch) ** 2
    assert encoder.embed_dim == 48
    with torch.no_grad():
        assert encoder(torch.rand(2, 4, 1, 32, 32)).shape == (2, 48)
    with pytest.raises(ValueError, match=r"built for volumes of \(4, 32, 32\).*got \(6, 32, 32\)"):
        encoder(torch.rand(1, 6, 1, 32, 32))


@pytest.mark.parametrize(("img_size", "frames"), [(30, 4), (32, 3)])
def test_vit_3d_grid_errors_name_the_config_keys(img_size: int, frames: int) -> None:
    with pytest.raises(ValueError, match="patch size 8 and a depth divisible by 2"):
        create_encoder("vit_3d", in_channels=1, size="tiny", img_size=img_size, num_frames=frames)
    with pytest.raises(ConfigError, match=rf"data\.size={img_size}, data\.frames={frames}: vit_3d") as caught:
        build_encoder(ModelConfig(backbone="vit_3d", size="tiny"), 1, img_size=img_size, frames=frames)
    assert "\n" not in str(caught.value)


def test_every_registered_option_comes_from_a_config_key() -> None:
    for spec in ENCODERS.values():
        assert set(spec.options) <= set(CONFIG_OPTIONS)


def test_build_encoder_passes_data_frames_to_vit_3d() -> None:
    encoder = build_encoder(ModelConfig(backbone="vit_3d", size="tiny"), 1, img_size=16, frames=6)
    assert isinstance(encoder, ViTVolumeEncoder)
    assert encoder.grid == (6, 16, 16)
