"""The command line's conventions: ``-h`` everywhere, ``-v`` / ``-q``, shell completion, ``--device auto``."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
import typer.main
from rich.text import Text

from learner.cli import app, run
from learner.console import ON_CONSOLE
from learner.data.manifest import Manifest
from learner.data.scales import ScoreScale

CliRun = Callable[[list[str]], tuple[int, str, str]]


def _commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    for name, child in getattr(command, "commands", {}).items():
        yield from _commands(child, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "learner")
def test_every_command_takes_dash_h(path: tuple[str, ...], cli: CliRun) -> None:
    code, out, _ = cli([*path, "-h"])
    assert code == 0
    assert "Usage: learner" in out


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "learner")
def test_help_texts_lose_nothing_to_rich_markup(path: tuple[str, ...]) -> None:
    """Rich markup (``rich_markup_mode``) swallows any ``[word]``: ``pip install 'learner[cluster]'`` once
    showed as ``'learner'``. Brackets meant literally are escaped (``\\[``)."""
    command = dict(COMMANDS)[path]
    texts = [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]
    for text in texts:
        assert Text.from_markup(text).plain == text.replace("\\[", "["), text


@pytest.mark.parametrize(
    ("flags", "shown"),
    [([], {"warning: w"}), (["-q"], set()), (["-v"], {"warning: w", "i"})],
)
def test_verbosity_flags_choose_what_reaches_stderr(
    flags: list[str], shown: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run([*flags, "data", "check", "-h"]) == 0  # the root options apply before the command runs
    capsys.readouterr()
    logger = logging.getLogger("learner.test_cli_polish")
    logger.info("i")
    logger.warning("w")
    logger.info("epoch 1/3: printed by the progress console", extra={ON_CONSOLE: True})
    assert set(capsys.readouterr().err.splitlines()) == shown  # the epoch line is not repeated


def test_verbose_and_quiet_exclude_each_other(cli: CliRun) -> None:
    code, _, err = cli(["-v", "-q", "data", "check", "-h"])
    assert code == 2
    assert "-v and -q exclude each other" in err


def test_shell_completion_script(monkeypatch: pytest.MonkeyPatch, cli: CliRun) -> None:
    # typer's own switch: take the shell from the argument instead of detecting the parent process's
    # (a pytest-xdist worker has no shell above it)
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    code, out, _ = cli(["--show-completion", "bash"])
    assert code == 0
    assert "_learner_completion" in out
    assert "complete " in out


def test_device_defaults_to_auto_everywhere() -> None:
    devices = {
        " ".join(path): param.default
        for path, command in COMMANDS
        for param in command.params
        if param.name == "device"
    }
    assert {"embed", "classify", "predict", "pretrain"} <= set(devices)
    # pretrain's None leaves runtime.device, whose default is auto
    assert all(default == "auto" for name, default in devices.items() if name != "pretrain")
    assert devices["pretrain"] is None
    from learner.config import RuntimeConfig

    assert RuntimeConfig().device == "auto"


def _manifest(folder: Path) -> Path:
    """A valid manifest: 4 patients × 2 visits of random grey PNG stills."""
    import numpy as np
    from PIL import Image

    rows = ["patient_id,scan_id,path,visit,score"]
    for patient in range(4):
        for visit in (1, 2):
            pixels = np.random.default_rng(10 * patient + visit).integers(20, 235, (24, 24), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"p{patient}_v{visit}.png")
            rows.append(
                f"p{patient},p{patient}_v{visit},p{patient}_v{visit}.png,{visit},{150 + 40 * patient + visit}"
            )
    (folder / "m.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / "m.csv"


@pytest.mark.parametrize(
    ("flags", "fail", "shown"),
    [([], True, 0), (["--debug"], True, 1), ([], False, 1), (["-q"], False, 0)],
    ids=["failing", "failing --debug", "succeeding", "succeeding -q"],
)
def test_library_warnings_never_come_before_the_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: CliRun, flags: list[str], fail: bool, shown: int
) -> None:
    """A failing command ends in its one error line with no library warning above it (``--debug`` shows
    them, above the traceback); a successful one still shows them, unless ``-q`` asks for errors only."""
    from learner.cli import data_cmd
    from learner.errors import ManifestError

    manifest = _manifest(tmp_path)
    real = data_cmd._load_or_list_problems

    def load(path: Path, scale: ScoreScale, data_root: Path | None, open_scans: bool = False) -> Manifest:
        warnings.warn("a library's UserWarning", UserWarning, stacklevel=1)
        if fail:
            raise ManifestError(f"{path}: broken")
        return real(path, scale, data_root, open_scans)

    monkeypatch.setattr(data_cmd, "_load_or_list_problems", load)
    with warnings.catch_warnings(record=True) as seen:  # pytest's capture: where shown warnings go
        warnings.simplefilter("always")
        code, _, err = cli([*flags, "data", "check", str(manifest)])
    assert [str(w.message) for w in seen] == ["a library's UserWarning"] * shown
    assert code == (2 if fail else 0)
    if fail and not flags:
        assert err.strip().splitlines() == [f"error: {manifest}: broken"]
