"""kill -9 at exact points of a pretraining (the ``LEARNER_FAULT`` test hook, no timing), then ``--resume``:
the same weights and metrics as a run never interrupted, and nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from learner.config import Config
from learner.training.faults import FAULT_POINTS, FAULT_VARIABLE
from learner.training.pretrain import pretrain

pytestmark = pytest.mark.slow

# 2 epochs × 2 steps; saves: epoch 1 best + last, epoch 2 (best if improved) + last
KILL_POINTS = [
    ("step", 1),  # mid-epoch 1, before any checkpoint: the resume starts at epoch 1
    ("step", 3),  # mid-epoch 2
    ("validation", 2),  # during epoch 2's validation
    ("checkpoint-write", 3),  # epoch 2's first save: weights staged, metadata not yet
    ("checkpoint-swap", 1),  # between the two renames of epoch 2's first replacing save (last, or best)
    ("checkpoint-saved", 2),  # after the last checkpoint, before the last metrics.csv row is written
]


@pytest.fixture(scope="module")
def uninterrupted(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("uninterrupted") / "run"
        pretrain(make_tiny_pretrain_config(), run)
    finally:
        torch.set_num_threads(threads)
    return run


def killed_pretraining(config: Config, run: Path, fault: str) -> subprocess.CompletedProcess[str]:
    """``learner pretrain`` in a child process that signals itself at ``fault`` (POINT:COUNT[:SIGNAL])."""
    config_file = run.parent / "config.yaml"
    config_file.write_text(config.to_yaml())
    env = os.environ | {FAULT_VARIABLE: fault, "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-m", "learner", "pretrain", "--out", str(run), "--config", str(config_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if fault.count(":") < 2:  # SIGKILL: nothing runs after it
        assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    return child


def hidden_leftovers(run: Path) -> list[str]:
    """Staging, retired and temporary files or folders anywhere in a run directory."""
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*"))


@pytest.mark.parametrize(("point", "count"), KILL_POINTS, ids=[f"{p}-{c}" for p, c in KILL_POINTS])
def test_kill_then_resume_equals_the_uninterrupted_run(
    point: str,
    count: int,
    uninterrupted: Path,
    make_tiny_pretrain_config: Callable[..., Config],
    cli: Callable[[list[str]], tuple[int, str, str]],
    tmp_path: Path,
    one_thread: None,
) -> None:
    assert point in FAULT_POINTS
    run = tmp_path / "run"
    killed_pretraining(make_tiny_pretrain_config(), run, f"{point}:{count}")
    code, _, err = cli(["pretrain", "--resume", str(run)])
    assert code == 0, err
    for which in ("best", "last"):
        expected = load_file(uninterrupted / "checkpoints" / which / "model.safetensors")
        resumed = load_file(run / "checkpoints" / which / "model.safetensors")
        assert expected.keys() == resumed.keys()
        for key, value in expected.items():
            assert torch.equal(value, resumed[key]), (which, key)
    pd.testing.assert_frame_equal(
        pd.read_csv(uninterrupted / "metrics.csv"), pd.read_csv(run / "metrics.csv"), check_exact=True
    )
    assert (run / "metrics.json").read_text() == (uninterrupted / "metrics.json").read_text()
    assert hidden_leftovers(run) == []


def test_sigterm_before_the_first_checkpoint_cleans_up_like_ctrl_c(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    """SIGTERM (``kill``, ``docker stop``, SLURM) is Ctrl-C (issue 21): a run with no checkpoint yet is
    removed, so a new run with the same --out starts cleanly."""
    run = tmp_path / "run"
    child = killed_pretraining(make_tiny_pretrain_config(), run, "step:1:TERM")
    assert child.returncode not in (0, -signal.SIGTERM), child.stderr[-2000:]  # handled, not fatal
    assert not run.exists()


def test_sigterm_after_a_checkpoint_keeps_the_run_for_resume(
    make_tiny_pretrain_config: Callable[..., Config],
    cli: Callable[[list[str]], tuple[int, str, str]],
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    child = killed_pretraining(make_tiny_pretrain_config(), run, "checkpoint-saved:1:TERM")
    assert child.returncode not in (0, -signal.SIGTERM), child.stderr[-2000:]
    assert (run / "checkpoints" / "last").is_dir()
    assert hidden_leftovers(run) == []
    code, _, err = cli(["classify", str(run), "--out", str(tmp_path / "cls")])
    assert code == 0, err
    assert "stopped after epoch 1 of 2, so this encoder is unfinished" in err  # classify says so
    code, _, err = cli(["pretrain", "--resume", str(run)])
    assert code == 0, err


def test_a_refused_resume_of_a_damaged_checkpoint_leaves_no_resume_record(
    make_tiny_pretrain_config: Callable[..., Config],
    cli: Callable[[list[str]], tuple[int, str, str]],
    tmp_path: Path,
) -> None:
    """Issue 21: every refused --resume once wrote resume-N.json before refusing."""
    run = tmp_path / "run"
    pretrain(make_tiny_pretrain_config(), run)
    weights = run / "checkpoints" / "last" / "model.safetensors"
    damaged = bytearray(weights.read_bytes())
    damaged[-8:] = b"\x00" * 8
    weights.write_bytes(bytes(damaged))
    before = sorted(p.name for p in run.iterdir())
    code, _, err = cli(["pretrain", "--resume", str(run)])
    assert code == 2
    assert "checksum mismatch" in err
    assert sorted(p.name for p in run.iterdir()) == before  # no resume-1.json, nothing else either
