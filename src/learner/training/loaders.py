"""What pretraining's epochs iterate: the usable scans (:class:`Scans`) and the loaders built from them
(:func:`build_loaders` → :class:`Loaders`), step 3 of :mod:`learner.training.pretrain`.

The train loader draws this rank's share of a (seed, epoch) shuffle of the train scans (the paper's random
batches), or with ``loss.within_patient`` batches of visit pairs (:mod:`learner.data.patient_batches`); the
val loader yields the val scans' centre frames in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from learner.config import Config
from learner.data.augment import ClipAugment
from learner.data.cache import ScanCache
from learner.data.datasets import ScanDataset, TwoViews, make_loader
from learner.data.manifest import ScanRecord
from learner.data.patient_batches import PatientBatchSampler, visit_codes
from learner.errors import ConfigError
from learner.losses.regression import ScoreStandardiser
from learner.training.distributed import DistInfo


@dataclass(frozen=True)
class Scans:
    """The planned split's usable scans once the cache is built: ``train`` (train AND val scans for a
    self-supervised objective, ``two_views``), ``val``, the ``skipped`` unreadable scan ids, the ``cache``
    they are read from and the score ``standardiser`` fitted on the train split's scans only."""

    train: list[ScanRecord]
    val: list[ScanRecord]
    skipped: set[str]
    cache: ScanCache
    standardiser: ScoreStandardiser
    two_views: bool


@dataclass(frozen=True)
class Loaders:
    """What an epoch iterates: ``train`` yields ``steps_per_epoch`` local batches of ``train_set`` (its
    items chosen by ``sampler``); ``val`` yields the val scans in order, ``optim.batch_size`` at a time.

    Batches are ``(clips, scores, indices)``: clips (b, T, C, H, W) float32 in [0, 1] and scores (b,) raw;
    with ``two_views`` clips are (b, 2, T, C, H, W) and the scores NaN. ``visit_codes``: with
    ``loss.within_patient``, the (N,) track and visit codes of the train scans (by dataset index), which the
    sampler (a :class:`PatientBatchSampler`) keeps in visit pairs; else None.
    """

    train_set: ScanDataset | TwoViews
    sampler: DistributedSampler[tuple[torch.Tensor, torch.Tensor, int]] | PatientBatchSampler
    train: DataLoader[Any]
    val: DataLoader[Any]
    steps_per_epoch: int
    two_views: bool
    visit_codes: tuple[torch.Tensor, torch.Tensor] | None = None


def build_loaders(config: Config, scans: Scans, info: DistInfo, device: torch.device) -> Loaders:
    """Datasets and loaders: train = a random frame per TSN segment + augmentation, this rank's share of a
    (seed, epoch) shuffle, last incomplete batch dropped, ``optim.batch_size / world_size`` clips a batch;
    val = centre frames, no augmentation. Self-supervised: two train-mode views of each scan; the val views
    stay those of epoch 0.

    Raises:
        ConfigError: the batch does not divide over the processes, or exceeds the train scans.
    """
    data, optim, runtime = config.data, config.optim, config.runtime
    clip_args: dict[str, Any] = {
        "frames": data.frames,
        "sampling": data.sampling,
        "channels": data.channels,
        "seed": config.seed,
    }
    augment = ClipAugment.from_config(data)
    train_scans = ScanDataset(scans.train, scans.cache, train=True, augment=augment, **clip_args)
    train_set: ScanDataset | TwoViews = train_scans
    val_set: ScanDataset | TwoViews = ScanDataset(
        scans.val, scans.cache, train=False, augment=None, **clip_args
    )
    if scans.two_views:  # two train-mode draws of each scan; the val views stay those of epoch 0
        train_set = TwoViews(train_scans)
        val_set = TwoViews(ScanDataset(scans.val, scans.cache, train=True, augment=augment, **clip_args))
    if optim.batch_size % info.world_size:
        raise ConfigError(
            f"optim.batch_size={optim.batch_size} must divide evenly over {info.world_size} processes"
        )
    sampler: DistributedSampler[tuple[torch.Tensor, torch.Tensor, int]] | PatientBatchSampler
    visit_pairs = None
    if config.loss.within_patient > 0 and not scans.two_views:  # batches of visit pairs (training.plan)
        sampler = PatientBatchSampler(
            scans.train,
            batch_size=optim.batch_size,
            seed=config.seed,
            world_size=info.world_size,
            rank=info.rank,
        )
        tracks, visits = visit_codes(scans.train)
        visit_pairs = torch.from_numpy(tracks), torch.from_numpy(visits)
    else:
        sampler = DistributedSampler(train_set, info.world_size, info.rank, seed=config.seed, drop_last=True)
    loader_args: dict[str, Any] = {"num_workers": runtime.workers, "seed": config.seed}
    loader_args["pin_memory"] = device.type == "cuda"
    local_batch = optim.batch_size // info.world_size
    train_loader = make_loader(
        train_set, batch_size=local_batch, shuffle=False, drop_last=True, sampler=sampler, **loader_args
    )
    val_loader = make_loader(val_set, batch_size=optim.batch_size, shuffle=False, **loader_args)
    steps_per_epoch = min(len(train_loader), optim.max_steps_per_epoch or len(train_loader))
    if steps_per_epoch == 0:
        raise batch_exceeds(optim.batch_size, len(scans.train))
    return Loaders(
        train_set, sampler, train_loader, val_loader, steps_per_epoch, scans.two_views, visit_pairs
    )


def batch_exceeds(batch_size: int, train_scans: int) -> ConfigError:
    """The error of a batch larger than the train scans (no full batch, so no step), saying what to set."""
    return ConfigError(
        f"optim.batch_size={batch_size} exceeds the {train_scans} train scans; set --set "
        f"optim.batch_size=N with N ≤ {train_scans} (or more train patients)"
    )
