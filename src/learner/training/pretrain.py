"""Pretraining (Algorithm 1): encoder θ_V + regression head θ_M trained on λ·MSE + (1 − λ)·contrastive.

:func:`pretrain` checks the plan first (config, run directory, manifest, split, model and objective before
any work: :mod:`learner.training.plan`), joins the processes and hands over to :func:`_pretrain`, a short
driver that reads in the order a run happens, one named part per stage, each callable alone:

1. seeds, then :func:`open_run`: the run directory (rank 0 alone writes files);
2. :func:`prepare_scans`: the decode-once scan cache, built and checked once per process
   (:func:`build_scan_cache`), the usable train / val scans, ``splits.csv``, the score standardisation
   (train split) → :class:`~learner.training.loaders.Scans`;
3. :func:`~learner.training.loaders.build_loaders`: datasets, sampler, loaders and steps per epoch →
   :class:`~learner.training.loaders.Loaders`;
4. :func:`build_model_and_objective`: model, optimiser, objective, memory, precision → ``Trainee``;
5. then the epoch loop of :mod:`learner.training.epoch`: :func:`~learner.training.epoch.restore` (with
   ``resume``, everything a step depends on), and each epoch :func:`~learner.training.epoch.train_one_epoch`
   (Alg. 1's updates) then :func:`~learner.training.epoch.validate_and_checkpoint`;
6. :func:`finish`: ``metrics.json`` and the training curves.

Parts 1–4 and the restore are :func:`prepare_run`; the epochs are :func:`epoch_loop`, a generator that a
lone run drains and that runs side by side take turns on (:mod:`learner.training.side_by_side`).

``data.device_data`` (the GPU path) takes the updates from :mod:`learner.training.device_epoch` instead, and
validates clips held on the device (:class:`~learner.data.clip_store.EvalClips`).

A new run directory that fails before its first checkpoint is deleted.

Choices the paper leaves open (Table 2 gives batch 16, Adam, LR 1e-3, 100 epochs, cosine annealing):

* the LR follows :func:`cosine_lr` per optimiser step over all epochs, a pure function of the step, so a
  resumed run needs only the step count (``optim.scheduler=constant`` keeps the initial LR); with
  ``optim.warmup_epochs`` it first rises linearly over that many epochs' steps (:func:`scheduled_lr`);
* ``optim.batch_size`` is the GLOBAL batch: with N processes each loads batch_size / N clips and the loss
  is evaluated on the gathered batch (:mod:`learner.training.distributed`), so 1 and N processes optimise
  the same objective;
* each epoch shuffles the train scans by (seed, epoch) and drops the last incomplete batch (the contrastive
  ranking wants full batches; DDP needs equal ones);
* validation uses centre frames without augmentation and reports MAE, RMSE and Pearson r in score units next
  to always predicting the train mean; ``checkpoints/best`` is the lowest val MAE (earliest epoch on ties).

A self-supervised ``loss.name`` (``vicreg``) runs the same loop on pixels alone: it trains on the train AND
val scans (never test), each item two train-mode views of a scan (:class:`~learner.data.datasets.TwoViews`);
the objective sees the two views' embeddings and no score, the regression head gets no gradient (it stays
as initialised), and validation is the objective on fixed views of the val scans (``val_loss``;
``checkpoints/best`` its lowest).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
from rich.progress import Progress

from learner.atomic import atomic_path, finite
from learner.config import Config, OptimConfig, Optimizer, Schedule
from learner.data.cache import CacheReport, ScanCache, build_cache, default_cache_root
from learner.data.preprocess import Preprocessor
from learner.data.provenance import data_source
from learner.data.scales import scale_from_config
from learner.data.scan_kinds import kinds_of_records
from learner.errors import ConfigError
from learner.layout import RunLayout
from learner.losses.registry import ScoreLabels, build_objective, build_view_objective
from learner.losses.regression import ScoreStandardiser
from learner.models.registry import build_regressor
from learner.runs import RunDir, open_run_dir, removed_unless_started
from learner.timing import stage
from learner.training.checkpoint import (
    CheckpointMeta,
    EncoderMeta,
    init_record,
)
from learner.training.checkpoint_writer import CheckpointSaver
from learner.training.compiled import compile_network
from learner.training.curves import CURVES_FILE, plot_training_curves
from learner.training.device import resolve_device
from learner.training.device_epoch import drain, start_device_run
from learner.training.distributed import DistInfo, barrier, distributed, launcher_world_size, wrap_model
from learner.training.epoch import (
    LoopState,
    Trainee,
    preemption_checkpoint,
    progress_bar,
    restore,
    train_one_epoch,
    validate_and_checkpoint,
)
from learner.training.loaders import Loaders, Scans, build_loaders
from learner.training.loggers import MetricsLogger, open_loggers
from learner.training.memory import CrossBatchMemory
from learner.training.plan import PretrainPlan, plan_pretraining
from learner.training.preemption import Preemption, checkpoint_on_signal
from learner.training.resume import check_resumable, record_extension
from learner.training.seeding import seed_everything

log = logging.getLogger(__name__)


class OptimizerFactory(Protocol):
    """An optimiser class as :func:`pretrain` builds it: parameters, learning rate and weight decay."""

    def __call__(
        self, params: Iterable[torch.Tensor], *, lr: float, weight_decay: float
    ) -> torch.optim.Optimizer: ...


OPTIMIZERS: dict[Optimizer, OptimizerFactory] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def cosine_lr(step: int, total: int, base: float) -> float:
    """Cosine annealing from ``base`` towards 0: the LR of update ``step`` (0-based) of ``total`` updates."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def constant_lr(step: int, total: int, base: float) -> float:
    """``base`` at every step."""
    return base


LR_SCHEDULES: dict[Schedule, Callable[[int, int, float], float]] = {
    "cosine": cosine_lr,
    "constant": constant_lr,
}


def scheduled_lr(schedule: Schedule, step: int, total: int, base: float, warmup: int = 0) -> float:
    """The LR of update ``step`` (0-based) of ``total``: a linear warm-up ``base · (step + 1) / warmup``
    over the first ``warmup`` updates (so the last warm-up update reaches ``base``), then ``schedule``
    over the remaining ``total − warmup`` updates as if they were the whole run. ``warmup = 0`` is the
    schedule alone."""
    if step < warmup:
        return base * (step + 1) / warmup
    return LR_SCHEDULES[schedule](step - warmup, total - warmup, base)


@dataclass(frozen=True)
class PretrainResult:
    """The metrics rows (``metrics.csv`` columns) of the best and the last epoch, and every epoch's row
    (the same on every rank)."""

    run_dir: Path
    best: dict[str, float]
    last: dict[str, float]
    history: list[dict[str, float]]


def pretrain(
    config: Config, run_dir: str | os.PathLike[str], *, resume: bool = False, force: bool = False
) -> PretrainResult:
    """Pretrain a ScoreRegressor on the manifest's train split (Alg. 1) into ``run_dir``.

    Args:
        config: the whole run (``data.manifest`` must be set); stored as ``run_dir/config.yaml``.
        run_dir: receives config.yaml, run.json, log.txt, splits.csv, metrics.csv, metrics.json and
            ``checkpoints/{last,best}``.
        resume: continue from ``checkpoints/last`` (weights, optimiser, schedule step, RNG states, epoch);
            only the ``runtime`` section may differ from the stored config.
        force: wipe a non-empty ``run_dir`` first.

    Raises:
        ConfigError, ManifestError, RunDirError, CheckpointError: bad input, each named in one line.
        NonFiniteLossError: the loss or a gradient became NaN/inf (names epoch and step; ``checkpoints/last``
            is kept).
    """
    world_size = launcher_world_size()  # torchrun's or srun's; checked again once the group is up
    plan = plan_pretraining(config, run_dir, resume=resume, force=force, world_size=world_size)
    use_cuda = resolve_device(config.runtime.device).type == "cuda"
    with distributed("cuda" if use_cuda else "cpu") as info:
        device = torch.device("cuda", info.local_rank) if use_cuda else torch.device("cpu")
        with removed_unless_started(plan.run_dir, new=info.is_main and not resume):
            return _pretrain(plan, info, device)


def _pretrain(plan: PretrainPlan, info: DistInfo, device: torch.device) -> PretrainResult:
    """The run, part by part (the module docstring lists them); every rank runs all of it."""
    prepared = prepare_run(plan, info, device)
    saver = CheckpointSaver(plan.config.runtime.checkpoint_every)  # leaving it joins the write in flight
    bar = progress_bar(enabled=info.is_main and sys.stdout.isatty())
    with bar, checkpoint_on_signal() as sig, saver:
        state = drain(epoch_loop(prepared, sig, saver, bar))
    return finish(plan, prepared.run, prepared.scans, state, prepared.sinks)


@dataclass(frozen=True)
class PreparedRun:
    """A pretraining up to its epoch loop (:func:`prepare_run`): the plan, the run directory (None off rank
    0), scans, loaders, the trainee (wrapped for DDP), the restored loop state, every update's LR
    (``lr_at``), the metrics sinks and the two checkpoint folders."""

    plan: PretrainPlan
    run: RunDir | None
    scans: Scans
    loaders: Loaders
    trainee: Trainee
    state: LoopState
    lr_at: Callable[[int], float]
    sinks: list[MetricsLogger]
    last_dir: Path
    best_dir: Path


def prepare_run(plan: PretrainPlan, info: DistInfo, device: torch.device) -> PreparedRun:
    """Parts 1–4 and the restore of the epoch loop, in order: seeds, run directory, scans, loaders, model
    and objective, ``checkpoints/last`` with ``resume``, the LR schedule (an extension recorded), the DDP
    wrap, ``runtime.compile``, the metrics sinks. Global RNG draws (initialisation) follow its seeding."""
    config, run_dir, optim = plan.config, plan.run_dir, plan.config.optim
    seed_everything(config.seed, deterministic=device.type == "cpu")
    stored_epochs = check_resumable(config, run_dir) if plan.resume else optim.epochs
    run = open_run(plan, info)
    scans = prepare_scans(plan, info, run)
    loaders = build_loaders(config, scans, info, device)
    trainee = build_model_and_objective(config, scans.standardiser, device, kinds_of_records(scans.train))
    last_dir, best_dir = (RunLayout(run_dir).checkpoint(which) for which in ("last", "best"))
    state = restore(plan, info, run, trainee, last_dir, best_dir)
    if run is not None and plan.resume:
        run.record_resume()
    schedule = lr_schedule(optim, loaders.steps_per_epoch)
    if run is not None and stored_epochs != optim.epochs:
        record_extension(run, config, stored_epochs, state.step, loaders.steps_per_epoch, schedule)
    total_steps = optim.epochs * loaders.steps_per_epoch

    def lr_at(step: int) -> float:
        return schedule(step, total_steps, optim.lr)

    unused = "mse" not in trainee.objective.names  # a contrastive-only objective never reaches the head
    network = wrap_model(trainee.model, info, device, find_unused_parameters=unused)
    trainee = replace(trainee, network=compile_network(network, config.runtime.compile))
    sinks = open_loggers(config.runtime.logger, run_dir, config) if run is not None else []
    return PreparedRun(plan, run, scans, loaders, trainee, state, lr_at, sinks, last_dir, best_dir)


def epoch_loop(
    prepared: PreparedRun, sig: Preemption, saver: CheckpointSaver, bar: Progress
) -> Generator[None, None, LoopState]:
    """The epochs left, each its updates then :func:`~learner.training.epoch.validate_and_checkpoint`;
    returns the final :class:`LoopState`. Yields after every update of the device-data path (a loader-path
    epoch is one piece), so that runs side by side can take turns; a lone run drains it."""
    config, trainee, loaders = prepared.plan.config, prepared.trainee, prepared.loaders
    optim, last_dir, state, run = config.optim, prepared.last_dir, prepared.state, prepared.run
    device_run = None
    if config.data.device_data:  # train batches, the step and the val clips, all on the device
        device_run = start_device_run(
            config, prepared.scans, trainee, prepared.lr_at, loaders.steps_per_epoch, preemption=sig
        )
    for epoch in range(len(state.history) + 1, optim.epochs + 1):  # SLURM: SIGTERM → a checkpoint first
        options: dict[str, Any] = dict(
            last_dir=last_dir, progress=bar, epochs=optim.epochs, start=state.position,
            on_step=preemption_checkpoint(sig, state, trainee, run, last_dir, saver),
        )  # fmt: skip
        if device_run is None:
            row = train_one_epoch(
                trainee, loaders, epoch, state.step, prepared.lr_at, grad_clip=optim.grad_clip, **options
            )
        else:  # its step clips with optim.grad_clip too (start_device_run)
            row = yield from device_run.epoch_steps(epoch=epoch, step=state.step, **options)
        state = validate_and_checkpoint(
            row, state, trainee, loaders, run, prepared.sinks, last_dir=last_dir,
            best_dir=prepared.best_dir, batch_size=optim.batch_size, progress=bar, epochs=optim.epochs,
            saver=saver, val_clips=None if device_run is None else device_run.val,
        )  # fmt: skip
    return state


def open_run(plan: PretrainPlan, info: DistInfo) -> RunDir | None:
    """Create (or reopen) the run directory on rank 0 and record where ``model.init`` came from; None on the
    other ranks, which wait until it exists (``--force`` must have wiped it before any rank reads it)."""
    config = plan.config
    run = (
        open_run_dir(plan.run_dir, config, resume=plan.resume, force=plan.force, kind="pretraining")
        if info.is_main
        else None
    )
    if run is not None and not plan.resume and config.model.init is not None:
        run.record(init=init_record(config.model.init))  # the run or file the encoder starts from
    barrier()  # --force must have wiped the folder before any rank looks for a checkpoint in it
    return run


def build_scan_cache(plan: PretrainPlan, info: DistInfo) -> tuple[CacheReport, ScanCache]:
    """Decode every scan of the planned manifest into the scan cache and check every entry, once per process:
    rank 0 first, then the other ranks, which find every array cached and collect the same skips
    (unreadable scans with ``data.skip_bad_scans``). Returns the report and the cache the datasets read
    (``(T', H, W)`` uint8 per scan, memory-mapped)."""
    data, runtime = plan.config.data, plan.config.runtime
    cache = ScanCache(default_cache_root(plan.manifest, runtime.cache_dir), Preprocessor.from_config(data))
    if not info.is_main:
        barrier()  # rank 0 decodes first
    with stage("cache"):
        report = build_cache(
            plan.manifest,
            data,
            runtime.workers,
            data.skip_bad_scans,
            cache_dir=runtime.cache_dir,
            cache=cache,  # checked once: the datasets read through this cache and skip what it checked
        )
    if info.is_main:
        barrier()  # the other ranks may read the cache now
    return report, cache


def prepare_scans(plan: PretrainPlan, info: DistInfo, run: RunDir | None) -> Scans:
    """The scan cache (:func:`build_scan_cache`), the usable scans of the split (skipped scans are counted,
    never silent) and the score standardisation fitted on the train split's scans (never on the val scans
    a self-supervised objective also trains on); rank 0 (``run``) writes ``splits.csv`` and logs the split.

    Raises:
        ConfigError: the train or val split has no usable scan.
    """
    config, manifest = plan.config, plan.manifest
    report, cache = build_scan_cache(plan, info)
    skipped = {scan_id for scan_id, _ in report.skipped}
    train_records = [r for r in manifest.by_split("train") if r.scan_id not in skipped]
    val_records = [r for r in manifest.by_split("val") if r.scan_id not in skipped]
    for name, records in (("train", train_records), ("val", val_records)):
        if not records:
            raise ConfigError(f"{config.data.manifest}: the {name} split has no usable scans (data.split)")
    standardiser = ScoreStandardiser.fit([r.score for r in train_records])  # before val joins a two-view run
    two_views = build_view_objective(config.loss) is not None  # self-supervised: no scores needed
    if two_views:
        train_records = train_records + val_records  # train AND val scans; the test split stays unseen
    if run is not None:
        with atomic_path(run.layout.splits) as tmp:
            splits = pd.DataFrame(sorted(plan.splits.items()), columns=["patient_id", "split"])
            splits.to_csv(tmp, index=False)
        origin = "the manifest's" if plan.split_from_file else f"made with seed {config.seed}"
        log.info("split: %s; %d train / %d val scans", origin, len(train_records), len(val_records))
        if skipped:
            log.warning("skipped %d unreadable scan(s): %s", len(skipped), ", ".join(sorted(skipped)))
    return Scans(train_records, val_records, skipped, cache, standardiser, two_views)


def build_model_and_objective(
    config: Config, standardiser: ScoreStandardiser, device: torch.device, scan_kinds: tuple[str, ...] = ()
) -> Trainee:
    """θ = {θ_V, θ_M} on ``device`` (channels-last where configured), its optimiser, the objective (label
    objective on ``standardiser``'s scores, or the two-view one), the cross-batch memory, mixed precision
    (GPU only) and checkpoint meta, ``scan_kinds`` in it; ``network`` is the model until DDP wraps it."""
    data, runtime = config.data, config.runtime
    model = build_regressor(config.model, data.channels, data.size, frames=data.frames).to(device)
    if runtime.channels_last if device.type == "cuda" else runtime.cpu_channels_last:
        # conv kernels prefer NHWC on tensor cores; torch's Module.to overloads lack memory_format
        model = model.to(memory_format=model.encoder.channels_last)  # type: ignore[call-overload]
    optim = config.optim
    optimizer = OPTIMIZERS[optim.optimizer](model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    edges = scale_from_config(data).class_edges()  # device data: scores checked once, not every batch
    labels = ScoreLabels(standardiser, edges, checked_finite=data.device_data)
    objective = build_view_objective(config.loss) or build_objective(config.loss, labels)
    memory = CrossBatchMemory(config.loss.memory)  # loss.memory: earlier steps' pairs as references
    amp_dtype = _amp_dtype(device, runtime.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    encoder_meta = EncoderMeta(config.model.backbone, model.encoder.embed_dim, data.channels, data.size)
    meta = CheckpointMeta(config, standardiser, encoder_meta, scan_kinds=scan_kinds)
    return Trainee(model, model, optimizer, scaler, objective, memory, amp_dtype, standardiser, meta, device)


def lr_schedule(optim: OptimConfig, steps_per_epoch: int) -> Callable[[int, int, float], float]:
    """``(step, total, base) → LR`` of ``optim.scheduler`` after a warm-up over
    ``round(optim.warmup_epochs · steps_per_epoch)`` updates (:func:`scheduled_lr`)."""
    warmup_steps = round(optim.warmup_epochs * steps_per_epoch)  # optim.warmup_epochs ≤ epochs (config)

    def schedule(step: int, total: int, base: float) -> float:
        return scheduled_lr(optim.scheduler, step, total, base, warmup_steps)

    return schedule


def finish(
    plan: PretrainPlan, run: RunDir | None, scans: Scans, state: LoopState, sinks: list[MetricsLogger]
) -> PretrainResult:
    """Rank 0 draws the training curves once (a report redraws them) and writes ``metrics.json`` (best and
    last rows, the train mean, the data source, scan counts); then ``sinks`` close (a tracker adds both)."""
    if run is not None:
        plot_training_curves(state.history, run.file(CURVES_FILE), vector=plan.config.runtime.vector_figures)
        run.write_metrics({
            "kind": "pretraining", "best": finite(state.best), "last": finite(state.history[-1]),
            "train_mean": scans.standardiser.mean, "data_source": data_source(plan.manifest),
            "scans": {"train": len(scans.train), "val": len(scans.val), "skipped": len(scans.skipped)},
        })  # fmt: skip
    for sink in sinks:
        sink.close()
    return PretrainResult(plan.run_dir, best=state.best, last=state.history[-1], history=state.history)


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 where the GPU supports it (no loss scaling needed), else fp16 with a GradScaler; None on CPU."""
    if device.type != "cuda" or not amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
