"""TSM-ResNet-18: the paper's video encoder (Section 2.2; Lin et al., "TSM: Temporal Shift Module", 2019).

A 2-D ResNet-18 (BasicBlock, layers 2-2-2-2, 7×7 stride-2 stem, max-pool, global average pool) runs on
the frames of every clip laid out as (N·T, C, H, W), each clip's frames contiguous. Before ``conv1`` of
every BasicBlock the residual branch is temporally shifted (TSM's "blockres" placement), so a 2-D network
mixes information between neighbouring frames at no extra FLOPs. The per-frame features are averaged
over T (the consensus).

Parameter names follow the common ResNet-18 state-dict layout (``conv1.weight``, ``bn1.*``,
``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, ``downsample.1.*``; no ``fc``), so ImageNet
weights load with :func:`learner.models.weights.load_init_weights`. The ``paper`` size is that layout
(D = 512); ``small`` and ``tiny`` keep the layout at 1/2 and 1/4 of the width for quick runs and tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learner.models.encoder import FrameEncoder

WIDTHS: dict[str, int] = {"tiny": 16, "small": 32, "paper": 64}
"""Channels of the stem and ``layer1`` per size preset; each later stage doubles them."""

GROUPS = 32
"""GroupNorm's groups (Wu & He 2018's default); a layer with fewer channels gets one group per channel."""


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its stored ``running_mean`` / ``running_var`` and never updates
    them, in training as in evaluation; its affine ``weight`` and ``bias`` still train. Train and eval
    therefore compute the same function. The statistics are those loaded with ``model.init`` (from scratch:
    mean 0, variance 1, i.e. only the learned per-channel scale and shift). Same state-dict keys as
    :class:`torch.nn.BatchNorm2d`, so weights move freely between the two."""

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) → (N, C, H, W), normalised with the stored statistics."""
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm over ``min(GROUPS, channels)`` groups (the widths are powers of two, so they divide)."""
    return nn.GroupNorm(min(GROUPS, channels), channels)


NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,  # the paper's (ResNet's) choice
    "group": group_norm,  # independent of the batch: train and eval compute the same function
    "frozen_bn": FrozenBatchNorm2d,  # stored statistics only (for model.init weights)
}
"""``model.norm`` → the normalisation layer after every convolution, built from its channel count."""


def temporal_shift(frames: Tensor, num_frames: int, fold: int) -> Tensor:
    """Shift ``fold`` channels one frame back and the next ``fold`` one frame forward, zero-padded.

    Out-of-place, per clip: ``out[t, :fold] = x[t + 1, :fold]`` (zero at the last frame),
    ``out[t, fold:2fold] = x[t − 1, fold:2fold]`` (zero at the first frame), the other channels unchanged;
    frames never move across clips (the reference TSM ``shift``).

    The shift is linear, so its gradient is the opposite shift (:class:`_TemporalShift`): the backward
    pass writes one tensor instead of autograd's full-size zero tensor per sliced copy, which made the
    shift cost up to 18% of a training step at 112 px (BENCHMARKS.md). Outputs and gradients equal
    the plain slicing form exactly (tests/models/test_models_tsm_resnet.py).

    A clip of one frame (T = 1: a still image, a radiograph) has no neighbour to shift from, so it passes
    unchanged: the network is then a plain 2-D ResNet-18, instead of one that zeroes 2·fold channels of
    every block.

    Args:
        frames: (N·T, C, H, W), each clip's ``num_frames`` frames contiguous.
        num_frames: T.
        fold: channels shifted each way; ``2·fold ≤ C``.

    Returns:
        (N·T, C, H, W), the same layout.
    """
    if fold == 0 or num_frames == 1:
        return frames
    if not (torch.is_grad_enabled() and frames.requires_grad) or torch.jit.is_tracing():  # type: ignore[attr-defined,no-untyped-call]
        return _shift(frames, num_frames, fold, reverse=False)  # no backward: traced/exported as plain ops
    shifted: Tensor = _TemporalShift.apply(frames, num_frames, fold, False)  # type: ignore[no-untyped-call]
    return shifted


def _shift(frames: Tensor, num_frames: int, fold: int, reverse: bool) -> Tensor:
    """:func:`temporal_shift` (``reverse`` False) or its adjoint, the opposite shift (``reverse`` True),
    written once into an uninitialised tensor: every element is set exactly once."""
    nt, c, h, w = frames.shape
    x = frames.reshape(nt // num_frames, num_frames, c, h, w)  # (N, T, C, H, W)
    back, forward = slice(0, fold), slice(fold, 2 * fold)  # channels taken from t + 1, from t − 1
    if reverse:
        back, forward = forward, back
    out = torch.empty_like(x)
    out[:, :-1, back] = x[:, 1:, back]
    out[:, -1, back] = 0
    out[:, 1:, forward] = x[:, :-1, forward]
    out[:, 0, forward] = 0
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.reshape(nt, c, h, w)


class _TemporalShift(torch.autograd.Function):
    """The shift with its adjoint as the backward pass (itself a shift, so twice differentiable)."""

    @staticmethod
    def forward(ctx: Any, frames: Tensor, num_frames: int, fold: int, reverse: bool) -> Tensor:
        ctx.adjoint = (num_frames, fold, not reverse)
        return _shift(frames, num_frames, fold, reverse)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        adjoint: Tensor = _TemporalShift.apply(grad, *ctx.adjoint)  # type: ignore[no-untyped-call]
        return adjoint, None, None, None


class BasicBlock(nn.Module):
    """ResNet BasicBlock with the temporal shift on its residual branch (shift → conv1 → conv2, + identity).

    Args:
        inplanes: input channels.
        planes: output channels.
        stride: stride of ``conv1`` (and of the 1×1 downsample when present).
        shift_fraction: fraction of ``inplanes`` shifted each way (fold = ⌊inplanes·fraction⌋).
        norm: builds the normalisation layer of a channel count (a value of :data:`NORM_LAYERS`).
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        shift_fraction: float,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.fold = int(inplanes * shift_fraction)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), norm(planes)
            )

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        """(N·T, inplanes, H, W) → (N·T, planes, H/stride, W/stride)."""
        out = temporal_shift(x, num_frames, self.fold)
        out = F.relu(self.bn1(self.conv1(out)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class TSMResNet18(FrameEncoder):
    """TSM-ResNet-18 encoder: clips (N, T, C, H, W) → (N, D), D = 8·width (512 for ``paper``).

    Args:
        in_channels: C, 1 or 3.
        size: ``tiny`` | ``small`` | ``paper`` (base width 16 | 32 | 64).
        shift_fraction: fraction of channels shifted each way in every block (TSM default 1/8; 0 turns
            the network into a per-frame 2-D ResNet-18).
        norm: the normalisation layers, a key of :data:`NORM_LAYERS` (``model.norm``; the parameter names
            stay ``bn1``, ``bn2``, ``downsample.1`` whichever it is).
    """

    def __init__(
        self, *, in_channels: int, size: str = "paper", shift_fraction: float = 0.125, norm: str = "batch"
    ) -> None:
        super().__init__()
        if not 0.0 <= shift_fraction <= 0.5:
            raise ValueError(f"shift_fraction must be in [0, 0.5], got {shift_fraction}")
        if norm not in NORM_LAYERS:
            raise ValueError(f"unknown norm {norm!r}; available: {', '.join(NORM_LAYERS)}")
        width, norm_layer = WIDTHS[size], NORM_LAYERS[norm]
        self.in_channels = in_channels
        self.embed_dim = 8 * width
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(width, width, 1, shift_fraction, norm_layer)
        self.layer2 = self._stage(width, 2 * width, 2, shift_fraction, norm_layer)
        self.layer3 = self._stage(2 * width, 4 * width, 2, shift_fraction, norm_layer)
        self.layer4 = self._stage(4 * width, 8 * width, 2, shift_fraction, norm_layer)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(
        inplanes: int, planes: int, stride: int, shift_fraction: float, norm: Callable[[int], nn.Module]
    ) -> nn.Sequential:
        return nn.Sequential(
            BasicBlock(inplanes, planes, stride, shift_fraction, norm),
            BasicBlock(planes, planes, 1, shift_fraction, norm),
        )

    def embed_frames(self, frames: Tensor, num_frames: int) -> Tensor:
        """Frames (N·T, C, H, W), clip-major → per-frame features (N·T, D)."""
        x: Tensor = self.maxpool(F.relu(self.bn1(self.conv1(frames))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x = block(x, num_frames)
        return x.mean(dim=(2, 3))  # global average pool: (N·T, D)
