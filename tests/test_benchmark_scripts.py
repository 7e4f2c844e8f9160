"""The CPU benchmark scripts' bad input: one line and a non-zero exit, never a traceback (the figures
themselves are BENCHMARKS.md's, measured by hand)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *argv], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


@pytest.mark.slow  # a child process that imports torch before it reads its arguments (~3 s)
@pytest.mark.parametrize(
    ("script", "files", "why"),
    [
        ("cache_identity.py", {}, "no files under {folder} (give --folder DIR or set LEARNER_POCUS_DIR)"),
        (
            "decode_and_flag.py",
            {"notes.txt": "no video here"},
            "no video clips under {folder} (give --folder DIR)",
        ),
    ],
)
def test_a_script_refuses_a_folder_without_its_files_in_one_line(
    tmp_path: Path, script: str, files: dict[str, str], why: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    done = _run(script, "--folder", str(tmp_path), "--out", str(tmp_path / "r.jsonl"))
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.endswith("error: " + why.format(folder=tmp_path))
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.slow  # a child process that imports the toolkit and draws a phantom (~5 s)
def test_scaling_names_why_a_run_failed(tmp_path: Path) -> None:
    """Two train patients cannot fill a batch of 16: the child's error, not CalledProcessError."""
    done = _run("scaling.py", "--base", "2", "1", "1", "--factors", "1", "--out", str(tmp_path / "r.jsonl"))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: the 1× run failed: learner.errors.ConfigError: optim.batch_size=16 exceeds the 9 train "
        "scans; set --set optim.batch_size=N with N ≤ 9 (or more train patients)"
    )
    assert not (tmp_path / "r.jsonl").exists()
