"""``learner config show | docs``: a resolved config with each key's description, and the config reference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from learner.cli.options import ConfigOption, SetOption

config_app = typer.Typer(
    help="The configuration: show a resolved config with descriptions, or write docs/config.md.",
    no_args_is_help=True,
)

DEFAULT_DOCS = Path("docs") / "config.md"


def register(app: typer.Typer) -> None:
    """Add the ``config`` group to the ``learner`` app."""
    app.add_typer(config_app, name="config")


@config_app.command("show")
def show_command(config: ConfigOption = None, sets: SetOption = None) -> None:
    """Print the resolved config (defaults ← --config ← --set) as YAML, each key's description above it.

    The experiment grid (experiment:) is shown when the file has one or a --set names it.
    """
    from learner import api

    typer.echo(api.show_config(config, sets or []), nl=False)


@config_app.command("docs")
def docs_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the reference.")] = DEFAULT_DOCS,
) -> None:
    """Write the config reference (every key, type, default, description) generated from the code."""
    from learner import api

    typer.echo(f"config reference: {api.write_config_docs(out)}")
