"""Several pretrainings side by side in one process (``data.device_data``; issue 22, part 4).

On a GPU one small run's step is launch-bound: the device idles between its kernels. Runs that take
turns step by step in one process (one CUDA context, each run's steps on its own stream) keep it busier
than the same runs one after another, and each still computes exactly what it computes alone:

* **setup as alone**: each run is prepared by :func:`~learner.training.pretrain.prepare_run` (its seeding,
  run directory, scans, model and objective, restore), one after another, so its weight initialisation
  draws what it draws alone;
* **turns**: each run's epoch loop is :func:`~learner.training.pretrain.epoch_loop`, a generator that
  yields after every device-data update; the runs take one update each in turn (round-robin), a run's
  validation and checkpoints coming in its turn after its epoch's last update;
* **its own global RNG state and log**: before each turn the run's Python / NumPy / torch RNG states are
  put back and after it they are kept (:class:`Lane`), so whatever draws from them (dropout, say) and the
  RNG state its checkpoints store are what they are alone, and the ``learner`` logger is pointed at its
  ``log.txt`` (:func:`~learner.runs.logs_by_turn`: a swap of open handlers, no file opened per turn);
  everything else a step touches (model, optimiser, batch generator, cross-batch memory, device counters,
  checkpoint writer, metrics sinks) belongs to the run.

On one CPU thread each run's ``metrics.csv`` and checkpoints equal its lone run's bit for bit
(``tests/training/test_side_by_side.py``). ``resume`` resumes every run from its own ``checkpoints/last``
(a run without one starts afresh), exactly as a lone ``--resume``. A pre-emption signal checkpoints the
first run that sees it and hands the signal over; the others resume from their last epoch's checkpoint.
An error in one run (a non-finite loss, say) stops them all; each resumes from its own last checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from learner.config import Config
from learner.errors import ConfigError
from learner.runs import RunDir, logs_by_turn, removed_unless_started
from learner.training.checkpoint_writer import CheckpointSaver
from learner.training.device import resolve_device
from learner.training.distributed import distributed, launcher_world_size
from learner.training.epoch import LoopState, progress_bar
from learner.training.plan import plan_pretraining
from learner.training.preemption import checkpoint_on_signal
from learner.training.pretrain import PreparedRun, PretrainResult, epoch_loop, finish, prepare_run
from learner.training.seeding import rng_state, set_rng_state


@dataclass
class Lane:
    """One run side by side: its prepared parts, its global RNG states between turns, its CUDA stream (None
    on CPU), its epoch loop (set once its checkpoint saver is open), what points the logger at its log
    and, once the loop ended, its final state."""

    prepared: PreparedRun
    rng: dict[str, Any]
    stream: torch.cuda.Stream | None
    loop: Generator[None, None, LoopState] | None = None
    log_here: Callable[[], None] | None = None
    state: LoopState | None = None

    def turn(self) -> bool:
        """One update of this run (or its first / last piece of work) with its own RNG states, on its own
        stream; False once its epoch loop has ended (its final state in ``state``)."""
        assert self.loop is not None, "start the lane first"
        set_rng_state(self.rng)
        if self.log_here is not None:
            self.log_here()  # its messages to its own log.txt
        try:
            with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
                next(self.loop)
        except StopIteration as done:
            self.state = done.value
            return False
        finally:
            self.rng = rng_state()
        return True


def check_side_by_side(configs: Sequence[Config], run_dirs: Sequence[Path]) -> None:
    """Refuse runs that cannot go side by side: each needs ``data.device_data`` (only its updates come one
    at a time), all one device (``runtime.device``) and each its own run folder.

    Raises:
        ConfigError: one line naming the key (or the folder) and what to change.
    """
    if not configs:
        raise ConfigError("no runs to pretrain side by side")
    for index, config in enumerate(configs):
        if not config.data.device_data:
            raise ConfigError(
                f"run {index} ({run_dirs[index]}): side by side needs data.device_data=true, got false"
            )
    devices = {config.runtime.device for config in configs}
    if len(devices) > 1:
        raise ConfigError(f"runs side by side share one device; runtime.device differs: {sorted(devices)}")
    if len({path.resolve() for path in run_dirs}) < len(run_dirs):
        raise ConfigError(f"runs side by side need one run folder each, got {[str(p) for p in run_dirs]}")


def pretrain_side_by_side(
    runs: Sequence[tuple[Config, str | os.PathLike[str]]], *, resume: bool = False, force: bool = False
) -> list[PretrainResult]:
    """Pretrain each ``(config, run_dir)`` of ``runs`` as :func:`~learner.training.pretrain.pretrain` does
    alone, all in this process with their updates taking turns (the module docstring); one result per run,
    in order.

    Args:
        runs: each run's whole config (``data.device_data`` on, one ``runtime.device``) and its folder.
        resume: continue each run from its ``checkpoints/last`` (as ``pretrain(resume=True)``).
        force: wipe each non-empty run folder first.

    Raises:
        ConfigError: a run that cannot go side by side (:func:`check_side_by_side`); and what
            :func:`~learner.training.pretrain.pretrain` raises: its input errors before any run trains, a
            :class:`~learner.errors.NonFiniteLossError` of one run while they train (all of them stop).
    """
    run_dirs = [Path(run_dir) for _, run_dir in runs]
    check_side_by_side([config for config, _ in runs], run_dirs)
    world_size = launcher_world_size()  # device data refuses more than one process (the plan)
    plans = [
        plan_pretraining(config, run_dir, resume=resume, force=force, world_size=world_size)
        for config, run_dir in runs
    ]
    device = resolve_device(plans[0].config.runtime.device)
    with distributed(device.type) as info, ExitStack() as folders:
        lanes = []
        for plan in plans:  # one after another: each seeds and initialises as it would alone
            folders.enter_context(removed_unless_started(plan.run_dir, new=not resume))
            stream = None
            if device.type == "cuda":  # its own queue: its kernels can fill another run's gaps
                stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]  # untyped in torch
            lanes.append(Lane(prepare_run(plan, info, device), rng_state(), stream))
        with ExitStack() as loops:  # leaving it joins every checkpoint write in flight
            bar = loops.enter_context(progress_bar(enabled=False))
            sig = loops.enter_context(checkpoint_on_signal())
            point = loops.enter_context(logs_by_turn([_run_dir(lane) for lane in lanes]))
            for index, lane in enumerate(lanes):
                saver = loops.enter_context(
                    CheckpointSaver(lane.prepared.plan.config.runtime.checkpoint_every)
                )
                lane.loop = epoch_loop(lane.prepared, sig, saver, bar)
                lane.log_here = partial(point, index)
            take_turns(lanes, device)
        return [
            finish(
                lane.prepared.plan, lane.prepared.run, lane.prepared.scans, _final(lane), lane.prepared.sinks
            )
            for lane in lanes
        ]


def take_turns(lanes: Sequence[Lane], device: torch.device) -> None:
    """Round-robin: each unfinished lane one turn, until every epoch loop has ended. On CUDA each lane's
    stream first waits for the setup's work on the current stream, and the current stream waits for every
    lane at the end."""
    with _streams_joined(lanes, device):
        active = list(lanes)
        while active:
            active = [lane for lane in active if lane.turn()]


@contextmanager
def _streams_joined(lanes: Sequence[Lane], device: torch.device) -> Iterator[None]:
    streams = [lane.stream for lane in lanes if lane.stream is not None]
    if not streams:
        yield
        return
    main = torch.cuda.current_stream(device)
    for stream in streams:
        stream.wait_stream(main)
    try:
        yield
    finally:
        for stream in streams:
            main.wait_stream(stream)


def _run_dir(lane: Lane) -> RunDir:
    assert lane.prepared.run is not None, "runs side by side are one process, which is rank 0"
    return lane.prepared.run


def _final(lane: Lane) -> LoopState:
    assert lane.state is not None, "the lane's epoch loop has not ended"
    return lane.state
