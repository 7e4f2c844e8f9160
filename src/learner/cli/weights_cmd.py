"""``learner weights convert``: a downloaded weights file (e.g. torchvision ResNet-18) → ``--init`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from learner.cli.options import ConfigOption, SetOption, config_from_options

weights_app = typer.Typer(
    help="Initial encoder weights for --init (model.init): convert local files; nothing is downloaded.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``weights`` command group to the ``learner`` app."""
    app.add_typer(weights_app, name="weights")


@weights_app.command("convert")
def convert(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="SRC", help="Weights file: .pth/.pt (read with weights_only=True) or .safetensors."
        ),
    ],
    target: Annotated[
        Path, typer.Argument(metavar="DST", help="The .safetensors file to write.", show_default=False)
    ],
    config: ConfigOption = None,
    sets: SetOption = None,
    backbone: Annotated[
        str | None, typer.Option("--backbone", help="Encoder to check against (model.backbone).")
    ] = None,
    channels: Annotated[
        int | None, typer.Option("--channels", help="1 (grey: RGB kernels summed) or 3 (data.channels).")
    ] = None,
    input_norm: Annotated[
        str,
        typer.Option(
            "--input-norm",
            help="The source's input standardisation, folded into the first layer: auto (ImageNet for "
            "torchvision, none otherwise), none, imagenet, or MEAN,…/STD,… (e.g. 0.5,0.5,0.5/0.5,0.5,0.5).",
        ),
    ] = "auto",
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Overwrite an existing DST (the --force of embed and export; never SRC itself)."
        ),
    ] = False,
) -> None:
    """Convert SRC into DST, the safetensors --init reads: torchvision ResNet-18 (tsm_resnet18, any
    model.size), MedicalNet / MONAI 3-D ResNet-18 (resnet18_3d), MONAI ViT or UNETR (vit, vit_3d), MONAI
    Swin or SwinUNETR (swin).

    Keys are mapped to the encoder's, heads dropped, the source's input standardisation folded into the
    first layer and an RGB first layer summed to grey when the encoder takes 1 channel; a wider ResNet
    keeps each layer's first channels. Every tensor must then match the encoder of the config
    (model.backbone, model.size, data.channels, data.size, data.frames). DST is written atomically and
    its metadata records the steps; an existing DST is replaced only with --force.
    """
    from learner import api
    from learner.models.weights import conversion_record

    cfg = config_from_options(config, sets, **{"model.backbone": backbone, "data.channels": channels})
    converted = api.convert_weights(source, target, config=cfg, input_norm=input_norm, force=force)
    record = conversion_record(converted.path)
    typer.echo(
        f"wrote {target}: {converted.tensors} tensors of {converted.backbone} ({converted.size}, "
        f"{converted.channels} channel(s)) from {record.get('source_layout', '?')} weights; "
        f"input norm folded: {record.get('input_norm', '?')}; steps: {record.get('steps', '?')}; "
        f"use it with --init {target}"
    )
