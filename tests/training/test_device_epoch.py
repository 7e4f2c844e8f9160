"""The device-data path of pretraining (data.device_data, learner.training.device_epoch) on the tiny
phantom cohort, on CPU: a step runs with every host sync forbidden, a non-finite step skips its update
and fails the epoch at its end naming the step, an interrupted epoch goes on with the same numbers, and a
tiny pretraining runs end to end with finite metrics."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from learner.config import Config, LossConfig, apply_overrides
from learner.data.clip_store import DeviceBatches
from learner.errors import ConfigError, NonFiniteLossError
from learner.losses.registry import ScoreLabels, build_objective
from learner.losses.selection import select_pairs, trusted_select_pairs
from learner.training import plan as plan_module
from learner.training.device_epoch import device_batches, start_device_run, train_device_epoch
from learner.training.distributed import DistInfo
from learner.training.epoch import Trainee
from learner.training.plan import plan_pretraining
from learner.training.preemption import EpochPosition
from learner.training.pretrain import (
    build_model_and_objective,
    lr_schedule,
    open_run,
    prepare_scans,
    pretrain,
)
from learner.training.seeding import seed_everything
from learner.training.sync_free import (
    DeviceCounters,
    DeviceStep,
    lr_table,
    sync_free_optimizer,
    sync_free_step,
)

pytestmark = pytest.mark.slow

DEVICE_DATA = {"data.device_data": True, "optim.batch_size": 4, "optim.grad_clip": 1.0}


@dataclass
class Parts:
    """A tiny pretraining's parts, built as :func:`pretrain` builds them, before the epoch loop."""

    config: Config
    trainee: Trainee
    batches: DeviceBatches
    lrs: torch.Tensor
    lr: torch.Tensor

    def fresh_trainee(self) -> Trainee:
        """Another trainee from the same seed: the same initial weights."""
        seed_everything(self.config.seed, deterministic=True)
        trainee = build_model_and_objective(self.config, self.trainee.standardiser, torch.device("cpu"))
        sync_free_optimizer(trainee.optimizer, trainee.device).copy_(self.lr)
        return trainee

    def device_step(self, trainee: Trainee | None = None) -> DeviceStep:
        """``trainee``'s (default: this one's) step as a run binds it, counters at step 0."""
        trainee = self.trainee if trainee is None else trainee
        lr = trainee.optimizer.param_groups[0]["lr"]
        counters = DeviceCounters.starting(0, trainee.device)
        return DeviceStep(trainee, self.lrs, lr, counters, grad_clip=self.config.optim.grad_clip)


@pytest.fixture
def make_parts(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, one_thread: None
) -> Callable[..., Parts]:
    def make(**overrides: Any) -> Parts:
        config = make_tiny_pretrain_config(**(DEVICE_DATA | overrides))
        plan = plan_pretraining(config, tmp_path / f"run{len(list(tmp_path.iterdir()))}")
        seed_everything(config.seed, deterministic=True)
        info, cpu = DistInfo(), torch.device("cpu")
        scans = prepare_scans(plan, info, open_run(plan, info))
        trainee = build_model_and_objective(config, scans.standardiser, cpu)
        batches = device_batches(
            scans.train, scans.cache, cpu, frames=config.data.frames, channels=config.data.channels,
            batch_size=config.optim.batch_size, augment=None, seed=config.seed, two_views=scans.two_views,
        )  # fmt: skip
        schedule = lr_schedule(config.optim, 3)
        lrs = lr_table(
            lambda s: schedule(s, 3 * config.optim.epochs, config.optim.lr), 3 * config.optim.epochs, cpu
        )
        return Parts(config, trainee, batches, lrs, sync_free_optimizer(trainee.optimizer, cpu))

    return make


def params_of(trainee: Trainee) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainee.model.parameters()]


DEVICE_OBJECTIVES = (
    "mse", "mse+cl", "mse+wcl", "mse+wcl_scaled", "mse+rnc", "mse+yaware", "mse+supcon_bins", "vicreg"
)  # fmt: skip
"""Every objective the device-data path runs (``loss.within_patient`` is refused there by the plan)."""


@pytest.mark.parametrize("objective", DEVICE_OBJECTIVES)
def test_steps_run_with_every_host_sync_forbidden(
    objective: str,
    make_parts: Callable[..., Parts],
    host_syncs_forbidden: Callable[[str], AbstractContextManager[None]],
) -> None:
    # the cross-batch memory's references go through the pair selection too
    parts = make_parts(**{"loss.name": objective, "loss.memory": 8 if "+" in objective else 0})
    trainee, two_views = parts.trainee, parts.batches.two_views
    before = params_of(trainee)
    counters = DeviceCounters.starting(0, trainee.device)

    def step(index: int) -> None:
        clips, scores = parts.batches.batch(1, index)
        sync_free_step(
            trainee, clips, scores, counters, parts.lrs, parts.lr,
            two_views=two_views, grad_clip=1.0, measure_share=index == 1,
        )  # fmt: skip

    step(0)  # a warm-up, as before a recording: lazy state is made here (Adam's, the counters' sums)
    with host_syncs_forbidden(f"the device-data step of {objective}"):
        for index in (1, 2):
            step(index)
    reading = counters.read()
    assert (reading.step, reading.first_bad) == (3, 0)
    assert reading.sums.keys() >= {"train_loss"}
    assert all(math.isfinite(v) for v in reading.sums.values())
    if "+" in objective:  # the contrastive gradient share is measured where the loss has two terms
        assert list(reading.sums) == ["train_loss", "train_mse", f"train_{objective.split('+')[1]}"]
        assert reading.share is not None
        assert 0 < reading.share < 1
    assert float(parts.lr) == pytest.approx(float(parts.lrs[2]))  # the third update's LR
    after = params_of(trainee)
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert int(trainee.optimizer.state[next(trainee.model.parameters())]["step"]) == 3


class Poisoned(DeviceBatches):
    """Batch 1 of every epoch is NaN."""

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        clips, scores = super().batch(epoch, index)
        return (clips * math.nan if index == 1 else clips), scores


def test_a_non_finite_step_skips_its_update_and_fails_the_epoch_naming_it(
    make_parts: Callable[..., Parts],
) -> None:
    parts = make_parts()
    trainee = parts.trainee
    store, batches = parts.batches.store, parts.batches
    poisoned = Poisoned(
        store, frames=batches.frames, channels=batches.channels, batch_size=4, augment=None, seed=0
    )
    counters = DeviceCounters.starting(0, trainee.device)
    param = next(trainee.model.parameters())
    snapshots = []
    for index in range(3):
        clips, scores = poisoned.batch(1, index)
        sync_free_step(trainee, clips, scores, counters, parts.lrs, parts.lr, two_views=False)
        snapshots.append((params_of(trainee), int(trainee.optimizer.state[param]["step"])))
    (first, count1), (second, count2), (third, count3) = snapshots
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # step 2 changed nothing
    assert (count1, count2, count3) == (1, 1, 2)  # nor the optimiser's step count
    assert any(not torch.equal(a, b) for a, b in zip(second, third, strict=True))  # step 3 trained again
    assert all(torch.isfinite(p).all() for p in third)
    reading = counters.read()
    assert (reading.first_bad, reading.bad_what) == (2, 1)  # the loss, at step 2 (counted from 1)
    assert math.isnan(reading.sums["train_loss"])

    fresh = parts.device_step(parts.fresh_trainee())
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 1, step 2; .*epoch's end"):
        train_device_epoch(fresh, poisoned, 1, 0, steps=3, last_dir=Path("nowhere"))


def test_a_non_finite_gradient_is_named_as_such(make_parts: Callable[..., Parts]) -> None:
    parts = make_parts()
    trainee = parts.trainee
    counters = DeviceCounters.starting(5, trainee.device)
    param = next(trainee.model.parameters())
    handle = param.register_hook(lambda grad: grad * math.inf)
    before = params_of(trainee)
    clips, scores = parts.batches.batch(0, 0)
    sync_free_step(trainee, clips, scores, counters, parts.lrs, parts.lr, two_views=False)
    handle.remove()
    reading = counters.read()
    assert (reading.step, reading.first_bad, reading.bad_what) == (6, 6, 2)
    assert math.isfinite(reading.sums["train_loss"])
    assert all(torch.equal(a, b) for a, b in zip(before, params_of(trainee), strict=True))


def test_an_interrupted_epoch_goes_on_with_the_same_numbers(make_parts: Callable[..., Parts]) -> None:
    parts = make_parts()
    steps = 3
    whole = train_device_epoch(parts.device_step(), parts.batches, 1, 0, steps=steps, last_dir=Path("x"))
    assert whole["step"] == steps
    assert whole["lr"] == pytest.approx(float(parts.lrs[steps - 1]))

    class Stop(Exception):
        pass

    positions: list[EpochPosition] = []

    def on_step(position: EpochPosition) -> None:
        positions.append(position)
        if position.index == 1:
            raise Stop

    device_step = parts.device_step(parts.fresh_trainee())
    with pytest.raises(Stop):
        train_device_epoch(
            device_step, parts.batches, 1, 0, steps=steps, last_dir=Path("x"),
            on_step=on_step, stop_requested=lambda: True,
        )  # fmt: skip
    (position,) = positions
    assert (position.epoch, position.index, position.step) == (1, 1, 1)
    assert position.share is not None
    resumed = train_device_epoch(
        device_step, parts.batches, 1, 0, steps=steps, last_dir=Path("x"), start=position
    )
    assert resumed == whole


@pytest.mark.parametrize("poison", [True, False])
def test_a_stop_after_a_non_finite_step_raises_instead_of_checkpointing(
    poison: bool, make_parts: Callable[..., Parts]
) -> None:
    """A pre-emption stop reads the counters first: a checkpoint there would keep a skipped update that
    the resumed run (its counters restarted) could never report; the loader path raised at the step."""
    parts = make_parts()
    batches = parts.batches
    if poison:  # batch 1 (step 2) is NaN
        batches = Poisoned(
            batches.store, frames=batches.frames, channels=batches.channels, batch_size=4, augment=None,
            seed=0,
        )  # fmt: skip
    requests = iter([False, True, False])  # the signal comes during step 2
    checkpoints: list[EpochPosition] = []  # on_step stands for the run's pre-emption checkpoint

    def epoch() -> dict[str, float]:
        return train_device_epoch(
            parts.device_step(), batches, 1, 0, steps=3, last_dir=Path("nowhere"),
            on_step=checkpoints.append, stop_requested=lambda: next(requests),
        )  # fmt: skip

    if poison:
        with pytest.raises(NonFiniteLossError) as raised:
            epoch()
        assert checkpoints == []  # raised at the stop, before its checkpoint
        assert raised.match(r"non-finite loss at epoch 1, step 2; .*found at the pre-emption stop")
    else:
        assert epoch()["step"] == 3
        (position,) = checkpoints
        assert (position.epoch, position.index, position.step) == (1, 2, 2)


def test_pair_selection_skips_its_check_only_for_checked_scores() -> None:
    nan = torch.tensor([0.0, float("nan"), 1.0])
    with pytest.raises(ValueError, match="finite"):
        select_pairs(nan)
    trusted_select_pairs(nan)  # no check, no host sync
    checked = build_objective(LossConfig(name="mse+wcl"), ScoreLabels(checked_finite=True))
    plain = build_objective(LossConfig(name="mse+wcl"), ScoreLabels())
    assert checked.contrastive.selector is trusted_select_pairs  # type: ignore[union-attr]
    assert plain.contrastive.selector is select_pairs  # type: ignore[union-attr]


def test_tiny_pretraining_on_device_data_runs_end_to_end(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path, one_thread: None
) -> None:
    config = make_tiny_pretrain_config(**{"data.device_data": True, "loss.memory": 4})
    first = pretrain(config, tmp_path / "a")
    again = pretrain(config, tmp_path / "b")
    assert [row["epoch"] for row in first.history] == [1, 2]
    for row in first.history:
        assert all(math.isfinite(value) for value in row.values()), row
    assert first.history == again.history  # seeded: the same numbers twice
    assert (tmp_path / "a" / "checkpoints" / "best").is_dir()


def test_device_data_is_refused_where_it_cannot_make_the_batches(
    make_tiny_pretrain_config: Callable[..., Config], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"data\.sampling=segments"):
        plan_pretraining(
            make_tiny_pretrain_config(**{"data.device_data": True, "data.sampling": "resample"}),
            tmp_path / "r",
        )
    with pytest.raises(ConfigError, match="one process"):
        plan_pretraining(
            make_tiny_pretrain_config(**{"data.device_data": True}), tmp_path / "w", world_size=2
        )


def persistent_state(device_step: DeviceStep) -> dict[str, torch.Tensor]:
    """Every tensor a step changes and a later step (or the epoch's end) reads, by where it is found."""
    trainee, counters = device_step.trainee, device_step.counters
    state = {f"model.{k}": v for k, v in trainee.model.state_dict(keep_vars=True).items()}
    for index, param in enumerate(trainee.model.parameters()):
        state |= {f"adam[{index}].{k}": v for k, v in trainee.optimizer.state[param].items()}
    state |= {"lr": trainee.optimizer.param_groups[0]["lr"], "device_step.lr": device_step.lr}
    assert counters.sums is not None
    counters_state = (counters.step, counters.first_bad, counters.bad_what, counters.sums)
    return state | dict(zip(("step", "first_bad", "bad_what", "sums"), counters_state, strict=True))


def test_the_step_changes_its_state_only_in_place(make_parts: Callable[..., Parts]) -> None:
    """What lets a recorded step be replayed (learner.training.step_graph): a Python attribute rebound to a
    new tensor during recording would be read at its old address by every replay."""
    parts = make_parts()
    device_step = parts.device_step()
    clips, scores = parts.batches.batch(1, 0)
    device_step(clips, scores)  # Adam's state and the sums exist from the first step on
    before = persistent_state(device_step)
    addresses = {name: tensor.data_ptr() for name, tensor in before.items()}
    poisoned = clips * math.nan  # the non-finite flags are written too
    for batch in (parts.batches.batch(1, 1)[0], poisoned, clips):
        device_step(batch, scores)
    after = persistent_state(device_step)
    assert after.keys() == before.keys()
    moved = [name for name in before if after[name] is not before[name]]
    assert not moved, f"rebound to new tensors: {moved}"
    assert {name: tensor.data_ptr() for name, tensor in after.items()} == addresses
    reading = device_step.counters.read()
    assert (reading.step, reading.first_bad, reading.bad_what) == (4, 3, 1)


def test_a_graphed_run_trains_as_the_eager_run(
    make_parts: Callable[..., Parts], replaying_recorder: Any
) -> None:
    """Two epochs through GraphedStep (batches copied into fixed buffers, counters restarted in place,
    the epoch's first step eager to measure the gradient share) equal the eager run bit for bit."""
    parts = make_parts()
    steps = len(parts.batches)
    eager = parts.device_step(parts.fresh_trainee())
    graphed = parts.device_step(parts.fresh_trainee())
    graphed.graph(replaying_recorder, warmup=1)
    rows = {}
    for name, device_step in (("eager", eager), ("graphed", graphed)):
        seed_everything(parts.config.seed, deterministic=True)  # the same dropout draws
        rows[name] = [
            train_device_epoch(
                device_step, parts.batches, epoch, (epoch - 1) * steps, steps=steps, last_dir=Path("x")
            )
            for epoch in (1, 2)
        ]
    assert rows["graphed"] == rows["eager"]
    assert all("grad_share_contrastive" in row for row in rows["graphed"])
    # epoch 1: the share's step, a warm-up, the recording, replays; epoch 2: the share's step, replays
    assert (replaying_recorder.warmups, len(replaying_recorder.recorded)) == (1, 1)
    for a, b in zip(params_of(eager.trainee), params_of(graphed.trainee), strict=True):
        assert torch.equal(a, b)


def test_cuda_graph_is_refused_where_the_step_cannot_be_recorded(
    make_tiny_pretrain_config: Callable[..., Config],
    make_parts: Callable[..., Parts],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    graph = {"runtime.cuda_graph": True}
    cases = [
        ({}, r"data\.device_data=true"),
        (DEVICE_DATA | {"runtime.device": "cpu"}, r"needs a CUDA device .* runtime\.device=cpu"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            plan_pretraining(make_tiny_pretrain_config(**(overrides | graph)), tmp_path / "g")
    with monkeypatch.context() as patched:  # past the device check, to the memory's
        patched.setattr(plan_module, "runs_on_cuda", lambda requested: True)
        patched.setattr(plan_module, "triton_installed", lambda: True)  # runtime.compile's GPU kernels
        config = make_tiny_pretrain_config(**(DEVICE_DATA | graph | {"loss.memory": 4}))
        with pytest.raises(ConfigError, match=r"loss\.memory=4"):
            plan_pretraining(config, tmp_path / "m")
        for mode in ("reduce-overhead", "max-autotune"):  # their own CUDA graphs
            config = make_tiny_pretrain_config(**(DEVICE_DATA | graph | {"runtime.compile": mode}))
            with pytest.raises(ConfigError, match=f"runtime.compile={mode} records CUDA graphs of its own"):
                plan_pretraining(config, tmp_path / "c")
        plan_pretraining(make_tiny_pretrain_config(**(DEVICE_DATA | graph | {"runtime.compile": "default"})),
                         tmp_path / "d")  # fmt: skip
    parts = make_parts()
    trainee = replace(parts.trainee, scaler=torch.amp.GradScaler("cpu", enabled=True))
    plan = plan_pretraining(parts.config, tmp_path / "s")
    scans = prepare_scans(plan, DistInfo(), open_run(plan, DistInfo()))
    config = apply_overrides(parts.config, graph)
    with pytest.raises(ConfigError, match="fp16 loss scaling"):
        start_device_run(config, scans, trainee, lambda step: 1e-3, len(parts.batches))
