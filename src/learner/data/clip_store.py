"""Every cached scan of a split held on the training device, and the train batches drawn there.

The device-data path (``data.device_data``, the GPU path; docs/training.md) replaces the train
DataLoader: :meth:`ClipStore.from_cache` reads each scan's cached uint8 frames once into one tensor on the
device (ragged: the scans' frames concatenated, with each scan's first frame and frame count), next to
the scans' scores. :class:`DeviceBatches` then makes every train batch there without a host sync: a
seeded ``randperm`` orders the scans of an epoch, TSN picks come from
:func:`~learner.data.sampling.segment_picks` (the segments of :func:`~learner.data.sampling.segment_bounds`,
as :class:`~learner.data.datasets.ScanDataset` uses them), one gather turns the frames into float clips
exactly as :func:`~learner.data.datasets.frames_to_clip` does, and
:meth:`~learner.data.augment.ClipAugment.batch` augments the whole batch in one resampling. Validation
takes :class:`EvalClips`: the val scans' centre-frame clips (the loader path's eval clips) gathered once
from a store of the val scans and kept on the device.

Randomness: epoch ``e``'s order comes from a generator seeded by ``(seed, e)`` and batch ``i``'s frame
picks and augmentation from one seeded by ``(seed, e, i)``, so a batch is a pure function of those (a run
stopped mid-epoch goes on with the same batches). These are other random streams than the loader path's
per-item generators: the two paths draw other clips from the same distributions, so their results agree
within seed-to-seed spread, not bit for bit.

Example::

    store = ClipStore.from_cache(records, cache, device=torch.device("cuda"))
    batches = DeviceBatches(store, frames=8, channels=1, batch_size=16, augment=ClipAugment(), seed=0)
    clips, scores = batches.batch(epoch=1, index=0)  # (16, 8, 1, H, W) float32 in [0, 1], (16,) raw scores
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from learner.data.augment import ClipAugment
from learner.data.cache import ScanCache
from learner.data.manifest import ScanRecord
from learner.data.sampling import segment_picks


@dataclass(frozen=True)
class ClipStore:
    """The preprocessed frames of S scans in one uint8 tensor on one device.

    Attributes:
        frames: ``(F, H, W)`` or ``(F, H, W, 3)`` uint8, every distinct scan's cached frames one after the
            other (rows sharing a file share its frames).
        offsets: ``(S,)`` int64, scan s's first frame in ``frames``.
        counts: ``(S,)`` int64, scan s's frame count (>= 1).
        scores: ``(S,)`` float32, scan s's raw score.
    """

    frames: Tensor
    offsets: Tensor
    counts: Tensor
    scores: Tensor

    @classmethod
    def from_cache(
        cls, records: Sequence[ScanRecord], cache: ScanCache, *, device: torch.device
    ) -> ClipStore:
        """Read every record's cached array once (``cache.get``, checked as the loader path reads it) into
        a store on ``device``, in record order.

        Raises:
            ValueError: no records, a non-finite score, or cached arrays of different frame shapes
                (caches of one preprocessor have one).
        """
        if not records:
            raise ValueError("a ClipStore needs at least one scan")
        bad = [r.scan_id for r in records if not math.isfinite(r.score)]
        if bad:  # checked once here, so the pair selection need not check every batch (a host sync)
            raise ValueError(f"scores should be finite, got NaN or inf for {', '.join(bad[:5])}")
        placed: dict[str, tuple[int, int]] = {}  # source path → (its first frame in the store, frames)
        arrays: list[np.ndarray] = []
        total = 0
        for record in records:
            key = str(record.path)
            if key in placed:
                continue
            array = cache.get(record)  # (T', H, W) or (T', H, W, 3) uint8, memory-mapped
            if arrays and array.shape[1:] != arrays[0].shape[1:]:
                raise ValueError(
                    f"{record.path}: cached frames of shape {array.shape[1:]}, other scans "
                    f"{arrays[0].shape[1:]}; a ClipStore holds scans of one preprocessing"
                )
            placed[key] = (total, len(array))
            arrays.append(array)
            total += len(array)
        frames = torch.empty((total, *arrays[0].shape[1:]), dtype=torch.uint8, device=device)
        start = 0
        for array in arrays:  # one scan at a time: the host never holds a second copy of the whole store
            frames[start : start + len(array)].copy_(torch.from_numpy(np.array(array)))
            start += len(array)
        return cls(
            frames=frames,
            offsets=torch.tensor([placed[str(r.path)][0] for r in records], dtype=torch.int64, device=device),
            counts=torch.tensor([placed[str(r.path)][1] for r in records], dtype=torch.int64, device=device),
            scores=torch.tensor([r.score for r in records], dtype=torch.float32, device=device),
        )

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    @property
    def device(self) -> torch.device:
        return self.frames.device

    def picks(
        self, scans: Tensor, frames: int, *, train: bool, generator: torch.Generator | None = None
    ) -> Tensor:
        """TSN frame indices ``(B, T)`` (within each scan) of clips of ``scans`` (B,): random per segment
        with ``train`` (from ``generator``), else the centre frames (:func:`segment_picks`)."""
        return segment_picks(self.counts[scans], frames, train=train, generator=generator)

    def frames_at(self, scans: Tensor, picks: Tensor) -> Tensor:
        """The uint8 frames ``picks`` (B, T) of ``scans`` (B,): ``(B, T, H, W)``, or ``(B, T, H, W, 3)``."""
        rows = (self.offsets[scans].unsqueeze(1) + picks).flatten()  # (B·T,) rows of ``frames``
        frames = torch.index_select(self.frames, 0, rows)  # (B·T, H, W[, 3])
        return frames.reshape(*picks.shape, *frames.shape[1:])

    def gather(self, scans: Tensor, picks: Tensor) -> Tensor:
        """Frames ``picks`` (B, T) of ``scans`` (B,) → clips ``(B, T, C, H, W)`` float32 in [0, 1]
        (:func:`to_clips`)."""
        return to_clips(self.frames_at(scans, picks))


def to_clips(frames: Tensor) -> Tensor:
    """uint8 frames ``(B, T, H, W)`` or ``(B, T, H, W, 3)`` → clips ``(B, T, C, H, W)`` float32 in [0, 1]
    (C = 1 grey, 3 RGB): per clip exactly :func:`~learner.data.datasets.frames_to_clip`'s conversion
    before augmentation."""
    clips = frames.float().div_(255.0)
    return clips.permute(0, 1, 4, 2, 3) if clips.ndim == 5 else clips.unsqueeze(2)


def check_channels(store: ClipStore, channels: int) -> None:
    """Refuse clips of ``channels`` channels from ``store``: C must be 1 or 3, and 1 needs a grey store.

    Raises:
        ValueError: naming what to change.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels should be 1 or 3, got {channels}")
    if channels == 1 and store.frames.ndim == 4:
        raise ValueError("channels=1 needs a grey store; build the cache with channels=1")


def with_channels(clips: Tensor, channels: int) -> Tensor:
    """Clips (B, T, C, H, W) with C = ``channels``: a grey clip repeated to 3 identical channels, as
    :func:`~learner.data.datasets.frames_to_clip` does after augmentation."""
    if clips.shape[2] != channels:
        clips = clips.expand(-1, -1, channels, -1, -1)  # grey → 3 identical channels
    return clips.contiguous()


class DeviceBatches:
    """The train batches of an epoch, made on the store's device: what the device-data path iterates
    instead of a DataLoader.

    Args:
        store: the train scans.
        frames: T, frames per clip.
        channels: C of the clips (a grey store is repeated to 3 channels when 3).
        batch_size: clips per batch (the last incomplete batch of an epoch is dropped).
        augment: the clip augmentation, or None.
        seed: the run seed.
        two_views: each item is two independent draws of its scan (``(B, 2, T, C, H, W)``, scores NaN), as
            :class:`~learner.data.datasets.TwoViews` makes them.
    """

    def __init__(
        self,
        store: ClipStore,
        *,
        frames: int,
        channels: int,
        batch_size: int,
        augment: ClipAugment | None,
        seed: int,
        two_views: bool = False,
    ) -> None:
        check_channels(store, channels)
        if not 1 <= batch_size <= len(store):
            raise ValueError(f"batch_size should be between 1 and the {len(store)} scans, got {batch_size}")
        self.store = store
        self.frames = frames
        self.channels = channels
        self.batch_size = batch_size
        self.augment = augment
        self.seed = seed
        self.two_views = two_views
        self._generator = torch.Generator(device=store.device)
        self._order: tuple[int, Tensor] | None = None  # (epoch, its order of the scans)

    def __len__(self) -> int:
        """Full batches per epoch."""
        return len(self.store) // self.batch_size

    def order(self, epoch: int) -> Tensor:
        """Epoch ``epoch``'s order of the scans, ``(S,)`` int64 on the device (a seeded permutation)."""
        if self._order is None or self._order[0] != epoch:
            self._generator.manual_seed(_seed(self.seed, _ORDER, epoch))
            order = torch.randperm(len(self.store), generator=self._generator, device=self.store.device)
            self._order = (epoch, order)
        return self._order[1]

    def batch(self, epoch: int, index: int) -> tuple[Tensor, Tensor]:
        """Batch ``index`` of epoch ``epoch``: clips ``(B, T, C, H, W)`` float32 in [0, 1] (two views:
        ``(B, 2, T, C, H, W)``) and the raw scores ``(B,)`` float32 (two views: NaN), on the device."""
        scans = self.order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]  # (B,)
        self._generator.manual_seed(_seed(self.seed, _BATCH, epoch, index))
        if not self.two_views:
            return self.clips(scans, self._generator), self.store.scores[scans]
        views = torch.stack([self.clips(scans, self._generator) for _ in range(2)], dim=1)
        return views, torch.full_like(self.store.scores[scans], float("nan"))

    def clips(self, scans: Tensor, generator: torch.Generator) -> Tensor:
        """Train-mode clips ``(B, T, C, H, W)`` of ``scans`` (B,): random TSN frames, then the augmentation
        of the whole batch, then the channels."""
        clips = self.store.gather(
            scans, self.store.picks(scans, self.frames, train=True, generator=generator)
        )
        if self.augment is not None:
            clips = self.augment.batch(clips, generator)
        return with_channels(clips, self.channels)


_ORDER, _BATCH = 0, 1
"""The two kinds of random stream of an epoch: its order of the scans, and each batch's draws. The kind is
part of the key because SeedSequence pads a short key with zeros: ``[seed, epoch]`` and
``[seed, epoch, 0]`` would be one stream, the order's and the first batch's."""


def _seed(*key: int) -> int:
    """A 64-bit generator seed from non-negative ints (NumPy's SeedSequence mixes them)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0])


@dataclass(frozen=True)
class EvalClips:
    """The eval clips of S scans, made once on the store's device: the validation of the device-data path.

    Each scan's clip is what :class:`~learner.data.datasets.ScanDataset` yields with ``train=False``: the
    centre frame of each TSN segment, no augmentation. Only those T frames per scan are kept, as uint8 (4×
    smaller than float32, 12× for a grey store repeated to 3 channels); a batch becomes float clips by
    :func:`to_clips` and :func:`with_channels`, value for value the loader's
    :func:`~learner.data.datasets.frames_to_clip`.

    Attributes:
        frames: ``(S, T, H, W)`` or ``(S, T, H, W, 3)`` uint8, scan s's clip.
        scores: ``(S,)`` float32, scan s's raw score.
        channels: C of the clips.
    """

    frames: Tensor
    scores: Tensor
    channels: int

    @classmethod
    def from_store(cls, store: ClipStore, *, frames: int, channels: int) -> EvalClips:
        """The eval clips of T = ``frames`` frames of every scan of ``store``, in its order.

        Raises:
            ValueError: ``channels`` is not 1 or 3, or 1 for an RGB store.
        """
        check_channels(store, channels)
        scans = torch.arange(len(store), device=store.device)
        picks = store.picks(scans, frames, train=False)  # (S, T) centre frames
        return cls(store.frames_at(scans, picks), store.scores, channels)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def batch(self, start: int, stop: int) -> Tensor:
        """The clips of scans ``start`` to ``stop`` (exclusive): ``(b, T, C, H, W)`` float32 in [0, 1]."""
        return with_channels(to_clips(self.frames[start:stop]), self.channels)
