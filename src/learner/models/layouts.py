"""Pretrained weights in other libraries' layouts → a learner encoder's state dict (``weights convert``).

The source layout is recognised from its key names, after leading ``module.`` / ``base_model.`` prefixes
(DataParallel, reference TSM) are stripped:

=========================  ==============================================  ===========================
layout                     recognised by                                   initialises
=========================  ==============================================  ===========================
``torchvision_resnet18``   ``conv1.weight`` 4-D (``fc.*`` dropped)          ``tsm_resnet18``
``medicalnet_resnet18``    ``conv1.weight`` 5-D (``fc.*``, ``conv_seg.*``   ``resnet18_3d``
                           dropped); MONAI's own 3-D ResNet too
``monai_vit``              ``patch_embedding.*`` (a ViT), or ``vit.*`` (a   ``vit`` (2-D), ``vit_3d``
                           UNETR: its other keys are dropped)              (3-D)
``monai_swin``             ``patch_embed.*`` (a SwinTransformer), or        ``swin`` (2-D only)
                           ``swinViT.*`` (a SwinUNETR: other keys dropped)
=========================  ==============================================  ===========================

What a conversion changes, each step exact unless said otherwise (:class:`Conversion` lists those taken):

* **input normalisation folded** (:class:`InputNorm`): the source saw ``(x − mean_c) / std_c``; the first
  layer's kernel is divided by ``std_c`` and ``δ = −Σ w · mean_c / std_c`` is added to its bias (ViT,
  Swin) or subtracted from the following BatchNorm's ``running_mean`` (the ResNets, whose stem has no
  bias), so the layer takes learner's raw [0, 1] pixels. Exact except where a ResNet stem's window
  overlaps its zero padding (the source padded with the normalised 0, i.e. the raw mean).
* **RGB → grey**: a 3-channel first kernel is summed over its channels (after the division above) when
  the encoder takes 1 channel: grey g gives the response the source gives to (g, g, g).
* **narrowed** (``narrow=True``, the ResNets only): a wider source gives each tensor its leading channels
  in every dimension (weight selection; the same indices everywhere, so residual sums stay aligned). Not
  the source's function: a starting point for ``small`` / ``tiny``.
* MedicalNet's ResNet-18 uses shortcut "A" (strided identity, zero channels appended); learner's
  MONAI network has 1×1×1 convolution shortcuts, set here to that identity and their BatchNorm to the
  identity (exact in evaluation mode).
* a ViT without qkv biases (MONAI's default) gets zero biases; a 2-D ViT position embedding of another
  square token grid is resized bicubically (not exact); MONAI's unused ``norm_cross_attn`` is dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from learner.models.encoder import Encoder
from learner.models.monai_backbones import SwinEncoder, ViTEncoder
from learner.models.tsm_resnet import TSMResNet18
from learner.models.volume_backbones import ResNet18VolumeEncoder, ViTVolumeEncoder


@dataclass(frozen=True)
class InputNorm:
    """A source's per-channel input standardisation ``(x − mean) / std`` (one value per input channel)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def describe(self) -> str:
        """E.g. ``mean 0.485,0.456,0.406 / std 0.229,0.224,0.225``."""
        return f"mean {','.join(map(str, self.mean))} / std {','.join(map(str, self.std))}"


IMAGENET = InputNorm((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
"""torchvision's ImageNet standardisation."""

INPUT_NORM_CHOICES = "auto | none | imagenet | MEAN,…/STD,…"

InputNormChoice = InputNorm | Literal["auto"] | None
"""A source's standardisation, ``"auto"`` (the layout's own: ImageNet for torchvision), or None."""


def parse_input_norm(text: str) -> InputNormChoice:
    """``"auto"`` (kept, resolved per layout), ``"none"`` → None, ``"imagenet"``, or ``"M1,M2,M3/S1,S2,S3"``.

    Raises:
        ValueError: anything else, a mean or std that is not finite, or a std that is not positive.
    """
    if text == "auto":
        return "auto"
    if text in ("none", "imagenet"):
        return IMAGENET if text == "imagenet" else None
    try:
        mean_text, std_text = text.split("/")
        norm = InputNorm(
            tuple(float(v) for v in mean_text.split(",")), tuple(float(v) for v in std_text.split(","))
        )
    except ValueError:
        raise ValueError(f"input norm should be {INPUT_NORM_CHOICES}, got {text!r}") from None
    finite = all(math.isfinite(v) for v in (*norm.mean, *norm.std))  # float() reads "nan" and "inf"
    if len(norm.mean) != len(norm.std) or not finite or min(norm.std) <= 0:
        raise ValueError(f"input norm needs as many finite means as stds, stds > 0; got {text!r}")
    return norm


@dataclass(frozen=True)
class Layout:
    """A source layout: its name, the learner backbones it initialises, its input standardisation."""

    name: str
    backbones: tuple[str, ...]
    default_norm: InputNorm | None = None


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("torchvision_resnet18", ("tsm_resnet18",), IMAGENET),
        Layout("medicalnet_resnet18", ("resnet18_3d",)),
        Layout("monai_vit", ("vit", "vit_3d")),
        Layout("monai_swin", ("swin",)),
    )
}

TARGETS: dict[type[Encoder], tuple[str, str]] = {
    TSMResNet18: ("tsm_resnet18", ""),
    ResNet18VolumeEncoder: ("resnet18_3d", "resnet."),
    ViTEncoder: ("vit", "vit."),
    ViTVolumeEncoder: ("vit_3d", "vit."),
    SwinEncoder: ("swin", "swin."),
}
"""Encoder class → (its registry name, the prefix of its state-dict keys)."""

WRAPPERS: tuple[tuple[str, str, str], ...] = (
    ("swinViT.", "patch_embed.", "monai_swin"),  # SwinUNETR's encoder
    ("swin.", "patch_embed.", "monai_swin"),  # learner's swin
    ("vit.", "patch_embedding.", "monai_vit"),  # UNETR's encoder, learner's vit / vit_3d
    ("resnet.", "conv1.", "medicalnet_resnet18"),  # learner's resnet18_3d
)
"""(prefix, the key after it that marks the network, layout): a model whose encoder sits under a prefix."""

FIRST_LAYER: dict[str, tuple[str, str, int]] = {
    "tsm_resnet18": ("conv1.weight", "bn1.running_mean", -1),
    "resnet18_3d": ("resnet.conv1.weight", "resnet.bn1.running_mean", -1),
    "vit": ("vit.patch_embedding.patch_embeddings.weight", "vit.patch_embedding.patch_embeddings.bias", 1),
    "vit_3d": ("vit.patch_embedding.patch_embeddings.weight", "vit.patch_embedding.patch_embeddings.bias", 1),
    "swin": ("swin.patch_embed.proj.weight", "swin.patch_embed.proj.bias", 1),
}
"""Backbone → (first kernel, the tensor the folded mean shifts, +1 added to a bias | −1 subtracted from
the next BatchNorm's running mean)."""


SPATIAL_DIMS: dict[str, int] = {"tsm_resnet18": 2, "resnet18_3d": 3, "vit": 2, "vit_3d": 3, "swin": 2}


@dataclass(frozen=True)
class Conversion:
    """A converted state dict in the encoder's key names, its source layout and the steps taken."""

    state: dict[str, Tensor]
    layout: str
    input_norm: InputNorm | None
    notes: tuple[str, ...]


def convert_state(
    state: Mapping[str, Tensor], encoder: Encoder, *, input_norm: InputNormChoice = "auto",
    narrow: bool = False,
) -> Conversion:  # fmt: skip
    """Map ``state`` (a source state dict) onto ``encoder``'s key names (see the module docstring).

    The result is not checked against the encoder: keys and shapes that still differ are the caller's to
    report (:func:`learner.models.weights.describe_mismatch`).

    Args:
        state: the source's tensors.
        encoder: the learner encoder to initialise (a class of :data:`TARGETS`).
        input_norm: the source's input standardisation to fold into the first layer, or None; ``"auto"``
            takes the layout's (ImageNet for torchvision, none for MedicalNet and MONAI).
        narrow: let a wider ResNet give each tensor its leading channels.

    Raises:
        ValueError: an encoder without a conversion, an unknown layout, a layout that does not fit the
            encoder, or an input norm whose length is not the source's channel count.
    """
    if type(encoder) not in TARGETS:
        raise ValueError(f"no conversion to {type(encoder).__name__}")
    backbone, prefix = TARGETS[type(encoder)]
    layout, keys = detect_layout(state)
    if backbone not in layout.backbones:
        raise ValueError(
            f"a {layout.name} checkpoint cannot initialise {backbone}; "
            f"use model.backbone={' or '.join(layout.backbones)}"
        )
    notes: list[str] = []
    mapped = {prefix + key: value for key, value in _MAPPERS[layout.name](keys, notes).items()}
    expected = encoder.state_dict()
    kernel = mapped.get(FIRST_LAYER[backbone][0])
    dims = SPATIAL_DIMS[backbone]
    if kernel is not None and kernel.ndim - 2 != dims:
        fits = [b for b in layout.backbones if SPATIAL_DIMS[b] == kernel.ndim - 2]
        raise ValueError(
            f"a {kernel.ndim - 2}-D {layout.name} checkpoint ({FIRST_LAYER[backbone][0]} "
            f"{tuple(kernel.shape)}) cannot initialise {backbone}, which is {dims}-D; "
            + (f"use model.backbone={fits[0]}" if fits else "no learner backbone takes it")
        )
    norm = layout.default_norm if input_norm == "auto" else input_norm
    if input_norm == "auto" and norm is not None and (kernel is None or kernel.shape[1] != len(norm.mean)):
        norm = None  # the layout's standardisation only where the source has its channels
    _fold_input(mapped, expected, backbone, norm, notes)
    if narrow and backbone in ("tsm_resnet18", "resnet18_3d") and kernel is not None:
        target = expected[FIRST_LAYER[backbone][0]]
        _narrow(mapped, expected, f"from width {kernel.shape[0]} to {target.shape[0]}", notes)
    if backbone == "resnet18_3d":
        _identity_shortcuts(mapped, expected, encoder, notes)
    if backbone == "vit":
        _resize_position_embedding(mapped, expected, notes)
    return Conversion(mapped, layout.name, norm, tuple(notes))


def detect_layout(state: Mapping[str, Tensor]) -> tuple[Layout, dict[str, Tensor]]:
    """The source's :class:`Layout` and its tensors with wrapper prefixes removed (``module.``,
    ``base_model.``; a SwinUNETR's ``swinViT.``, a UNETR's ``vit.``, learner's ``resnet.`` / ``swin.``).

    Raises:
        ValueError: the keys fit none of :data:`LAYOUTS` (the message names the first key).
    """
    keys = {re.sub(r"^((module|base_model)\.)+", "", key): value for key, value in state.items()}
    for wrapper, marker, layout in WRAPPERS:
        if any(k.startswith(wrapper + marker) for k in keys):
            inner = {k.removeprefix(wrapper): v for k, v in keys.items() if k.startswith(wrapper)}
            return LAYOUTS[layout], inner
    if "patch_embed.proj.weight" in keys:
        return LAYOUTS["monai_swin"], keys
    if any(k.startswith("patch_embedding.") for k in keys):
        return LAYOUTS["monai_vit"], keys
    conv1 = keys.get("conv1.weight", keys.get("conv1.net.weight"))
    if conv1 is not None and conv1.ndim in (4, 5):
        return LAYOUTS["torchvision_resnet18" if conv1.ndim == 4 else "medicalnet_resnet18"], keys
    first = next(iter(state), "")
    raise ValueError(
        f"no known weights layout (first key {first!r}); expected torchvision or MedicalNet ResNet-18 "
        "(conv1.weight), a MONAI ViT / UNETR (patch_embedding.*) or Swin / SwinUNETR (patch_embed.*)"
    )


def _resnet2d(keys: dict[str, Tensor], notes: list[str]) -> dict[str, Tensor]:
    out = {k.replace("conv1.net.", "conv1."): v for k, v in keys.items()}  # reference TSM's shift wrapper
    return _drop(out, ("fc.", "new_fc."), "the classifier", notes)


def _resnet3d(keys: dict[str, Tensor], notes: list[str]) -> dict[str, Tensor]:
    return _drop(keys, ("fc.", "conv_seg."), "the classification / segmentation head", notes)


def _vit(keys: dict[str, Tensor], notes: list[str]) -> dict[str, Tensor]:
    out = _drop(keys, ("cls_token", "classification_head."), "the classification token and head", notes)
    out = {k: v for k, v in out.items() if ".norm_cross_attn." not in k}  # unused by MONAI's ViT
    for key in [k for k in out if k.endswith(".attn.qkv.weight")]:
        bias = key.removesuffix("weight") + "bias"
        if bias not in out:
            out[bias] = torch.zeros(out[key].shape[0], dtype=out[key].dtype)
            if "zero qkv biases (the source has none)" not in notes:
                notes.append("zero qkv biases (the source has none)")
    return out


def _swin(keys: dict[str, Tensor], notes: list[str]) -> dict[str, Tensor]:
    return _drop(keys, ("layers4.0.downsample.",), "the merge after the last stage (Swin-T has none)", notes)


_MAPPERS = {
    "torchvision_resnet18": _resnet2d,
    "medicalnet_resnet18": _resnet3d,
    "monai_vit": _vit,
    "monai_swin": _swin,
}


def _drop(
    keys: dict[str, Tensor], prefixes: tuple[str, ...], what: str, notes: list[str]
) -> dict[str, Tensor]:
    kept = {k: v for k, v in keys.items() if not k.startswith(prefixes)}
    if len(kept) < len(keys):
        notes.append(f"dropped {what} ({', '.join(p.rstrip('.') for p in prefixes)})")
    return kept


def _fold_input(
    state: dict[str, Tensor], expected: Mapping[str, Tensor], backbone: str, norm: InputNorm | None,
    notes: list[str],
) -> None:  # fmt: skip
    """Fold ``norm`` into the first kernel and its bias / BatchNorm mean, then sum RGB to grey if needed."""
    kernel_key, shift_key, sign = FIRST_LAYER[backbone]
    kernel, target = state.get(kernel_key), expected.get(kernel_key)
    if kernel is None or target is None:
        return  # reported as a missing key
    channels = kernel.shape[1]
    if norm is not None:
        if len(norm.mean) not in (1, channels):
            raise ValueError(
                f"input norm {norm.describe()} has {len(norm.mean)} values but the source's first layer "
                f"{kernel_key} takes {channels} channel(s)"
            )
        view = (1, channels) + (1,) * (kernel.ndim - 2)
        mean = torch.tensor(norm.mean, dtype=torch.float64).expand(channels).reshape(view)
        std = torch.tensor(norm.std, dtype=torch.float64).expand(channels).reshape(view)
        weight = kernel.double()
        shift = -(weight * mean / std).sum(dim=tuple(range(1, kernel.ndim)))  # (O,): the folded −mean/std
        state[kernel_key] = (weight / std).to(kernel.dtype)
        if shift_key in state:
            state[shift_key] = (state[shift_key].double() + sign * shift).to(state[shift_key].dtype)
        notes.append(f"input {norm.describe()} folded into {kernel_key} and {shift_key}")
    if channels == 3 and target.shape[1] == 1 and kernel.shape[2:] == target.shape[2:]:
        state[kernel_key] = state[kernel_key].sum(dim=1, keepdim=True)
        notes.append(f"RGB {kernel_key} summed to grey")


def _narrow(state: dict[str, Tensor], expected: Mapping[str, Tensor], widths: str, notes: list[str]) -> None:
    """Every tensor wider than its target keeps its leading entries in each dimension."""
    narrowed = 0
    for key, target in expected.items():
        value = state.get(key)
        if (
            value is not None
            and value.ndim == target.ndim
            and value.shape != target.shape
            and all(t <= s for t, s in zip(target.shape, value.shape, strict=True))
        ):
            state[key] = value[tuple(slice(0, t) for t in target.shape)].clone()
            narrowed += 1
    if narrowed:
        notes.append(f"narrowed {narrowed} tensors {widths}: each layer's first channels")


_DOWNSAMPLE = re.compile(r"^(resnet\.layer\d+\.0\.downsample)\.0\.weight$")


def _identity_shortcuts(
    state: dict[str, Tensor], expected: Mapping[str, Tensor], encoder: Encoder, notes: list[str]
) -> None:
    """Shortcut "A" (strided identity, zero channels appended) as learner's 1×1×1 convolution + BatchNorm."""
    for key, target in expected.items():
        match = _DOWNSAMPLE.match(key)
        if match is None or key in state:
            continue
        block = match.group(1)
        out_planes, in_planes = target.shape[:2]
        weight = torch.zeros(target.shape, dtype=target.dtype)
        weight[torch.arange(in_planes), torch.arange(in_planes)] = 1
        norm = encoder.get_submodule(f"{block}.1")
        eps = float(getattr(norm, "eps", 1e-5))
        state[f"{block}.0.weight"] = weight
        if f"{block}.0.bias" in expected:
            state[f"{block}.0.bias"] = torch.zeros(out_planes)
        state[f"{block}.1.weight"] = torch.ones(out_planes)
        state[f"{block}.1.bias"] = torch.zeros(out_planes)
        state[f"{block}.1.running_mean"] = torch.zeros(out_planes)
        state[f"{block}.1.running_var"] = torch.full((out_planes,), 1.0 - eps)  # var + eps = 1
        state[f"{block}.1.num_batches_tracked"] = torch.tensor(0)
        if not any(note.startswith("shortcut") for note in notes):
            notes.append("shortcut A (identity, zero channels) as 1×1×1 identity convolutions")


def _resize_position_embedding(
    state: dict[str, Tensor], expected: Mapping[str, Tensor], notes: list[str]
) -> None:
    """A 2-D ViT's (1, s², D) position embedding resized bicubically to the encoder's (1, t², D)."""
    key = "vit.patch_embedding.position_embeddings"
    value, target = state.get(key), expected.get(key)
    if value is None or target is None or value.shape == target.shape or value.shape[2] != target.shape[2]:
        return
    source_side, target_side = math.isqrt(value.shape[1]), math.isqrt(target.shape[1])
    if source_side**2 != value.shape[1] or target_side**2 != target.shape[1]:
        return  # not square grids: reported as a shape mismatch
    grid = value.reshape(1, source_side, source_side, -1).permute(0, 3, 1, 2).double()  # (1, D, s, s)
    resized = F.interpolate(grid, size=(target_side, target_side), mode="bicubic", align_corners=False)
    state[key] = resized.permute(0, 2, 3, 1).reshape(target.shape).to(value.dtype)
    notes.append(f"position embedding resized from {source_side}² to {target_side}² tokens (bicubic)")
