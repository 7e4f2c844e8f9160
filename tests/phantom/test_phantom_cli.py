"""`learner phantom lus / mri / preview` through the console-script entry point, and the preview figure."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from learner.data.phantom.preview import render_preview


def test_lus_command_writes_then_reuses(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    argv = ["phantom", "lus", str(tmp_path / "lus"), "--patients", "3,2,2", "--frames", "2", "--size", "32"]
    code, out, err = cli([*argv, "--workers", "1"])
    assert code == 0, out + err
    manifest = pd.read_csv(tmp_path / "lus" / "manifest.csv")
    assert re.search(rf"written \S+manifest.csv \({len(manifest)} clips\)", out + err)
    assert re.search(r"│ test\s+│ 2\s+│", out + err)  # the per-split table shows 2 test patients
    code, out, err = cli([*argv, "--workers", "1"])
    assert code == 0
    assert "reused" in out + err


def test_a_rerun_with_other_flags_refuses_to_delete_the_users_files(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    """A derived split and the user's notes in the cohort folder: a new --seed would have replaced (deleted)
    them with the old cohort; it is refused, exit 2, naming the first such file, and the old cohort stays."""
    folder = tmp_path / "ph2"
    argv = ["phantom", "lus", str(folder), "--size", "32", "--patients", "2,1,1", "--frames", "4"]
    argv += ["--workers", "0"]
    assert cli(argv)[0] == 0
    split = ["data", "split", str(folder / "manifest.csv"), "--out", str(folder / "manifest.split.csv")]
    assert cli([*split, "--counts", "2,1,1"])[0] == 0
    (folder / "notes.txt").write_text("my notes")
    kept = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    code, out, err = cli([*argv, "--seed", "1"])
    assert code == 2
    assert "manifest.split.csv (and 1 more)" in " ".join((out + err).split())
    assert len((out + err).strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == kept  # old cohort included
    assert [p.name for p in tmp_path.iterdir()] == ["ph2"]  # no staging folder left behind


def test_a_reused_cohort_whose_manifest_was_replaced_is_a_one_line_error(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    """The cohort is reused by its record; a manifest.csv replaced since (say by another command's output)
    is named in one line, exit 2, not a KeyError."""
    folder = tmp_path / "ph"
    argv = ["phantom", "lus", str(folder), "--patients", "2,1,1", "--frames", "2", "--size", "32"]
    assert cli([*argv, "--workers", "0"])[0] == 0
    manifest = folder / "manifest.csv"
    manifest.write_text("scan_id,patient_id,split,score,emb_0\nA,P1,train,1.0,0.5\n", encoding="utf-8")
    code, out, err = cli([*argv, "--workers", "0"])
    assert code == 2
    assert (out + err).strip() == (
        f"error: {manifest}: no column(s) visit: not the table this cohort wrote (changed since); write the "
        "cohort into a new folder"
    )


def test_mri_command_reports_the_table(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    argv = ["phantom", "mri", str(tmp_path / "mri"), "--patients", "2,1,1", "--size", "24", "--workers", "1"]
    code, out, err = cli(argv)
    assert code == 0, out + err
    table = pd.read_csv(tmp_path / "mri" / "ADNIMERGE.csv")
    images = len(list((tmp_path / "mri" / "images").iterdir()))
    assert f"4 patients, {len(table)} visits, {images} volumes" in out + err
    assert images == table.IMAGEUID.notna().sum()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["phantom", "lus", "X", "--patients", "1,2"], "--patients"),
        (["phantom", "mri", "X", "--patients", "a,b,c"], "--patients"),
        (["phantom", "mri", "X", "--patients", "9000,999,0"], "patients: at most 9998 in all"),
        (["phantom", "lus", "X", "--patients", "1,0,0", "--frames", "1", "--size", "31"], "even"),
    ],
)
def test_bad_flags_exit_2_naming_the_problem(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]], argv: list[str], message: str
) -> None:
    argv = [str(tmp_path / a) if a == "X" else a for a in argv]
    code, out, err = cli(argv)
    assert code == 2
    assert message in out + err
    assert not (tmp_path / "X").exists()


@pytest.mark.slow  # end to end; the full suite (CI) runs it, the fast lane leaves it out
def test_preview_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = render_preview(tmp_path / "a.png", seed=0, lus_size=32, mri_size=24)
    again = render_preview(tmp_path / "b.png", seed=0, lus_size=32, mri_size=24)
    other = render_preview(tmp_path / "c.png", seed=1, lus_size=32, mri_size=24)
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


@pytest.mark.slow  # the preview through the CLI: a cohort rendered and drawn (~3 s)
def test_preview_command_writes_the_figure(
    tmp_path: Path, cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    code, out, err = cli(["phantom", "preview", str(tmp_path / "fig" / "preview.png")])
    assert code == 0, out + err
    with Image.open(tmp_path / "fig" / "preview.png") as image:
        assert image.format == "PNG"
        assert image.size == (1170, 630)  # 13 x 7 inches at 90 dpi
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 20  # frames and slices, not a blank canvas
    assert [p.name for p in (tmp_path / "fig").iterdir()] == ["preview.png"]  # no temp file left behind
