"""``learner pretrain`` as SLURM jobs on the real one-node cluster of :mod:`slurm_cluster`: DDP as
``srun --ntasks=2`` (gloo; the ranks from SLURM's environment) equals one process on the global batch, and a
job pre-empted by SLURM (``scontrol requeue``: SIGTERM, then requeued) checkpoints, resumes and ends
bit-identical to an uninterrupted run. The commands are those of docs/cluster.md."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from slurm_cluster import SlurmCluster

from learner.config import Config
from learner.training.pretrain import pretrain

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PYTHON = sys.executable


def _batch_script(folder: Path, body: str, *, ntasks: int = 1) -> Path:
    script = folder / "job.sh"
    script.write_text(
        f"#!/bin/bash\n#SBATCH --ntasks={ntasks}\n#SBATCH --output={folder / 'job.log'}\n"
        f"#SBATCH --open-mode=append\nset -e\ncd {folder}\n{body}\n"
    )
    return script


def _submit(slurm: SlurmCluster, script: Path, *extra: str) -> str:
    done = slurm.run("sbatch", "--parsable", *extra, str(script))
    return done.stdout.strip().split(";")[0]


def _wait_done(slurm: SlurmCluster, job: str, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = slurm.run("scontrol", "-o", "show", "job", job, check=False).stdout
        if "JobState=COMPLETED" in state:
            return
        if any(f"JobState={s}" in state for s in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")):
            pytest.fail(f"job {job} ended: {state}\n{log.read_text() if log.exists() else ''}")
        if time.monotonic() > deadline:
            slurm.run("scancel", job, check=False)
            pytest.fail(f"job {job} not done in {timeout:g} s\n{log.read_text() if log.exists() else ''}")
        time.sleep(0.5)


def _start_now(slurm: SlurmCluster, job: str) -> None:
    """A requeued job may start again only after a delay (about two minutes): let it start at once."""
    deadline = time.monotonic() + 60
    while "JobState=PENDING" not in slurm.run("scontrol", "-o", "show", "job", job).stdout:
        assert time.monotonic() < deadline, f"job {job} was not requeued"
        time.sleep(0.2)
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")


def _weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / which / "model.safetensors")


def test_srun_two_gloo_ranks_equal_one_process_on_the_global_batch(
    slurm_env: SlurmCluster,
    make_tiny_pretrain_config: Callable[..., Config],
    tmp_path: Path,
    one_thread: None,
) -> None:
    # GroupNorm and no dropout: each rank's forward depends on its own clips only, as in one process
    config = make_tiny_pretrain_config(**{"model.norm": "group", "model.dropout": 0.0, "optim.epochs": 1})
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    single = tmp_path / "single"
    pretrain(config, single)
    script = _batch_script(
        tmp_path,
        f"srun --ntasks=2 {PYTHON} -m learner pretrain --config config.yaml --out ddp",
        ntasks=2,
    )
    job = _submit(slurm_env, script)
    _wait_done(slurm_env, job, tmp_path / "job.log")
    ddp, one = _weights(tmp_path / "ddp"), _weights(single)
    assert ddp.keys() == one.keys()
    for key, value in one.items():  # the gathered batch is a permutation of one process's: float sums reorder
        torch.testing.assert_close(ddp[key], value, rtol=1e-4, atol=1e-5, msg=key)
    # two ranks did compute it: one process on the same batch would have summed in its own order
    assert any(not torch.equal(value, ddp[key]) for key, value in one.items())


def test_a_pre_empted_job_checkpoints_and_its_requeued_run_resumes_bit_identically(
    slurm_env: SlurmCluster,
    make_tiny_pretrain_config: Callable[..., Config],
    tmp_path: Path,
    one_thread: None,
) -> None:
    overrides = {"optim.epochs": 6, "optim.max_steps_per_epoch": 3}
    config = make_tiny_pretrain_config(**overrides)
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    uninterrupted = tmp_path / "uninterrupted"
    pretrain(config, uninterrupted)
    # the job script of docs/cluster.md: a first start trains, a requeued one resumes
    script = _batch_script(
        tmp_path,
        "if [ -e run/config.yaml ]; then args='--resume run'\n"
        "else args='--config config.yaml --out run'; fi\n"
        f"srun {PYTHON} -m learner -v pretrain $args",
    )
    job = _submit(slurm_env, script, "--requeue")
    last = tmp_path / "run" / "checkpoints" / "last"
    deadline = time.monotonic() + 180
    while not last.is_dir():  # epoch 1 is saved: the signal comes in the middle of the run
        assert time.monotonic() < deadline, (tmp_path / "job.log").read_text()
        time.sleep(0.1)
    slurm_env.run("scontrol", "requeue", job)  # what a pre-emption with PreemptMode=REQUEUE does
    _start_now(slurm_env, job)
    _wait_done(slurm_env, job, tmp_path / "job.log", timeout=300)
    log = (tmp_path / "job.log").read_text()
    assert "checkpoint written after batch" in log or "resumed" in log, log
    assert "resumed" in (tmp_path / "run" / "log.txt").read_text()
    for which in ("best", "last"):
        expected, resumed = _weights(uninterrupted, which), _weights(tmp_path / "run", which)
        for key, value in expected.items():
            assert torch.equal(value, resumed[key]), (which, key)
    assert (tmp_path / "run" / "metrics.csv").read_text() == (uninterrupted / "metrics.csv").read_text()
