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
) -> None:
    """Convert SRC (e.g. torchvision's resnet18-f37072fd.pth) into DST, the safetensors --init reads.

    Keys are normalised as model.init does (module./base_model. stripped, fc.* dropped), an RGB input
    kernel is summed to grey when the encoder takes 1 channel, and every tensor must match the encoder of
    the config (model.backbone, model.size, data.channels, data.size). DST is written atomically.
    """
    from learner import api

    cfg = config_from_options(config, sets, **{"model.backbone": backbone, "data.channels": channels})
    converted = api.convert_weights(source, target, config=cfg)
    typer.echo(
        f"wrote {target}: {converted.tensors} tensors of {converted.backbone} ({converted.size}, "
        f"{converted.channels} channel(s)); use it with --init {target}"
    )
