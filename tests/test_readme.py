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


def test_cli_reference_lists_every_option_of_every_command() -> None:
    """Each command's "Options:" line under its entry names every option it takes (a flag pair such as
    ``--skip-bad/--no-skip-bad`` once, in either spelling) and none it does not."""
    lines = README.read_text(encoding="utf-8").splitlines()
    wrong = []
    for path in _command_paths(typer.main.get_command(app)):
        command = typer.main.get_command(app)
        for name in path.split()[1:]:
            command = command.commands[name]  # type: ignore[attr-defined]
        entry = next(i for i, line in enumerate(lines) if line.startswith(f"- `{path}"))
        listed = (
            set(re.findall(r"--[a-z][a-z-]*", lines[entry + 1])) if "Options:" in lines[entry + 1] else set()
        )
        for param in command.params:
            spellings = {
                o for o in (*param.opts, *param.secondary_opts) if o.startswith("--") and o != "--help"
            }
            if spellings and not spellings & listed:
                wrong.append(f"{path}: {sorted(spellings)[0]} not listed")
            listed -= spellings
        wrong += [f"{path}: {option} listed but not an option" for option in sorted(listed)]
    assert not wrong, wrong


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


def _github_anchors(markdown: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown``: lower case, punctuation dropped, spaces to
    hyphens, ``-1``, ``-2`` … after a repeated heading; headings inside code fences are not headings."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.read_text(encoding="utf-8").splitlines():
        fenced ^= line.startswith("```")
        heading = None if fenced else re.match(r"#{1,6} (.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_every_relative_link_of_the_docs_reaches_its_file_and_heading() -> None:
    root = README.parent
    documents = [README, root / "BENCHMARKS.md", *root.glob("docs/*.md"), *root.glob("examples/**/*.md")]
    broken = []
    for document in documents:
        for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            if not linked.exists() or (
                anchor and linked.suffix == ".md" and anchor not in _github_anchors(linked)
            ):
                broken.append(f"{document.relative_to(root)}: {target}")
    assert not broken, broken
