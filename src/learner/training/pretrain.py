"""Pretraining (Algorithm 1): encoder θ_V + regression head θ_M trained on λ·MSE + (1 − λ)·contrastive.

:func:`pretrain` reads in the order a run happens: the plan (config, run directory, manifest, split, model
and objective checked before any work: :mod:`learner.training.plan`) → device and processes → seeds → run
directory → scan cache → score standardisation (train split) → datasets and loaders → model, optimiser,
objective → resume (recovering a checkpoint an interrupted save left aside) → the epoch loop (train,
validate, checkpoint, log) → final metrics. A new run directory that fails before its first checkpoint is
deleted.

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
val scans (never test), each item two train-mode views of a scan (:class:`TwoViews`); the objective sees
the two views' embeddings and no score, the regression head gets no gradient (it stays as initialised),
and validation is the objective on fixed views of the val scans (``val_loss``; ``checkpoints/best`` its
lowest).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from learner.atomic import atomic_path, finite
from learner.config import Config, Optimizer, Schedule
from learner.data.augment import ClipAugment
from learner.data.cache import ScanCache, build_cache, default_cache_root
from learner.data.datasets import ScanDataset, TwoViews, make_loader, views_to_batch
from learner.data.phantom.ground_truth import data_source
from learner.data.preprocess import Preprocessor
from learner.data.scales import scale_from_config
from learner.data.splits import SPLITS_FILE
from learner.errors import ConfigError, NonFiniteLossError
from learner.losses.registry import ScoreLabels, ViewObjective, build_objective, build_view_objective
from learner.losses.regression import ScoreStandardiser
from learner.models.registry import build_regressor
from learner.runs import open_run_dir, removed_unless_started
from learner.timing import stage
from learner.training.checkpoint import (
    CheckpointMeta,
    EncoderMeta,
    init_record,
    load_checkpoint,
    load_train_state,
    recover_checkpoint,
    save_checkpoint,
)
from learner.training.curves import CURVES_FILE, plot_training_curves
from learner.training.device import resolve_device
from learner.training.distributed import (
    DistInfo,
    all_gather_with_grad,
    barrier,
    broadcast_object,
    distributed,
    wrap_model,
)
from learner.training.faults import fault_point
from learner.training.finite import finite_gradients, non_finite_message
from learner.training.loggers import CsvLogger, open_loggers
from learner.training.memory import CrossBatchMemory
from learner.training.plan import PretrainPlan, plan_pretraining
from learner.training.resume import check_resumable, record_extension
from learner.training.seeding import rng_state, seed_everything, set_rng_state
from learner.training.validation import predict_scores, regression_metrics, view_loss

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
    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's; checked again once the group is up
    plan = plan_pretraining(config, run_dir, resume=resume, force=force, world_size=world_size)
    use_cuda = resolve_device(config.runtime.device).type == "cuda"
    with distributed("cuda" if use_cuda else "cpu") as info:
        device = torch.device("cuda", info.local_rank) if use_cuda else torch.device("cpu")
        with removed_unless_started(plan.run_dir, "checkpoints/last", new=info.is_main and not resume):
            return _pretrain(plan, info, device)


def _pretrain(plan: PretrainPlan, info: DistInfo, device: torch.device) -> PretrainResult:
    config, run_dir, resume = plan.config, plan.run_dir, plan.resume
    optim, data, runtime = config.optim, config.data, config.runtime
    # ---- seeds and run directory (rank 0 alone writes files) ----
    seed_everything(config.seed, deterministic=device.type == "cpu")
    stored_epochs = check_resumable(config, run_dir) if resume else optim.epochs
    run = open_run_dir(run_dir, config, resume=resume, force=plan.force) if info.is_main else None
    if run is not None and not resume and config.model.init is not None:
        run.record(init=init_record(config.model.init))  # the run or file the encoder starts from
    barrier()  # --force must have wiped the folder before any rank looks for a checkpoint in it
    # ---- decode-once cache of the planned manifest (skipped scans are counted, never silent) ----
    manifest = plan.manifest
    if info.is_main:
        with stage("cache"):
            report = build_cache(
                manifest, data, runtime.workers, data.skip_bad_scans, cache_dir=runtime.cache_dir
            )
    barrier()  # rank 0 decodes; the other ranks then find every array cached and collect the same skips
    if not info.is_main:
        report = build_cache(
            manifest, data, runtime.workers, data.skip_bad_scans, cache_dir=runtime.cache_dir
        )
    skipped = {scan_id for scan_id, _ in report.skipped}
    train_records = [r for r in manifest.by_split("train") if r.scan_id not in skipped]
    val_records = [r for r in manifest.by_split("val") if r.scan_id not in skipped]
    for name, records in (("train", train_records), ("val", val_records)):
        if not records:
            raise ConfigError(f"{data.manifest}: the {name} split has no usable scans (data.split)")
    two_views = build_view_objective(config.loss) is not None  # self-supervised: no scores needed
    if two_views:
        train_records = train_records + val_records  # train AND val scans; the test split stays unseen
    if run is not None:
        with atomic_path(run.file(SPLITS_FILE)) as tmp:
            splits = pd.DataFrame(sorted(plan.splits.items()), columns=["patient_id", "split"])
            splits.to_csv(tmp, index=False)
        origin = "the manifest's" if plan.split_from_file else f"made with seed {config.seed}"
        log.info("split: %s; %d train / %d val scans", origin, len(train_records), len(val_records))
        if skipped:
            log.warning("skipped %d unreadable scan(s): %s", len(skipped), ", ".join(sorted(skipped)))
    standardiser = ScoreStandardiser.fit([r.score for r in train_records])
    # ---- datasets and loaders: train = random frame per segment + augmentation; val = centre frames ----
    cache = ScanCache(default_cache_root(manifest, runtime.cache_dir), Preprocessor.from_config(data))
    clip_args: dict[str, Any] = {
        "frames": data.frames,
        "sampling": data.sampling,
        "channels": data.channels,
        "seed": config.seed,
    }
    augment = ClipAugment.from_config(data)
    train_scans = ScanDataset(train_records, cache, train=True, augment=augment, **clip_args)
    val_set: ScanDataset | TwoViews = ScanDataset(val_records, cache, train=False, augment=None, **clip_args)
    train_set: ScanDataset | TwoViews = train_scans
    if two_views:  # two train-mode draws of each scan; the val views stay those of epoch 0
        train_set = TwoViews(train_scans)
        val_set = TwoViews(ScanDataset(val_records, cache, train=True, augment=augment, **clip_args))
    if optim.batch_size % info.world_size:
        raise ConfigError(
            f"optim.batch_size={optim.batch_size} must divide evenly over {info.world_size} processes"
        )
    sampler: DistributedSampler[tuple[torch.Tensor, torch.Tensor, int]] = DistributedSampler(
        train_set, info.world_size, info.rank, seed=config.seed, drop_last=True
    )
    loader_args: dict[str, Any] = {"num_workers": runtime.workers, "seed": config.seed}
    loader_args["pin_memory"] = device.type == "cuda"
    local_batch = optim.batch_size // info.world_size
    train_loader = make_loader(
        train_set, batch_size=local_batch, shuffle=False, drop_last=True, sampler=sampler, **loader_args
    )
    val_loader = make_loader(val_set, batch_size=optim.batch_size, shuffle=False, **loader_args)
    steps_per_epoch = min(len(train_loader), optim.max_steps_per_epoch or len(train_loader))
    if steps_per_epoch == 0:
        raise ConfigError(f"optim.batch_size={optim.batch_size} exceeds the {len(train_records)} train scans")
    total_steps = optim.epochs * steps_per_epoch
    warmup_steps = round(optim.warmup_epochs * steps_per_epoch)  # optim.warmup_epochs ≤ epochs (config)
    # ---- model θ = {θ_V, θ_M}, optimiser, objective, mixed precision (GPU only) ----
    model = build_regressor(config.model, data.channels, data.size, frames=data.frames).to(device)
    if runtime.channels_last if device.type == "cuda" else runtime.cpu_channels_last:
        # conv kernels prefer NHWC on tensor cores; torch's Module.to overloads lack memory_format
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = OPTIMIZERS[optim.optimizer](model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    labels = ScoreLabels(standardiser, scale_from_config(data).class_edges())
    objective = build_view_objective(config.loss) or build_objective(config.loss, labels)
    memory = CrossBatchMemory(config.loss.memory)  # loss.memory: earlier steps' pairs as references
    amp_dtype = _amp_dtype(device, runtime.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    encoder_meta = EncoderMeta(config.model.backbone, model.encoder.embed_dim, data.channels, data.size)
    meta = CheckpointMeta(config=config, score_standardisation=standardiser, encoder=encoder_meta)
    # ---- resume: everything a step depends on is restored, so the continuation is bit-identical ----
    last_dir, best_dir = run_dir / "checkpoints" / "last", run_dir / "checkpoints" / "best"
    step, history, best = 0, [], {}
    if resume and info.is_main:  # a kill between a save's two renames: put the newest complete copy back
        recover_checkpoint(best_dir)
        recover_checkpoint(last_dir)
    barrier()  # rank 0 recovers; then every rank reads the same checkpoint
    if resume and last_dir.is_dir():
        load_checkpoint(last_dir, model)
        state = load_train_state(last_dir)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, history, best = state["step"], state["history"], state["best"]
        set_rng_state(state["rng"])
        memory.load_state_dict(state.get("memory", {}), device)
        log.info("resumed %s at epoch %d, step %d", run_dir, len(history), step)
        if run is not None:  # a kill after the last save but before this write would lose that epoch's row
            CsvLogger(run_dir, config).log(history[-1], history)
    elif resume:
        log.info("resumed %s: no checkpoint was saved yet, starting at epoch 1", run_dir)
    if run is not None and stored_epochs != optim.epochs:

        def schedule(step: int, total: int, base: float) -> float:
            return scheduled_lr(optim.scheduler, step, total, base, warmup_steps)

        record_extension(run, config, stored_epochs, step, steps_per_epoch, schedule)
    ddp = wrap_model(model, info, device, find_unused_parameters="mse" not in objective.names)
    sinks = open_loggers(runtime.logger, run_dir, config) if run is not None else []
    # ---- Alg. 1: for each batch, U = θ_V(B), Y = θ_M(U), θ ← θ − η∇(λ·MSE + (1 − λ)·CL) ----
    with _progress(enabled=info.is_main and sys.stdout.isatty()) as progress:  # plain lines in logs
        for epoch in range(len(history) + 1, optim.epochs + 1):
            train_set.set_epoch(epoch)
            sampler.set_epoch(epoch)
            ddp.train()
            task = progress.add_task(f"epoch {epoch}/{optim.epochs}", total=steps_per_epoch, loss=math.nan)
            sums: dict[str, float] = defaultdict(float)
            for clips, scores, _ in itertools.islice(train_loader, steps_per_epoch):
                lr = scheduled_lr(optim.scheduler, step, total_steps, optim.lr, warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                clips = clips.to(device, non_blocking=True)  # (b, T, C, H, W); two views: (b, 2, T, C, H, W)
                inputs = views_to_batch(clips) if two_views else clips  # two views: (2b, T, C, H, W)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    embeddings, predictions = ddp(inputs)  # (b, D), (b,); two views: (2b, D), (2b,)
                if isinstance(objective, ViewObjective):  # the two views' embeddings (b, D) each, no scores
                    view_a, view_b = embeddings.float().chunk(2)
                    out = objective(all_gather_with_grad(view_a), all_gather_with_grad(view_b))
                else:  # on the GLOBAL batch (world·b), identical on every rank
                    target = standardiser.standardise(scores.to(device))  # (b,), this rank's slice
                    u, y = all_gather_with_grad(embeddings.float()), all_gather_with_grad(target)
                    out = objective(u, all_gather_with_grad(predictions.float()), y, *memory.references())
                    memory.push(u, y)  # the gathered batch, detached: identical on every rank
                step += 1
                loss = out.total.item()
                if not math.isfinite(loss):
                    raise NonFiniteLossError(non_finite_message(f"loss ({loss})", epoch, step, last_dir))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(out.total).backward()  # type: ignore[no-untyped-call]  # untyped in torch
                if optim.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
                if not scaler.is_enabled() and not finite_gradients(model):  # fp16 scaling skips such steps
                    raise NonFiniteLossError(non_finite_message("gradient", epoch, step, last_dir))
                scaler.step(optimizer)
                scaler.update()
                fault_point("step")
                sums["train_loss"] += loss
                for name, value in out.terms.items():
                    sums[f"train_{name}"] += value.item()
                progress.update(task, advance=1, loss=loss)
            row = {"epoch": epoch, "step": step, "lr": lr} | {k: v / steps_per_epoch for k, v in sums.items()}
            with stage("validation"):
                if run is not None and isinstance(objective, ViewObjective):
                    row |= view_loss(model, val_loader, objective, device, amp_dtype, optim.batch_size)
                elif run is not None:
                    pred, truth = predict_scores(model, val_loader, standardiser, device, amp_dtype)
                    row |= regression_metrics(pred, truth, standardiser.mean)
            row = broadcast_object(row)  # rank 0 alone validates; every rank keeps the same history
            history.append(row)
            monitor = "val_loss" if two_views else "val_mae"
            improved = not best or row[monitor] < best[monitor]
            best = row if improved else best
            with stage("checkpoints"):
                if run is not None:
                    summary = replace(meta, epoch=epoch, step=step, metrics=finite(row))
                    if improved:  # best before last: a crash between redoes both
                        save_checkpoint(best_dir, model, summary)
                    train_state = {
                        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
                        "history": history, "best": best, "rng": rng_state(), "memory": memory.state_dict(),
                    }  # fmt: skip
                    save_checkpoint(last_dir, model, summary, train_state=train_state)
                    fault_point("checkpoint-saved")
                    for sink in sinks:
                        sink.log(row, history)
                    _report(progress, row, optim.epochs)
            barrier()
    for sink in sinks:
        sink.close()
    if run is not None:
        plot_training_curves(history, run.file(CURVES_FILE))  # once, at the end (a report redraws it)
        run.write_metrics({
            "kind": "pretraining", "best": finite(best), "last": finite(history[-1]),
            "train_mean": standardiser.mean, "data_source": data_source(manifest),
            "scans": {"train": len(train_records), "val": len(val_records), "skipped": len(skipped)},
        })  # fmt: skip
    return PretrainResult(run_dir, best=best, last=history[-1], history=history)


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 where the GPU supports it (no loss scaling needed), else fp16 with a GradScaler; None on CPU."""
    if device.type != "cuda" or not amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _progress(*, enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), disable=not enabled,
    )  # fmt: skip


def _report(progress: Progress, row: dict[str, float], epochs: int) -> None:
    if "val_mae" in row:
        quality = (
            f"val MAE {row['val_mae']:.3f} RMSE {row['val_rmse']:.3f} r {row['val_r']:.3f} | "
            f"predict-the-mean MAE {row['baseline_mae']:.3f}"
        )
    else:  # self-supervised: the objective on fixed val views
        quality = "val " + ", ".join(
            f"{k.removeprefix('val_')} {v:.4f}" for k, v in row.items() if k[:4] == "val_"
        )
    text = f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f} | {quality}"
    progress.console.print(text, markup=False, soft_wrap=True)
    log.info(text)
