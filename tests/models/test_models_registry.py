"""The encoder registry: names, errors, config wiring, and a timm-style smoke test of every encoder (its
forward and backward also with every host sync forbidden)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from learner.config import ModelConfig
from learner.errors import ConfigError
from learner.models import monai_backbones, tsm_resnet
from learner.models.encoder import SIZES
from learner.models.registry import (
    ENCODERS,
    available_encoders,
    build_encoder,
    build_regressor,
    create_encoder,
)


def test_the_paper_backbones_are_registered() -> None:
    assert {"tsm_resnet18", "vit", "swin"} <= set(available_encoders())
    assert available_encoders() == sorted(ENCODERS)  # exactly the table's names, sorted


def test_every_preset_table_covers_every_size() -> None:
    for presets in (tsm_resnet.WIDTHS, monai_backbones.VIT_PRESETS, monai_backbones.SWIN_PRESETS):
        assert set(presets) == set(SIZES)


def test_unknown_encoder_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown encoder 'resnet50'") as caught:
        create_encoder("resnet50")
    assert all(name in str(caught.value) for name in available_encoders())
    with pytest.raises(ConfigError, match=r"model\.backbone") as caught:
        build_encoder(ModelConfig(backbone="resnet50"), in_channels=1)
    assert all(name in str(caught.value) for name in available_encoders())


@pytest.mark.parametrize(
    ("name", "option", "takes"),
    [
        ("resnet18_3d", "img_size", "no options"),
        ("vit", "shift_fraction", "img_size"),
        ("swin", "norm", "img_size"),
    ],
)
def test_an_option_an_encoder_does_not_take_lists_those_it_takes(name: str, option: str, takes: str) -> None:
    with pytest.raises(ValueError, match=rf"encoder '{name}' takes no option '{option}'; it takes: {takes}"):
        create_encoder(name, size="tiny", **{option: 1})


@pytest.mark.parametrize(
    ("in_channels", "size", "argument", "key"),
    [(2, "paper", "in_channels 2", "data.channels"), (1, "huge", "size 'huge'", "model.size")],
)
def test_bad_channels_and_sizes_name_their_config_key(
    in_channels: int, size: str, argument: str, key: str
) -> None:
    with pytest.raises(ValueError, match=f"unknown {argument}; available"):
        create_encoder("tsm_resnet18", in_channels=in_channels, size=size)
    model_cfg = ModelConfig.model_construct(size=size)  # bypasses the config's own check of model.size
    with pytest.raises(ConfigError, match=key) as caught:
        build_encoder(model_cfg, in_channels=in_channels)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_smoke_every_encoder(
    name: str, in_channels: int, host_syncs_forbidden: Callable[[str], AbstractContextManager[None]]
) -> None:
    encoder = build_encoder(ModelConfig(backbone=name, size="tiny"), in_channels, img_size=32, frames=4)
    assert type(encoder) is ENCODERS[name].encoder
    clips = torch.rand(2, 4, in_channels, 32, 32, generator=torch.Generator().manual_seed(0))
    embeddings = encoder(clips)
    assert embeddings.shape == (2, encoder.embed_dim)
    assert torch.isfinite(embeddings).all()
    embeddings.square().mean().backward()
    for param_name, param in encoder.named_parameters():
        assert param.grad is not None, f"no gradient for {param_name}"
        assert torch.isfinite(param.grad).all(), f"non-finite gradient for {param_name}"
    with host_syncs_forbidden(f"{name}'s forward and backward"):  # a GPU step, or its CUDA graph, never waits
        encoder(clips).square().mean().backward()
    encoder.eval()
    with torch.no_grad():
        assert torch.equal(encoder(clips), encoder(clips))


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_takes_its_channels_last_format(name: str) -> None:
    """runtime.channels_last (on by default on a GPU) converts the whole model to the encoder's format:
    NHWC refuses a volume encoder's 5-D Conv3d weights, so those take NDHWC; the embeddings do not change."""
    encoder = build_encoder(ModelConfig(backbone=name, size="tiny"), 1, img_size=32, frames=4).eval()
    clips = torch.rand(2, 4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = encoder(clips)
        converted = encoder.to(memory_format=encoder.channels_last)  # type: ignore[call-overload]
        torch.testing.assert_close(converted(clips), expected, rtol=1e-5, atol=1e-6)


def test_wrong_channel_count_at_forward_is_a_value_error() -> None:
    encoder = create_encoder("tsm_resnet18", in_channels=1, size="tiny")
    with pytest.raises(ValueError, match=r"built for 1 input channel\(s\) but the clips have 3"):
        encoder(torch.zeros(1, 2, 3, 32, 32))


def test_build_encoder_forwards_shift_fraction_and_loads_init(tmp_path: Path) -> None:
    source = create_encoder("tsm_resnet18", in_channels=1, size="tiny")
    save_file(source.state_dict(), tmp_path / "init.safetensors")  # backbone defaults to tsm_resnet18
    init = tmp_path / "init.safetensors"
    encoder = build_encoder(ModelConfig(size="tiny", shift_fraction=0.25, init=init), in_channels=1)
    assert encoder.layer1[0].fold == 16 // 4  # tiny: 16 channels in layer1
    for key, value in source.state_dict().items():
        torch.testing.assert_close(encoder.state_dict()[key], value, rtol=0, atol=0)


def test_build_encoder_unknown_backbone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="available"):
        build_encoder(ModelConfig(backbone="nope"), in_channels=1)


def test_model_norm_reaches_tsm_and_is_refused_by_a_backbone_without_the_choice() -> None:
    encoder = build_encoder(ModelConfig(size="tiny", norm="group"), in_channels=1, img_size=32)
    assert isinstance(encoder.bn1, torch.nn.GroupNorm)
    for backbone in ("vit", "swin"):
        with pytest.raises(
            ConfigError, match=rf"model.norm='frozen_bn' is not supported by model.backbone='{backbone}'"
        ):
            build_encoder(
                ModelConfig(backbone=backbone, size="tiny", norm="frozen_bn"), in_channels=1, img_size=32
            )


@pytest.mark.parametrize("name", ["l2", "layer"])
def test_embedding_norm_is_what_the_head_and_every_embedding_see(name: str) -> None:
    torch.manual_seed(0)
    model = build_regressor(ModelConfig(size="tiny", embed_norm=name, head_hidden=8), 1, 32).eval()
    clips = torch.rand(3, 2, 1, 32, 32)
    raw = model.encoder.frame_features(clips).mean(dim=1).double()  # the paper's u, (3, D)
    if name == "l2":
        hand = raw / raw.pow(2).sum(dim=1, keepdim=True).sqrt()
    else:  # LayerNorm at its initial identity affine: zero mean, unit (biased) variance over D
        centred = raw - raw.mean(dim=1, keepdim=True)
        hand = centred / torch.sqrt(centred.pow(2).mean(dim=1, keepdim=True) + 1e-5)
    embeddings, predictions = model(clips)
    torch.testing.assert_close(embeddings.double(), hand, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.encoder(clips), embeddings, rtol=0, atol=0)  # what `learner embed` sees
    torch.testing.assert_close(predictions, model.head(embeddings), rtol=0, atol=0)
    layer_keys = {"encoder.embedding_norm.weight", "encoder.embedding_norm.bias"}
    assert (layer_keys <= set(model.state_dict())) == (name == "layer")


def test_default_embedding_norm_adds_no_weights() -> None:
    plain = create_encoder("tsm_resnet18", in_channels=1, size="tiny")
    built = build_encoder(ModelConfig(size="tiny"), in_channels=1, img_size=32)
    assert list(built.state_dict()) == list(plain.state_dict())
    assert isinstance(built.embedding_norm, torch.nn.Identity)
