"""``runtime.checkpoint_every`` = k: ``checkpoints/last`` every k epochs, written in a background thread, and
``checkpoints/best`` still chosen every epoch. Kills between save points resume bit-identically."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from learner.config import Config
from learner.errors import CheckpointError
from learner.losses.regression import ScoreStandardiser
from learner.training import checkpoint as checkpoint_module
from learner.training.checkpoint import CheckpointMeta, EncoderMeta, load_checkpoint, load_train_state
from learner.training.checkpoint_writer import CheckpointSaver, host_snapshot
from learner.training.faults import FAULT_VARIABLE
from learner.training.pretrain import pretrain

EPOCHS = 4  # 4 epochs × 2 steps; with k = 2, last is written after epochs 2 and 4 (epoch 3: never)

# every arrival count below is of a k = 2 run
KILL_POINTS_K2 = [
    ("step", 3),  # mid-epoch 2: epoch 1 done but never saved; the resume starts at epoch 1
    ("step", 7),  # mid-epoch 4: epoch 3 done but not saved; the resume starts at epoch 3
    ("validation", 4),  # during the last epoch's validation
    ("checkpoint-write", 1),  # epoch 2's first save (best, in the writer thread): weights staged
    ("checkpoint-swap", 1),  # the first replacing save (epoch 4's)
    ("checkpoint-saved", 1),  # epoch 2's save just handed to the writer thread, maybe not yet written
]


def _config(make: Callable[..., Config], every: int) -> Config:
    return make(**{"optim.epochs": EPOCHS, "runtime.checkpoint_every": every})


@pytest.fixture(scope="module")
def every_epoch(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The reference: k = 1, synchronous, a checkpoint every epoch (the behaviour before k existed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("every-epoch") / "run"
        pretrain(_config(make_tiny_pretrain_config, 1), run)
    finally:
        torch.set_num_threads(threads)
    return run


def _assert_same_run(expected: Path, run: Path) -> None:
    for which in ("best", "last"):
        reference = load_file(expected / "checkpoints" / which / "model.safetensors")
        weights = load_file(run / "checkpoints" / which / "model.safetensors")
        assert reference.keys() == weights.keys()
        for key, value in reference.items():
            assert torch.equal(value, weights[key]), (which, key)
        assert checkpoint_module.read_meta(run / "checkpoints" / which).epoch == (
            checkpoint_module.read_meta(expected / "checkpoints" / which).epoch
        )
    pd.testing.assert_frame_equal(
        pd.read_csv(expected / "metrics.csv"), pd.read_csv(run / "metrics.csv"), check_exact=True
    )
    assert (run / "metrics.json").read_text() == (expected / "metrics.json").read_text()
    assert (run / "val_predictions.csv").read_text() == (expected / "val_predictions.csv").read_text()
    assert sorted(str(p.relative_to(run)) for p in run.rglob(".*")) == []  # no staging leftovers


def _killed(config: Config, run: Path, fault: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``learner pretrain`` in a child process that signals itself at ``fault`` (POINT:COUNT[:SIGNAL])."""
    config_file = run.parent / "config.yaml"
    config_file.write_text(config.to_yaml())
    child = subprocess.run(
        [sys.executable, "-m", "learner", "pretrain", "--out", str(run), "--config", str(config_file)],
        env=os.environ | {FAULT_VARIABLE: fault, "OMP_NUM_THREADS": "1"} | env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if fault.count(":") < 2:
        assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    return child


@pytest.mark.slow
def test_sparse_checkpoints_compute_the_same_run_and_best_is_the_lowest_val_mae(
    every_epoch: Path,
    make_tiny_pretrain_config: Callable[..., Config],
    tmp_path: Path,
    one_thread: None,
) -> None:
    """k = 3 of 4 epochs: last written after epochs 3 and 4 only, best kept in memory in between; the
    weights, metrics and best epoch are those of a checkpoint every epoch."""
    run = tmp_path / "run"
    pretrain(_config(make_tiny_pretrain_config, 3), run)
    _assert_same_run(every_epoch, run)
    metrics = pd.read_csv(run / "metrics.csv")
    lowest = int(metrics["epoch"][metrics["val_mae"].idxmin()])  # idxmin: the earliest on a tie
    assert checkpoint_module.read_meta(run / "checkpoints" / "best").epoch == lowest
    assert load_train_state(run / "checkpoints" / "last")["step"] == EPOCHS * 2


@pytest.mark.slow
@pytest.mark.parametrize(("point", "count"), KILL_POINTS_K2, ids=[f"{p}-{c}" for p, c in KILL_POINTS_K2])
def test_a_kill_between_or_during_sparse_saves_resumes_bit_identically(
    point: str,
    count: int,
    every_epoch: Path,
    make_tiny_pretrain_config: Callable[..., Config],
    cli: Callable[[list[str]], tuple[int, str, str]],
    tmp_path: Path,
    one_thread: None,
) -> None:
    run = tmp_path / "run"
    _killed(_config(make_tiny_pretrain_config, 2), run, f"{point}:{count}")
    code, _, err = cli(["pretrain", "--resume", str(run)])
    assert code == 0, err
    _assert_same_run(every_epoch, run)


@pytest.mark.slow
def test_preemption_between_save_points_writes_the_kept_best_then_resumes_exactly(
    every_epoch: Path,
    make_tiny_pretrain_config: Callable[..., Config],
    cli: Callable[[list[str]], tuple[int, str, str]],
    tmp_path: Path,
    one_thread: None,
) -> None:
    """SIGTERM in a SLURM job mid-epoch 2 with k = 2: nothing was written yet, so the checkpoint at the
    step writes epoch 1's best (kept in memory) and then last at the step; --resume goes on from there."""
    run = tmp_path / "run"
    child = _killed(_config(make_tiny_pretrain_config, 2), run, "step:3:TERM", SLURM_JOB_ID="1")
    assert child.returncode not in (0, -signal.SIGTERM), child.stderr[-2000:]
    assert checkpoint_module.read_meta(run / "checkpoints" / "best").epoch == 1
    assert load_train_state(run / "checkpoints" / "last")["position"]["step"] == 3
    code, _, err = cli(["pretrain", "--resume", str(run)])
    assert code == 0, err
    _assert_same_run(every_epoch, run)


@pytest.mark.slow
def test_a_failed_background_write_surfaces_in_one_line(
    make_tiny_pretrain_config: Callable[..., Config],
    cli: Callable[[list[str]], tuple[int, str, str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_thread: None,
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full)  # train_state.pt, in the writer thread
    config_file = tmp_path / "config.yaml"
    config_file.write_text(_config(make_tiny_pretrain_config, 2).to_yaml())
    code, _, err = cli(["pretrain", "--out", str(tmp_path / "run"), "--config", str(config_file)])
    assert code != 0
    message = "last: no space left on device while writing train_state.pt"
    lines = [line for line in err.splitlines() if message in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err


META = CheckpointMeta(Config(), ScoreStandardiser(mean=1.0, std=2.0), EncoderMeta("tsm_resnet18", 4, 1, 5))


def _meta(epoch: int) -> CheckpointMeta:
    return replace(META, epoch=epoch)


def test_the_kept_best_is_the_weights_of_its_epoch_not_of_the_save_point(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    saver = CheckpointSaver(every=3)
    with saver:
        saver.keep_best(tmp_path / "best", model, _meta(1))
        kept = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            model.weight.add_(1.0)  # later updates must not reach the kept best
        assert not saver.due(2, 10)
        assert saver.due(3, 10)
        assert saver.due(10, 10)
        state = {"step": 3, "moments": torch.ones(2)}
        saver.save_last(tmp_path / "last", model, _meta(3), state)
        state["moments"].add_(5.0)  # nor changes to the train state once it was handed over
    best, meta = load_checkpoint(tmp_path / "best")
    assert meta.epoch == 1
    assert all(torch.equal(best[k], v) for k, v in kept.items())  # type: ignore[index]
    last, _ = load_checkpoint(tmp_path / "last")
    assert torch.equal(last["weight"], model.weight)  # type: ignore[index]
    assert torch.equal(load_train_state(tmp_path / "last")["moments"], torch.ones(2))


def test_a_failed_write_raises_at_the_next_join_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = nn.Linear(3, 2)
    saver = CheckpointSaver(every=2)
    saver.save_last(tmp_path / "last", model, _meta(2), {"step": 2})
    saver.join()

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", full)
    saver.save_last(tmp_path / "last", model, _meta(4), {"step": 4})  # returns at once
    with pytest.raises(CheckpointError, match=r"last: no space left on device while writing train_state\.pt"):
        saver.join()
    saver.join()  # raised once
    assert checkpoint_module.read_meta(tmp_path / "last").epoch == 2


def test_the_snapshot_copies_tensors_and_keeps_shared_rows_shared() -> None:
    row = {"epoch": 1.0}
    moments = torch.zeros(3)
    state = {"history": [row], "best": row, "optimizer": {"state": {0: {"exp_avg": moments}}}}
    copy = host_snapshot(state)
    assert copy["best"] is copy["history"][0]
    moments.add_(1.0)
    assert torch.equal(copy["optimizer"]["state"][0]["exp_avg"], torch.zeros(3))


def test_waiting_for_a_background_write_counts_as_checkpoint_time() -> None:
    from learner.timing import CLOCK
    from learner.training.checkpoint_writer import CheckpointWriter

    writer, release = CheckpointWriter(asynchronous=True), threading.Event()
    writer.submit(lambda: release.wait(5))
    started = CLOCK.mark()
    with CLOCK.stage("pretrain x"):
        threading.Timer(0.2, release.set).start()
        writer.join()  # the run's end: the write in flight is waited for under "checkpoints"
    timing = CLOCK.since(started)
    assert timing.calls["checkpoints"] == 1
    assert timing.seconds["checkpoints"] >= 0.15
    assert timing.seconds["pretrain x"] < 0.15
