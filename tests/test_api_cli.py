"""API = CLI: every ``learner`` command has a typed function in :mod:`learner.api` (``api.COMMANDS``) and
calls it; the package ships ``py.typed``; docs/python.md's examples pass mypy."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import typer.main

from learner import api
from learner.cli import app, data_cmd
from learner.config import Config
from learner.errors import LearnerError

ROOT = Path(__file__).resolve().parents[1]
PYTHON_DOC = ROOT / "docs" / "python.md"


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    """Every leaf command below ``command`` as (its path, e.g. ``"data check"``, the command)."""
    children = getattr(command, "commands", {})
    if not children and path:
        yield " ".join(path), command
    for name, child in children.items():
        yield from _commands(child, (*path, name))


CLI_COMMANDS = dict(_commands(typer.main.get_command(app)))


def _type_namespace() -> dict[str, Any]:
    """``learner.api``'s globals plus what it imports only for type checking (its ``if TYPE_CHECKING:``)."""
    namespace = dict(vars(api))
    tree = ast.parse(Path(inspect.getfile(api)).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            exec(compile(ast.Module(body=node.body, type_ignores=[]), "api", "exec"), namespace)
    return namespace


def test_every_command_has_its_api_function() -> None:
    assert set(CLI_COMMANDS) == set(api.COMMANDS)
    assert {function.__name__ for function in api.COMMANDS.values()} <= set(api.__all__)
    for name in api.__all__:
        assert hasattr(api, name), name


@pytest.mark.parametrize("command", sorted(api.COMMANDS))
def test_the_api_function_is_typed_and_documented(command: str) -> None:
    function = api.COMMANDS[command]
    assert function.__module__ == "learner.api"
    assert inspect.getdoc(function), f"{function.__name__} has no docstring"
    signature = inspect.signature(function)
    assert signature.return_annotation is not inspect.Signature.empty, function.__name__
    unannotated = [p.name for p in signature.parameters.values() if p.annotation is inspect.Parameter.empty]
    assert not unannotated, f"{function.__name__}: {unannotated} without a type"
    hints = typing.get_type_hints(function, globalns=_type_namespace())  # every annotation resolves
    assert set(hints) == {*signature.parameters, "return"}
    assert hints["return"] is not type(None)  # it returns the command's record
    # options are keyword-only, as on the command line: only the inputs (paths, objects) are positional
    positional = [p for p in signature.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert len(positional) <= 4, f"{function.__name__}: make its options keyword-only"


@pytest.mark.parametrize("command", sorted(CLI_COMMANDS))
def test_the_command_module_calls_its_api_function(command: str) -> None:
    callback = CLI_COMMANDS[command].callback
    assert callback is not None
    source = inspect.getsource(sys.modules[callback.__module__])  # typer wraps the callback
    name = api.COMMANDS[command].__name__
    assert re.search(rf"\bapi\.{name}\b", source), f"{callback.__module__} does not use api.{name}"


ARGUMENTS: dict[str, Callable[[Path], list[str]]] = {
    "pretrain": lambda tmp: ["--out", str(tmp / "run")],
    "embed": lambda tmp: [str(tmp / "run"), "--device", "cpu"],
    "classify": lambda tmp: [str(tmp / "run"), "--out", str(tmp / "classifier"), "--device", "cpu"],
    "predict": lambda tmp: ["--encoder", "e", "--classifier", "c", "a.mp4", "b.mp4", "--device", "cpu"],
    "export": lambda tmp: [str(tmp / "run"), "--out", str(tmp / "export")],
    "demo": lambda tmp: ["--out", str(tmp / "demo")],
    "report": lambda tmp: [str(tmp / "run")],
    "track": lambda tmp: [str(tmp / "run")],
    "data check": lambda tmp: ["manifest.csv"],
    "data split": lambda tmp: ["manifest.csv", "--out", str(tmp / "split.csv")],
    "data adni": lambda tmp: ["--adnimerge", "a.csv", "--images", "images", "--out", str(tmp / "m.csv")],
    "data cache": lambda tmp: ["manifest.csv"],
    "phantom lus": lambda tmp: [str(tmp / "lus")],
    "phantom mri": lambda tmp: [str(tmp / "mri")],
    "phantom preview": lambda tmp: [str(tmp / "preview.png")],
    "weights convert": lambda tmp: ["resnet18.pth", str(tmp / "init.safetensors")],
    "experiment table3": lambda tmp: ["--out", str(tmp / "grid")],
    "experiment ablation": lambda tmp: ["--out", str(tmp / "grid")],
    "experiment sweep": lambda tmp: ["--out", str(tmp / "grid")],
    "experiment ceiling": lambda tmp: ["manifest.csv", "--out", str(tmp / "ceiling")],
    "config show": lambda tmp: [],
    "config docs": lambda tmp: ["--out", str(tmp / "config.md")],
}
"""The fewest arguments with which each command reaches its API function."""


class Reached(LearnerError):
    """Raised by a stand-in API function: the command got as far as calling it."""


def test_every_command_has_arguments_here() -> None:
    assert set(ARGUMENTS) == set(CLI_COMMANDS)


@pytest.mark.parametrize("command", sorted(ARGUMENTS))
def test_the_command_calls_its_api_function(
    command: str,
    cli: Callable[[list[str]], tuple[int, str, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    name = api.COMMANDS[command].__name__
    calls: list[dict[str, Any]] = []

    def stand_in(*args: Any, **kwargs: Any) -> None:
        calls.append(kwargs)
        raise Reached(f"api.{name} reached")

    monkeypatch.setattr(api, name, stand_in)
    # what the commands read before the call, for files these arguments do not provide
    monkeypatch.setattr(data_cmd, "_load_or_list_problems", lambda *args: object())
    monkeypatch.setattr("learner.runs.load_run_config", lambda *args, **kwargs: Config())
    monkeypatch.setattr("learner.cli.evaluate_cmd._load_manifest", lambda *args: object())
    monkeypatch.setattr(
        "learner.evaluation.embed.embedding_cache_path", lambda *a, **k: (tmp_path / "cache.npz", "")
    )
    monkeypatch.setattr("learner.evaluation.classifier_caveat.classifier_caveat", lambda *args: None)
    code, _, err = cli([*command.split(), *ARGUMENTS[command](tmp_path)])
    assert f"error: api.{name} reached" in err, err
    assert code != 0
    assert len(calls) == 1


def test_config_commands_print_what_the_api_returns(
    cli: Callable[[list[str]], tuple[int, str, str]], tmp_path: Path
) -> None:
    code, out, _ = cli(["config", "show", "--set", "optim.epochs=3", "--set", "experiment.seeds=[4]"])
    assert code == 0
    assert out == api.show_config(None, ["optim.epochs=3", "experiment.seeds=[4]"])
    assert out == api.show_config(overrides={"optim.epochs": 3, "experiment.seeds": [4]})
    written = api.write_config_docs(tmp_path / "config.md")
    code, out, _ = cli(["config", "docs", "--out", str(tmp_path / "cli.md")])
    assert out == f"config reference: {tmp_path / 'cli.md'}\n"
    assert (tmp_path / "cli.md").read_text() == written.read_text()


def test_the_wheel_ships_py_typed() -> None:
    from importlib.resources import files

    assert files("learner").joinpath("py.typed").is_file()
    import tomllib

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["learner"]


def test_the_docs_give_commands_only_options_they_have() -> None:
    """Every ``learner …`` command line of README.md and docs/ names only options its command takes: an
    OUT_DIR argument written as ``--out`` fails as "No such option"."""
    wrong = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for line_number, line in enumerate(text.splitlines(), start=1):
            for match in re.finditer(r"\blearner ([a-z]+(?: [a-z]+)?)([^`|#]*)", line):
                words = match.group(1).split()
                name = next(
                    (" ".join(words[:n]) for n in (2, 1) if " ".join(words[:n]) in CLI_COMMANDS), None
                )
                if name is None:
                    continue
                options = {
                    o for param in CLI_COMMANDS[name].params for o in (*param.opts, *param.secondary_opts)
                }
                given = re.findall(r"(?<![\w-])--[a-z][a-z-]*", match.group(0))
                wrong += [f"{page.name}:{line_number}: learner {name} {o}" for o in given if o not in options]
    assert not wrong, wrong


@pytest.mark.slow
def test_the_python_page_passes_mypy(tmp_path: Path) -> None:
    """docs/python.md's code blocks, as one module, type-check against the installed package (PEP 561)."""
    blocks = re.findall(r"```python\n(.*?)\n```", PYTHON_DOC.read_text(encoding="utf-8"), flags=re.S)
    example = tmp_path / "python_md.py"
    example.write_text("\n".join(blocks) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(example)]
    checked = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
