"""``weights convert`` from each source layout: torchvision ResNet-18 (every width), MedicalNet's 3-D
ResNet-18, MONAI ViT / UNETR and Swin / SwinUNETR; the folded input standardisation; the errors.

torchvision and MedicalNet are not installed (nothing is downloaded): their state dicts are written out by
hand from their published layouts, with random values. The MONAI sources are built with MONAI itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets.resnet import resnet18
from monai.networks.nets.swin_unetr import SwinUNETR
from monai.networks.nets.unetr import UNETR
from monai.networks.nets.vit import ViT
from safetensors.torch import save_file
from torch import Tensor, nn

from learner import api
from learner.errors import CheckpointError, ConfigError
from learner.models.encoder import Encoder
from learner.models.layouts import IMAGENET, InputNorm, parse_input_norm
from learner.models.monai_backbones import VIT_PRESETS, SwinEncoder, ViTEncoder, ViTPreset
from learner.models.tsm_resnet import WIDTHS, TSMResNet18
from learner.models.volume_backbones import ResNet18VolumeEncoder, ViTVolumeEncoder
from learner.models.weights import conversion_record, convert_weights, load_init_weights

GREY_NORM = InputNorm((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
"""A made-up RGB standardisation for the MONAI sources (theirs have none), to test the fold."""


def random_values(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    """Random tensors of ``shapes``: BatchNorm variances in [0.5, 1.5], counters 1000, the rest N(0, 0.1²)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = 0.1 * torch.randn(shape, generator=generator)
    return state


def resnet18_shapes(
    *, dims: int, in_channels: int, downsample: bool, prefix: str = "", batch_counters: bool = True
) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of a ResNet-18 state dict (BasicBlock, 2-2-2-2, widths 64-128-256-512): a 7^dims
    stem ``conv1`` + ``bn1``, then ``layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}`` with 3^dims kernels, and a
    1^dims ``downsample.{0,1}`` on the first block of layers 2-4 only when ``downsample`` (shortcut "B")."""
    shapes: dict[str, tuple[int, ...]] = {f"{prefix}conv1.weight": (64, in_channels) + (7,) * dims}

    def bn(name: str, width: int) -> None:
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}{name}.{part}"] = (width,)
        if batch_counters:
            shapes[f"{prefix}{name}.num_batches_tracked"] = ()

    bn("bn1", 64)
    in_width = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            name = f"layer{stage}.{block}"
            shapes[f"{prefix}{name}.conv1.weight"] = (width, in_width if block == 0 else width) + (3,) * dims
            bn(f"{name}.bn1", width)
            shapes[f"{prefix}{name}.conv2.weight"] = (width, width) + (3,) * dims
            bn(f"{name}.bn2", width)
            if downsample and block == 0 and stage > 1:
                shapes[f"{prefix}{name}.downsample.0.weight"] = (width, in_width) + (1,) * dims
                bn(f"{name}.downsample.1", width)
        in_width = width
    return shapes


def torchvision_resnet18_state(*, batch_counters: bool = True) -> dict[str, Tensor]:
    """torchvision's ``resnet18`` state dict (``resnet18-f37072fd.pth``): RGB 2-D stem, shortcut "B"
    (1×1 convolution without bias + BatchNorm), ``fc`` to 1000 classes."""
    shapes = resnet18_shapes(dims=2, in_channels=3, downsample=True, batch_counters=batch_counters)
    return random_values(shapes | {"fc.weight": (1000, 512), "fc.bias": (1000,)})


def medicalnet_resnet18_file(path: Path) -> dict[str, Tensor]:
    """MedicalNet's ``resnet_18.pth``: ``{"state_dict": ...}`` saved from DataParallel (``module.`` keys),
    a 1-channel 7×7×7 stem, 3×3×3 kernels, shortcut "A" (no downsample tensors), no classifier."""
    state = random_values(resnet18_shapes(dims=3, in_channels=1, downsample=False, prefix="module."), seed=1)
    torch.save({"state_dict": state}, path)
    return state


def assert_equal(a: Tensor, b: Tensor, key: str) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)


def first_layer(x: Tensor, conv: Tensor, state: dict[str, Tensor], bn: str, padding: int = 0) -> Tensor:
    """conv1 (stride 2) then bn1 in evaluation mode, in float64."""
    out = F.conv2d(x.double(), conv.double(), stride=2, padding=padding)
    mean, var, weight, bias = (
        state[f"{bn}.{p}"].double() for p in ("running_mean", "running_var", "weight", "bias")
    )
    return F.batch_norm(out, mean, var, weight, bias, training=False, eps=1e-5)


# ---- torchvision ResNet-18 → tsm_resnet18, every width ----


@pytest.mark.parametrize("size", ["paper", "small", "tiny"])
def test_torchvision_resnet18_converts_at_every_width(tmp_path: Path, size: str) -> None:
    source = torchvision_resnet18_state()
    torch.save(source, tmp_path / "resnet18.pth")
    dst = convert_weights(tmp_path / "resnet18.pth", tmp_path / "r18.safetensors", tsm(size, 1))
    encoder = tsm(size, 1)
    load_init_weights(encoder, dst)  # strict: no missing, unexpected or wrong-shape key
    state = encoder.state_dict()
    width = WIDTHS[size]
    folded = {"conv1.weight", "bn1.running_mean"}
    for key, value in state.items():
        leading = source[key][tuple(slice(0, n) for n in value.shape)]  # paper: the whole tensor
        if key not in folded:
            assert_equal(value, leading, key)
    # the stem: ImageNet's std divided out and RGB summed; its mean taken from bn1's running mean
    std = torch.tensor(IMAGENET.std).reshape(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET.mean).reshape(1, 3, 1, 1)
    kernel = source["conv1.weight"][:width]
    torch.testing.assert_close(state["conv1.weight"], (kernel / std).sum(1, keepdim=True))
    shift = (kernel * mean / std).sum(dim=(1, 2, 3))
    torch.testing.assert_close(state["bn1.running_mean"], source["bn1.running_mean"][:width] + shift)
    record = conversion_record(dst)
    assert record["source_layout"] == "torchvision_resnet18"
    assert record["input_norm"] == IMAGENET.describe()
    assert "dropped the classifier (fc, new_fc)" in record["steps"]
    assert ("narrowed" in record["steps"]) == (size != "paper")


def tsm(size: str, channels: int) -> TSMResNet18:
    return TSMResNet18(in_channels=channels, size=size)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_folded_stem_on_raw_pixels_equals_the_source_on_standardised_rgb(
    tmp_path: Path, channels: int
) -> None:
    """The issue's check: a grey image through the converted first layer (conv1 → bn1) equals the RGB
    source on that image repeated over 3 channels and standardised with ImageNet's mean and std."""
    source = torchvision_resnet18_state()
    torch.save(source, tmp_path / "resnet18.pth")
    dst = convert_weights(tmp_path / "resnet18.pth", tmp_path / "r18.safetensors", tsm("paper", channels))
    encoder = tsm("paper", 1 if channels == 1 else 3)
    load_init_weights(encoder, dst)
    state = encoder.state_dict()
    pixels = torch.rand(2, channels, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rgb = pixels.expand(-1, 3, -1, -1)
    standardised = (rgb - torch.tensor(IMAGENET.mean).reshape(1, 3, 1, 1)) / torch.tensor(
        IMAGENET.std
    ).reshape(1, 3, 1, 1)
    expected = first_layer(standardised, source["conv1.weight"], source, "bn1")
    got = first_layer(pixels, state["conv1.weight"], state, "bn1")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # with the stem's zero padding: exact wherever the 7×7 window stays inside the image
    expected = first_layer(standardised, source["conv1.weight"], source, "bn1", padding=3)
    got = first_layer(pixels, state["conv1.weight"], state, "bn1", padding=3)
    torch.testing.assert_close(got[..., 2:-1, 2:-1], expected[..., 2:-1, 2:-1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[..., 0, :], expected[..., 0, :], atol=1e-3)  # the padded border differs


@pytest.mark.slow
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("batch_counters", [True, False])
def test_without_the_fold_the_converted_file_gives_the_outputs_of_loading_the_pth(
    tmp_path: Path, channels: int, batch_counters: bool
) -> None:
    torch.save(torchvision_resnet18_state(batch_counters=batch_counters), tmp_path / "resnet18.pth")
    dst = convert_weights(
        tmp_path / "resnet18.pth", tmp_path / "r18.safetensors", tsm("paper", channels), input_norm=None
    )
    direct, converted = tsm("paper", channels), tsm("paper", channels)
    load_init_weights(direct, tmp_path / "resnet18.pth")  # --init FILE: keys normalised, nothing folded
    load_init_weights(converted, dst)
    for key, value in converted.state_dict().items():
        assert_equal(value, direct.state_dict()[key], key)
    clips = torch.rand(2, 3, channels, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(clips), direct.eval()(clips), rtol=0, atol=0)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind


def test_a_converted_file_converts_again_unchanged(tmp_path: Path) -> None:
    torch.save(torchvision_resnet18_state(), tmp_path / "resnet18.pth")
    once = convert_weights(tmp_path / "resnet18.pth", tmp_path / "once.safetensors", tsm("tiny", 1))
    twice = convert_weights(once, tmp_path / "twice.safetensors", tsm("tiny", 1))  # not folded twice
    a, b = tsm("tiny", 1), tsm("tiny", 1)
    load_init_weights(a, once)
    load_init_weights(b, twice)
    for key, value in a.state_dict().items():
        assert_equal(b.state_dict()[key], value, key)
    assert conversion_record(twice)["source_layout"] == "learner"


# ---- MedicalNet 3-D ResNet-18 → resnet18_3d ----


def test_the_medicalnet_table_is_what_monai_loads_medicalnet_into() -> None:
    """MONAI loads MedicalNet's resnet_18 strictly, ``module.`` removed, into resnet18(shortcut_type="A",
    bias_downsample=True, n_input_channels=1, feed_forward=False): the hand-written table is that."""
    monai = resnet18(spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type="A")
    table = resnet18_shapes(dims=3, in_channels=1, downsample=False)
    assert {k: tuple(v.shape) for k, v in monai.state_dict().items()} == table


@pytest.mark.slow
@pytest.mark.parametrize("size", ["paper", "tiny"])
def test_medicalnet_resnet18_converts_tensor_for_tensor(tmp_path: Path, size: str) -> None:
    source = {k.removeprefix("module."): v for k, v in medicalnet_resnet18_file(tmp_path / "r18.pth").items()}
    encoder = ResNet18VolumeEncoder(in_channels=1, size=size)
    dst = convert_weights(tmp_path / "r18.pth", tmp_path / "r18.safetensors", encoder)
    target = ResNet18VolumeEncoder(in_channels=1, size=size)
    load_init_weights(target, dst)  # strict
    for key, value in target.state_dict().items():
        name = key.removeprefix("resnet.")
        if ".downsample." in name:  # shortcut A as an identity 1×1×1 convolution and BatchNorm
            continue
        assert_equal(value, source[name][tuple(slice(0, n) for n in value.shape)], key)
    weight = target.state_dict()["resnet.layer2.0.downsample.0.weight"]
    assert torch.equal(weight[:, :, 0, 0, 0], torch.eye(*weight.shape[:2]))
    assert conversion_record(dst)["input_norm"] == "none"


def test_medicalnet_features_equal_monais_shortcut_a_network(tmp_path: Path) -> None:
    """The converted encoder computes what MONAI's MedicalNet network (shortcut "A") computes."""
    source = resnet18(
        spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type="A", widen_factor=0.25
    )
    randomise(source)
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "s.pth")
    dst = convert_weights(tmp_path / "s.pth", tmp_path / "s.safetensors", resnet3d("tiny"))
    encoder = resnet3d("tiny")
    load_init_weights(encoder, dst)
    volumes = torch.rand(2, 1, 6, 24, 24, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = source.eval()(volumes)
        got = encoder.eval()(volumes.transpose(1, 2))  # clips (N, T, C, H, W), T as depth
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def resnet3d(size: str) -> ResNet18VolumeEncoder:
    return ResNet18VolumeEncoder(in_channels=1, size=size)


def randomise(module: nn.Module) -> None:
    """Perturb every parameter and BatchNorm statistic, so that no tensor is a constant initialisation."""
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                noise = 0.05 * torch.randn(tensor.shape, generator=generator)
                tensor.copy_(tensor + noise if not name.endswith("running_var") else 0.5 + noise.abs() * 10)


# ---- MONAI ViT / UNETR → vit, vit_3d ----


def monai_vit(
    in_channels: int, img_size: int | tuple[int, int, int], *, layers: int = 2, **kwargs: object
) -> ViT:
    """A MONAI ViT with learner's ``tiny`` hyper-parameters; MONAI's default qkv_bias (False)."""
    spatial = 2 if isinstance(img_size, int) else 3
    patch = 8 if spatial == 2 else (2, 8, 8)
    vit = ViT(in_channels=in_channels, img_size=img_size, patch_size=patch, hidden_size=48, mlp_dim=192,
              num_layers=layers, num_heads=4, spatial_dims=spatial, **kwargs)  # type: ignore[arg-type]  # fmt: skip
    randomise(vit)
    return vit.eval()


def save(state: dict[str, Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


def test_monai_vit_features_equal_the_source_on_standardised_rgb(tmp_path: Path) -> None:
    source = monai_vit(3, 32)
    src = save(source.state_dict(), tmp_path / "vit.safetensors")
    dst = convert_weights(src, tmp_path / "out.safetensors", vit(), input_norm=GREY_NORM)
    encoder = vit()
    load_init_weights(encoder, dst)
    grey = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    mean, std = (torch.tensor(v).reshape(1, 3, 1, 1) for v in (GREY_NORM.mean, GREY_NORM.std))
    with torch.no_grad():
        expected = source((grey.expand(-1, 3, -1, -1) - mean) / std)[0].mean(dim=1)
        got = encoder.eval().embed_frames(grey, 1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    steps = conversion_record(dst)["steps"]
    assert "zero qkv biases" in steps
    assert "summed to grey" in steps


def vit(img_size: int = 32) -> ViTEncoder:
    return ViTEncoder(in_channels=1, size="tiny", img_size=img_size)


def test_a_unetr_gives_its_vit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # UNETR's ViT has 12 layers and 16-pixel patches: a small ViT-B stand-in as learner's "tiny"
    monkeypatch.setitem(
        VIT_PRESETS, "tiny", ViTPreset(hidden_size=48, num_layers=12, num_heads=4, patch_size=16)
    )
    unetr = UNETR(in_channels=1, out_channels=2, img_size=(32, 32), feature_size=8, hidden_size=48,
                  mlp_dim=192, num_heads=4, spatial_dims=2)  # fmt: skip
    randomise(unetr)
    source = unetr.state_dict()
    dst = convert_weights(save(source, tmp_path / "s.safetensors"), tmp_path / "d.safetensors", vit())
    encoder = vit()
    load_init_weights(encoder, dst)
    for key, value in encoder.state_dict().items():
        expected = torch.zeros(value.shape) if key.endswith("qkv.bias") else source[key]  # UNETR: no qkv bias
        assert_equal(value, expected, key)
    assert conversion_record(dst)["source_layout"] == "monai_vit"


def test_a_classifier_vit_drops_its_token_and_head(tmp_path: Path) -> None:
    source = monai_vit(1, 32, classification=True, num_classes=3, qkv_bias=True).state_dict()
    dst = convert_weights(save(source, tmp_path / "s.safetensors"), tmp_path / "d.safetensors", vit())
    encoder = vit()
    load_init_weights(encoder, dst)
    for key, value in encoder.state_dict().items():
        assert_equal(value, source[key.removeprefix("vit.")], key)
    assert "dropped the classification token and head" in conversion_record(dst)["steps"]


def test_a_vit_of_another_grid_gets_its_position_embedding_resized(tmp_path: Path) -> None:
    source = monai_vit(1, 64).state_dict()  # 8 × 8 tokens
    dst = convert_weights(save(source, tmp_path / "s.safetensors"), tmp_path / "d.safetensors", vit(32))
    encoder = vit(32)
    load_init_weights(encoder, dst)
    grid = source["patch_embedding.position_embeddings"].reshape(1, 8, 8, 48).permute(0, 3, 1, 2)
    resized = F.interpolate(grid.double(), size=(4, 4), mode="bicubic", align_corners=False)
    expected = resized.permute(0, 2, 3, 1).reshape(1, 16, 48).float()
    torch.testing.assert_close(encoder.state_dict()["vit.patch_embedding.position_embeddings"], expected)
    assert "position embedding resized from 8² to 4² tokens" in conversion_record(dst)["steps"]


def test_a_3d_monai_vit_gives_vit_3d_the_same_features(tmp_path: Path) -> None:
    source = monai_vit(1, (4, 32, 32), qkv_bias=True)
    dst = convert_weights(save(source.state_dict(), tmp_path / "s.safetensors"), tmp_path / "d.safetensors",
                          vit3d())  # fmt: skip
    encoder = vit3d()
    load_init_weights(encoder, dst)
    volumes = torch.rand(2, 1, 4, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(
            encoder.eval().embed_volumes(volumes), source(volumes)[0].mean(dim=1), rtol=1e-4, atol=1e-5
        )


def vit3d() -> ViTVolumeEncoder:
    return ViTVolumeEncoder(in_channels=1, size="tiny", img_size=32, num_frames=4)


# ---- MONAI Swin / SwinUNETR → swin ----


def test_a_swinunetr_encoder_gives_swin_the_same_features(tmp_path: Path) -> None:
    """A 2-D SwinUNETR with learner's ``tiny`` Swin settings: its ``swinViT`` is the encoder; learner's
    Swin has no merge after the last stage, so the source's is removed before comparing."""
    source = SwinUNETR(in_channels=3, out_channels=2, feature_size=12, depths=(1, 1, 1, 1),
                       num_heads=(1, 2, 4, 8), window_size=4, spatial_dims=2)  # fmt: skip
    randomise(source)
    src = save(source.state_dict(), tmp_path / "swinunetr.safetensors")
    dst = convert_weights(src, tmp_path / "d.safetensors", swin(), input_norm=GREY_NORM)
    encoder = swin()
    load_init_weights(encoder, dst)
    source.swinViT.layers4[0].downsample = None  # type: ignore[assignment]
    grey = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(7))
    mean, std = (torch.tensor(v).reshape(1, 3, 1, 1) for v in (GREY_NORM.mean, GREY_NORM.std))
    with torch.no_grad():
        expected = source.eval().swinViT((grey.expand(-1, 3, -1, -1) - mean) / std, normalize=True)
        got = encoder.eval().swin(grey, normalize=True)
    for stage, (a, b) in enumerate(zip(got, expected, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"stage {stage}")
    record = conversion_record(dst)
    assert record["source_layout"] == "monai_swin"
    assert "dropped the merge after the last stage" in record["steps"]


def swin() -> SwinEncoder:
    return SwinEncoder(in_channels=1, size="tiny", img_size=32)


def test_a_swin_transformer_state_dict_converts_tensor_for_tensor(tmp_path: Path) -> None:
    from monai.networks.nets.swin_unetr import SwinTransformer

    network = SwinTransformer(in_chans=1, embed_dim=12, window_size=(4, 4), patch_size=(2, 2),
                              depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), spatial_dims=2)  # fmt: skip
    source = network.state_dict()
    dst = convert_weights(save(source, tmp_path / "s.safetensors"), tmp_path / "d.safetensors", swin())
    encoder = swin()
    load_init_weights(encoder, dst)
    for key, value in encoder.state_dict().items():
        assert_equal(value, source[key.removeprefix("swin.")], key)


# ---- errors: one line naming the file ----


def monai_3d_swin_state() -> dict[str, Tensor]:
    return SwinUNETR(in_channels=1, out_channels=2, feature_size=12, depths=(1, 1, 1, 1),
                     num_heads=(1, 2, 4, 8), window_size=4, spatial_dims=3).swinViT.state_dict()  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "encoder", "expected"),
    [
        ("other.pth", lambda: {"encoder.weight": torch.zeros(2)}, lambda: tsm("tiny", 1),
         "no known weights layout (first key 'encoder.weight')"),
        ("r18.pth", torchvision_resnet18_state, vit,
         "a torchvision_resnet18 checkpoint cannot initialise vit; use model.backbone=tsm_resnet18"),
        ("vit3d.pth", lambda: monai_vit(1, (4, 32, 32)).state_dict(), vit,
         "a 3-D monai_vit checkpoint (vit.patch_embedding.patch_embeddings.weight (48, 1, 2, 8, 8)) cannot "
         "initialise vit, which is 2-D; use model.backbone=vit_3d"),
        ("swin3d.pth", monai_3d_swin_state, swin,
         "cannot initialise swin, which is 2-D; no learner backbone"),
        ("shallow.pth", lambda: monai_vit(1, 32, layers=1).state_dict(), vit,
         "monai_vit weights do not match ViTEncoder: 12 missing (vit.blocks.1.attn.out_proj.bias"),
        ("window.pth", lambda: SwinUNETR(in_channels=1, out_channels=2, feature_size=12, depths=(1, 1, 1, 1),
         num_heads=(1, 2, 4, 8), window_size=7, spatial_dims=2).state_dict(), swin,
         "8 shape mismatches (swin.layers1.0.blocks.0.attn.relative_position_bias_table (169, 1) vs (49, 1)"),
        ("kernel.pth", lambda: random_values(resnet18_shapes(dims=2, in_channels=3, downsample=True)
         | {"conv1.weight": (64, 3, 5, 5)}), lambda: tsm("paper", 1),
         "1 shape mismatches (conv1.weight (64, 3, 5, 5) vs (64, 1, 7, 7))"),
    ],
)  # fmt: skip
def test_a_source_that_does_not_fit_is_a_one_line_error_naming_the_file(
    tmp_path: Path,
    name: str,
    content: Callable[[], dict[str, Tensor]],
    encoder: Callable[[], Encoder],
    expected: str,
) -> None:
    torch.save(content(), tmp_path / name)
    with pytest.raises(CheckpointError) as caught:
        convert_weights(tmp_path / name, tmp_path / "out.safetensors", encoder())
    message = str(caught.value)
    assert expected in message
    assert message.startswith(str(tmp_path / name))
    assert "\n" not in message
    assert not (tmp_path / "out.safetensors").exists()


def test_input_norm_choices() -> None:
    assert parse_input_norm("auto") == "auto"
    assert parse_input_norm("none") is None
    assert parse_input_norm("imagenet") == IMAGENET
    assert parse_input_norm("0.5/0.25") == InputNorm((0.5,), (0.25,))
    for bad in ("zscore", "0.5,0.5/0.2", "0.5/0", "0.5/nan", "nan/0.25", "0.5/inf", "-inf/1"):
        with pytest.raises(ValueError, match="input norm"):
            parse_input_norm(bad)
    with pytest.raises(ConfigError, match="--input-norm"):
        api.convert_weights("a.pth", "b.safetensors", input_norm="0.5/0")


# ---- the command ----


@pytest.mark.slow
def test_weights_convert_command(tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    src, dst = tmp_path / "resnet18-f37072fd.pth", tmp_path / "out" / "r18.safetensors"
    torch.save(torchvision_resnet18_state(), src)
    code, out, _ = cli(["weights", "convert", str(src), str(dst)])
    assert code == 0
    assert f"wrote {dst}" in out
    assert f"from torchvision_resnet18 weights; input norm folded: {IMAGENET.describe()}" in out
    grey = tsm("paper", 1)
    load_init_weights(grey, dst)  # the project's default: grey frames, the RGB stem summed
    dst.unlink()
    code, out, _ = cli(["weights", "convert", str(src), str(dst), "--set", "model.size=tiny"])
    assert code == 0
    assert "narrowed" in out
    code, _, err = cli(  # dst exists: --force lets the command go on (to the swin check)
        [
            "weights",
            "convert",
            str(src),
            str(dst),
            "--backbone",
            "swin",
            "--set",
            "model.size=tiny",
            "--force",
        ]
    )
    assert code == 2
    err = err.strip()
    assert err.startswith(f"error: {src}: a torchvision_resnet18 checkpoint cannot initialise swin")
    assert "\n" not in err
    code, _, err = cli(["weights", "convert", str(src), str(tmp_path / "r18.pth")])
    assert code == 2
    assert "must end in .safetensors" in err


def test_weights_convert_never_overwrites_dst_without_force_nor_src_at_all(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    """An existing DST was overwritten without a word, even DST == SRC: refused before any work, like the
    --out of embed and export; --force never overwrites SRC, by any name."""
    src, dst = tmp_path / "r18.pth", tmp_path / "mine.safetensors"
    src.write_bytes(b"the downloaded weights")
    dst.write_bytes(b"the user's file")
    code, _, err = cli(["weights", "convert", str(src), str(dst)])
    assert code == 2
    assert err == f"error: DST: {dst} exists; pass --force to overwrite it or choose another DST\n"
    (tmp_path / "link.pth").symlink_to(src)
    for same in (src, tmp_path / "link.pth"):
        code, _, err = cli(["weights", "convert", str(src), str(same), "--force"])
        assert code == 2
        assert err.startswith(f"error: DST: {same} is SRC, an input of this command")
    assert (src.read_bytes(), dst.read_bytes()) == (b"the downloaded weights", b"the user's file")


@pytest.mark.slow
def test_weights_convert_command_for_medicalnet_and_swinunetr(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    medicalnet_resnet18_file(tmp_path / "resnet_18.pth")
    src, dst = tmp_path / "resnet_18.pth", tmp_path / "r.safetensors"
    code, out, _ = cli(["weights", "convert", str(src), str(dst), "--backbone", "resnet18_3d"])
    assert code == 0, out
    assert "from medicalnet_resnet18 weights; input norm folded: none" in out
    unetr = SwinUNETR(in_channels=1, out_channels=2, feature_size=48, spatial_dims=2)  # learner's small
    torch.save({"state_dict": unetr.state_dict()}, tmp_path / "swin_unetr.pt")
    src, dst = tmp_path / "swin_unetr.pt", tmp_path / "s.safetensors"
    options = ["--backbone", "swin", "--set", "model.size=small", "--set", "data.size=32"]
    code, out, _ = cli(["weights", "convert", str(src), str(dst), *options])
    assert code == 0, out
    assert "from monai_swin weights" in out


def test_a_layer_embedding_norm_converts_with_a_fresh_layer_norm(tmp_path: Path) -> None:
    """model.embed_norm=layer adds keys no torchvision file has: the conversion keeps them as initialised."""
    torch.save(torchvision_resnet18_state(), tmp_path / "resnet18.pth")
    layered = tsm("tiny", 1)
    layered.set_embedding_norm("layer")
    dst = convert_weights(tmp_path / "resnet18.pth", tmp_path / "layer.safetensors", layered)
    plain = tsm("tiny", 1)
    load_init_weights(
        plain, convert_weights(tmp_path / "resnet18.pth", tmp_path / "plain.safetensors", plain)
    )
    again = tsm("tiny", 1)
    again.set_embedding_norm("layer")
    load_init_weights(again, dst)
    for key, value in plain.state_dict().items():
        assert_equal(again.state_dict()[key], value, key)
    assert_equal(
        again.state_dict()["embedding_norm.bias"], torch.zeros(again.embed_dim), "embedding_norm.bias"
    )
