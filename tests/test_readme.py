"""The README stays true: its two set-up commands, and a CLI reference that names every command."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from learner.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
CI = Path(__file__).resolve().parents[1] / ".ci" / "run"


def _command_paths(command: object, prefix: tuple[str, ...] = ("learner",)) -> list[str]:
    children = getattr(command, "commands", None)
    if not children:
        return [" ".join(prefix)]
    return [path for name, child in children.items() for path in _command_paths(child, (*prefix, name))]


def test_cli_reference_names_every_command() -> None:
    text = README.read_text(encoding="utf-8")
    paths = _command_paths(typer.main.get_command(app))
    assert len(paths) >= 15
    missing = [path for path in paths if f"`{path}" not in text]
    assert not missing, f"README's CLI reference lacks {missing}"


def test_ci_runs_the_readme_install_and_test_commands() -> None:
    blocks = re.findall(r"```bash\n(.*?)\n```", README.read_text(encoding="utf-8"), flags=re.S)
    setup = [b for b in blocks if b.startswith("python3.11 -m venv .venv")]
    assert len(setup) == 2, "the README shows exactly two set-up commands"
    demo, tests = setup
    assert demo.endswith("learner demo")
    install = re.search(r"pip install .*?(?= &&)", tests).group(0)
    test_command = tests.rsplit("&& ", 1)[1]
    ci = CI.read_text(encoding="utf-8").splitlines()
    assert install in ci
    assert test_command in ci
