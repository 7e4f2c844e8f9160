"""Typer options shared by the command modules, and the one way a command builds its :class:`Config`.

Precedence, lowest first: the paper's defaults, the ``--config`` YAML file, each ``--set key.sub=value``,
then a command's own flags (``--scale``, ``--seed``, …) passed to :func:`config_from_options`. Example::

    @app.command()
    def check(config: ConfigOption = None, sets: SetOption = None, scale: ScaleOption = None) -> None:
        cfg = config_from_options(config, sets, **{"data.scale": scale})
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from learner.config import Config, apply_overrides, load_config

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file; unset keys keep the paper's defaults.", show_default=False
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override one config key, e.g. --set data.pairs.per_scan=3 (repeatable).",
        show_default=False,
    ),
]
ScaleOption = Annotated[
    str | None,
    typer.Option(
        "--scale",
        help="Score scale: sf, mmse, mmse_binned or custom (default: data.scale).",
        show_default=False,
    ),
]

ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Replace what is already at --out (in a folder: the files of the same names); one of the "
        "command's inputs is refused even so.",
    ),
]
"""``--force`` of the commands that write to a file or folder the user names (``embed``, ``predict``,
``export``): the rule is :func:`learner.atomic.check_outputs`."""


def config_from_options(config: Path | None, sets: list[str] | None, **explicit: Any) -> Config:
    """Defaults ← ``config`` file ← ``sets`` ← ``explicit`` (dotted key → value; None means "not given")."""
    resolved = load_config(config, sets or [])
    given = {key: value for key, value in explicit.items() if value is not None}
    return apply_overrides(resolved, given) if given else resolved
