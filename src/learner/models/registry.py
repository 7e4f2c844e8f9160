"""The encoder registry (θ_V in Alg. 1): one way to build every backbone, by name.

Each entry is a small factory registered with :func:`register_encoder` *in this module*; the factory
imports its model module lazily, so importing the registry never pulls in MONAI. Every encoder is an
:class:`Encoder`: ``forward(clips (N, T, C, H, W)) -> (N, D)`` with ``D == encoder.embed_dim``.

Example::

    encoder = create_encoder("vit", in_channels=1, size="tiny", img_size=64)
    embeddings = encoder(torch.rand(2, 8, 1, 64, 64))  # (2, encoder.embed_dim)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from learner.config import ModelConfig
from learner.errors import ConfigError

SIZES: tuple[str, ...] = ("tiny", "small", "paper")
"""Size presets every encoder provides: ``tiny`` for CPU tests, ``small``, and the paper-like ``paper``."""

IN_CHANNELS: tuple[int, ...] = (1, 3)


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
        """Per-frame features before the consensus: clips (N, T, C, H, W) → (N, T, D)."""
        if clips.ndim != 5:
            raise ValueError(f"clips must have shape (N, T, C, H, W), got {tuple(clips.shape)}")
        n, t, c, h, w = clips.shape
        if c != self.in_channels:
            raise ConfigError(
                f"{type(self).__name__} was built for {self.in_channels} input channel(s) "
                f"(data.channels) but the clips have {c}"
            )
        frames = clips.reshape(n * t, c, h, w)  # (N·T, C, H, W); reshape, not view: input may be strided
        return self.embed_frames(frames, t).reshape(n, t, -1)

    @abstractmethod
    def embed_frames(self, frames: Tensor, num_frames: int) -> Tensor:
        """Frames (N·T, C, H, W), each clip's ``num_frames`` frames contiguous → features (N·T, D)."""


@dataclass(frozen=True)
class EncoderEntry:
    """A registered encoder: its factory and the build options it takes from the run's config.

    ``options`` names the keyword arguments :func:`build_encoder` forwards (``shift_fraction`` from
    ``model.shift_fraction``, ``img_size`` from the frame size); :func:`create_encoder` callers may pass
    them directly.
    """

    factory: Callable[..., Encoder]
    options: tuple[str, ...]


ENCODERS: dict[str, EncoderEntry] = {}


def register_encoder(
    name: str, *, options: tuple[str, ...] = ()
) -> Callable[[Callable[..., Encoder]], Callable[..., Encoder]]:
    """Register ``factory(*, in_channels, size, **options) -> Encoder`` under ``name``.

    Raises:
        ValueError: ``name`` is registered already (a programming error, not a user one).
    """

    def decorator(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} is registered twice")
        ENCODERS[name] = EncoderEntry(factory=factory, options=options)
        return factory

    return decorator


def available_encoders() -> list[str]:
    """The registered encoder names, sorted."""
    return sorted(ENCODERS)


def create_encoder(name: str, *, in_channels: int = 1, size: str = "paper", **kwargs: Any) -> Encoder:
    """Build the encoder registered as ``name``.

    Args:
        name: a registered name (:func:`available_encoders`).
        in_channels: C of the clips, 1 (grey ultrasound, MRI slices) or 3 (RGB).
        size: a preset from :data:`SIZES`.
        **kwargs: the encoder's own options (``shift_fraction`` for ``tsm_resnet18``, ``img_size`` for
            ``vit`` and ``swin``).

    Raises:
        ConfigError: unknown name (the message lists the available ones), channels or size.
    """
    if name not in ENCODERS:
        raise ConfigError(
            f"unknown encoder {name!r} (model.backbone); available: {', '.join(available_encoders())}"
        )
    if in_channels not in IN_CHANNELS:
        raise ConfigError(f"in_channels must be 1 or 3 (data.channels), got {in_channels}")
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r} (model.size); available: {', '.join(SIZES)}")
    return ENCODERS[name].factory(in_channels=in_channels, size=size, **kwargs)


def build_encoder(model_cfg: ModelConfig, in_channels: int, *, img_size: int = 112) -> Encoder:
    """Build ``model_cfg.backbone`` and load ``model_cfg.init`` weights when set.

    Args:
        model_cfg: the ``model`` config section (backbone, size, init, shift_fraction).
        in_channels: C of the clips (``data.channels``).
        img_size: H = W of the frames (``data.size``); the transformers are built for it.

    Raises:
        ConfigError: as :func:`create_encoder`.
        CheckpointError: ``model_cfg.init`` is unreadable or does not match the encoder.
    """
    offered: dict[str, Any] = {"shift_fraction": model_cfg.shift_fraction, "img_size": img_size}
    entry = ENCODERS.get(model_cfg.backbone)
    options = {key: offered[key] for key in entry.options} if entry else {}
    encoder = create_encoder(model_cfg.backbone, in_channels=in_channels, size=model_cfg.size, **options)
    if model_cfg.init is not None:
        from learner.models.weights import load_init_weights

        load_init_weights(encoder, model_cfg.init)
    return encoder


@register_encoder("tsm_resnet18", options=("shift_fraction",))
def tsm_resnet18(*, in_channels: int, size: str, shift_fraction: float = 0.125) -> Encoder:
    """TSM with a ResNet-18 backbone (Section 2.2); ``paper`` is the ImageNet layout, D = 512."""
    from learner.models.tsm_resnet import TSMResNet18

    return TSMResNet18(in_channels=in_channels, size=size, shift_fraction=shift_fraction)


@register_encoder("vit", options=("img_size",))
def vit(*, in_channels: int, size: str, img_size: int = 112) -> Encoder:
    """MONAI ViT applied per frame, tokens averaged (Table 4 "ViT"); ``paper`` is ViT-B/16-like."""
    from learner.models.monai_backbones import ViTEncoder

    return ViTEncoder(in_channels=in_channels, size=size, img_size=img_size)


@register_encoder("swin", options=("img_size",))
def swin(*, in_channels: int, size: str, img_size: int = 112) -> Encoder:
    """MONAI Swin Transformer applied per frame (Table 4 "Swin"); ``paper`` is Swin-T-like."""
    from learner.models.monai_backbones import SwinEncoder

    return SwinEncoder(in_channels=in_channels, size=size, img_size=img_size)
