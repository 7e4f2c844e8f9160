"""The encoder registry (θ_V in Alg. 1): one table of backbones, built by name or from the run's config.

:data:`ENCODERS` maps a name to an :class:`EncoderSpec`: its :class:`~learner.models.encoder.Encoder`
class, which takes ``(*, in_channels, size, **options)``, and the names of the options it takes from the
run's config (:data:`CONFIG_OPTIONS`). :func:`create_encoder` builds one from plain arguments and raises
``ValueError`` on bad ones; :func:`build_encoder` and :func:`build_regressor` build from the ``model``
config section and raise :class:`~learner.errors.ConfigError` naming the config key to change.

Example::

    encoder = create_encoder("vit", in_channels=1, size="tiny", img_size=64)
    embeddings = encoder(torch.rand(2, 8, 1, 64, 64))  # (2, encoder.embed_dim)
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from learner.config import ModelConfig
from learner.errors import ConfigError
from learner.models.encoder import IN_CHANNELS, SIZES, Encoder
from learner.models.heads import RegressionHead, ScoreRegressor
from learner.models.monai_backbones import SwinEncoder, ViTEncoder
from learner.models.tsm_resnet import TSMResNet18
from learner.models.volume_backbones import ResNet18VolumeEncoder, ViTVolumeEncoder
from learner.models.weights import load_init_weights

CONFIG_OPTIONS: dict[str, str] = {
    "shift_fraction": "model.shift_fraction",
    "img_size": "data.size",
    "num_frames": "data.frames",
    "norm": "model.norm",
}
"""Encoder option → the config key :func:`build_encoder` takes it from."""


@dataclass(frozen=True)
class EncoderSpec:
    """A registered backbone: its class and the :data:`CONFIG_OPTIONS` it is built with."""

    encoder: type[Encoder]
    options: tuple[str, ...] = ()


ENCODERS: dict[str, EncoderSpec] = {
    "tsm_resnet18": EncoderSpec(TSMResNet18, ("shift_fraction", "norm")),  # TSM, ResNet-18 (Section 2.2)
    "vit": EncoderSpec(ViTEncoder, ("img_size",)),  # MONAI ViT per frame (Table 4 "ViT")
    "swin": EncoderSpec(SwinEncoder, ("img_size",)),  # MONAI Swin per frame (Table 4 "Swin")
    "resnet18_3d": EncoderSpec(ResNet18VolumeEncoder),  # MONAI 3-D ResNet-18, slices as depth
    "vit_3d": EncoderSpec(ViTVolumeEncoder, ("img_size", "num_frames")),  # MONAI ViT on the volume
}


def available_encoders() -> list[str]:
    """The registered encoder names, sorted."""
    return sorted(ENCODERS)


def create_encoder(name: str, *, in_channels: int = 1, size: str = "paper", **kwargs: Any) -> Encoder:
    """Build the encoder registered as ``name``.

    Args:
        name: a key of :data:`ENCODERS`.
        in_channels: C of the clips, one of :data:`~learner.models.encoder.IN_CHANNELS`.
        size: a preset from :data:`~learner.models.encoder.SIZES`.
        **kwargs: the encoder's own options (its :attr:`EncoderSpec.options`: ``shift_fraction`` for
            ``tsm_resnet18``, ``img_size`` for ``vit`` and ``swin``, both ``img_size`` and ``num_frames``
            for ``vit_3d``).

    Raises:
        ValueError: unknown name, channel count or size (the message lists the available ones), an option
            the encoder does not take (the message lists those it takes), or one it rejects.
    """
    _check_choices((("encoder", name, ENCODERS), ("in_channels", in_channels, IN_CHANNELS),
                    ("size", size, SIZES)), ValueError)  # fmt: skip
    spec = ENCODERS[name]
    if unknown := sorted(set(kwargs) - set(spec.options)):
        takes = ", ".join(spec.options) or "no options"
        raise ValueError(f"encoder {name!r} takes no option {unknown[0]!r}; it takes: {takes}")
    return spec.encoder(in_channels=in_channels, size=size, **kwargs)


def build_encoder(
    model_cfg: ModelConfig, in_channels: int, *, img_size: int = 112, frames: int = 8
) -> Encoder:
    """Build ``model_cfg.backbone`` and load ``model_cfg.init`` weights when set.

    Args:
        model_cfg: the ``model`` config section (backbone, size, init, shift_fraction).
        in_channels: C of the clips (``data.channels``).
        img_size: H = W of the frames (``data.size``); the transformers are built for it.
        frames: T of the clips (``data.frames``); ``vit_3d`` is built for it.

    Raises:
        ConfigError: an unknown ``model.backbone``, ``model.size`` or ``data.channels``, or a ``data.size``
            or ``data.frames`` the backbone cannot take (one line naming the keys).
        CheckpointError: ``model_cfg.init`` (a weights file, or a learner run whose ``checkpoints/best``
            encoder is taken) is unreadable or does not match the encoder.
    """
    backbone = model_cfg.backbone
    _check_choices((("model.backbone", backbone, ENCODERS), ("data.channels", in_channels, IN_CHANNELS),
                    ("model.size", model_cfg.size, SIZES)), ConfigError)  # fmt: skip
    check_norm(model_cfg)
    values: dict[str, Any] = {
        "shift_fraction": model_cfg.shift_fraction,
        "img_size": img_size,
        "num_frames": frames,
        "norm": model_cfg.norm,
    }
    options = {name: values[name] for name in ENCODERS[backbone].options}
    try:
        encoder = create_encoder(backbone, in_channels=in_channels, size=model_cfg.size, **options)
    except ValueError as exc:
        given = ", ".join(f"{CONFIG_OPTIONS[name]}={value}" for name, value in options.items())
        raise ConfigError(f"model.backbone={backbone!r} with {given or 'its defaults'}: {exc}") from None
    encoder.set_embedding_norm(model_cfg.embed_norm)  # before the init weights: a LayerNorm's are in them
    if model_cfg.init is not None:
        load_init_weights(encoder, model_cfg.init, backbone=backbone)
    return encoder


NORM_BACKBONES: frozenset[str] = frozenset(name for name, spec in ENCODERS.items() if "norm" in spec.options)
"""The backbones whose normalisation ``model.norm`` chooses; the others keep their own (``batch``)."""


def check_norm(model_cfg: ModelConfig) -> None:
    """Refuse a ``model.norm`` other than ``batch`` on a backbone that has no choice of normalisation.

    Raises:
        ConfigError: one line naming both keys and the backbones that take the option.
    """
    if model_cfg.norm != "batch" and model_cfg.backbone not in NORM_BACKBONES:
        raise ConfigError(
            f"model.norm={model_cfg.norm!r} is not supported by model.backbone={model_cfg.backbone!r} "
            f"(its normalisation is its own; model.norm applies to {', '.join(sorted(NORM_BACKBONES))})"
        )


def build_regressor(
    model_cfg: ModelConfig, in_channels: int, img_size: int, *, frames: int = 8
) -> ScoreRegressor:
    """The pretraining model of Fig. 2: encoder θ_V (:func:`build_encoder`) + regression head θ_M.

    Args:
        model_cfg: the ``model`` config section (the head from ``head_hidden`` and ``dropout``).
        in_channels: C of the clips (``data.channels``).
        img_size: H = W of the frames (``data.size``).
        frames: T of the clips (``data.frames``).

    Returns:
        clips (N, T, C, H, W) → (embeddings (N, D), standardised score predictions (N,)).

    Raises:
        ConfigError, CheckpointError: as :func:`build_encoder`.
    """
    encoder = build_encoder(model_cfg, in_channels, img_size=img_size, frames=frames)
    return ScoreRegressor(
        encoder, RegressionHead(encoder.embed_dim, model_cfg.head_hidden, model_cfg.dropout)
    )


def _check_choices(choices: tuple[tuple[str, object, Collection[Any]], ...], error: type[Exception]) -> None:
    """Raise ``error("unknown <what> <value>; available: …")`` for the first value not among its choices."""
    for what, value, allowed in choices:
        if value not in allowed:
            listed = ", ".join(str(choice) for choice in sorted(allowed, key=str))
            raise error(f"unknown {what} {value!r}; available: {listed}")
