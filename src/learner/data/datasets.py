"""A torch dataset over cached scans, and the one DataLoader factory.

A :class:`ScanDataset` item is ``(clip (T, C, H, W) float32 in [0, 1], score float32, index)``: T frames
chosen by TSN segment sampling (:mod:`learner.data.sampling`) from the cached uint8 array, augmented when
training. All randomness of an item comes from a generator seeded by ``(seed, epoch, index)``, so an item is
the same whichever worker loads it and however many workers there are. The epoch lives in shared memory, so
:meth:`ScanDataset.set_epoch` also reaches persistent DataLoader workers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from learner.data.augment import ClipAugment
from learner.data.cache import ScanCache
from learner.data.manifest import ScanRecord
from learner.data.sampling import sampling_source, segment_indices


class _SharedEpoch:
    """An epoch counter in shared memory: workers (forked or spawned) read the value the parent sets."""

    def __init__(self) -> None:
        # Tensor.share_memory_ is untyped in torch
        self._value = torch.zeros(1, dtype=torch.int64).share_memory_()  # type: ignore[no-untyped-call]

    def set(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch should be >= 0, got {epoch}")
        self._value[0] = epoch

    def get(self) -> int:
        return int(self._value[0])


def frames_to_clip(
    cached: np.ndarray,
    picks: np.ndarray,
    channels: int,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Frames ``picks`` (N,) of a cached uint8 array (T', H, W) or (T', H, W, 3) → (N, C, H, W) float32 in
    [0, 1]; ``augment`` (if given) sees the clip before a grey one is repeated to ``channels == 3``.

    The one frames → clip conversion: training items and frozen-encoder embeddings
    (:mod:`learner.evaluation.embed`) go through it, so an encoder sees at test time what it was trained on.
    """
    clip = torch.from_numpy(np.asarray(cached[picks])).float().div_(255.0)
    clip = clip.permute(0, 3, 1, 2) if clip.ndim == 4 else clip.unsqueeze(1)  # (N, C, H, W)
    if augment is not None:
        clip = augment(clip)
    if clip.shape[1] != channels:
        clip = clip.expand(-1, channels, -1, -1)  # grey → 3 identical channels
    return clip.contiguous()


def clip_indices(n_frames: int, frames: int, clips: int) -> np.ndarray:
    """(K, T) frame indices of K deterministic clips of T frames from a scan of ``n_frames`` frames.

    Clip k takes, in every TSN segment, the centre of the k-th of K equal sub-segments: the eval centre
    sampling applied to K·T segments and read column-wise. K = 1 is exactly the eval centre frame.
    """
    return segment_indices(n_frames, frames * clips, train=False).reshape(frames, clips).T


def clips_from_frames(
    cached: np.ndarray, frames: int, clips: int, channels: int, *, sampling: str = "segments"
) -> torch.Tensor:
    """Preprocessed uint8 frames (T', H, W) or (T', H, W, 3) → K clips (K, T, C, H, W) float32 in [0, 1].

    With ``sampling="resample"`` the frames are first resampled to T slices
    (:func:`learner.data.sampling.sampling_source`), so the K clips are identical.

    The eval clips of :class:`ScanDataset` (K = 1), of frozen-encoder embeddings and of ``learner predict``
    all come from here, through :func:`frames_to_clip` as training clips do (a grey array is repeated to 3
    channels when the encoder takes 3), so embeddings match what the encoder was trained and validated on.
    """
    cached = sampling_source(cached, frames, sampling)
    picks = clip_indices(len(cached), frames, clips)  # (K, T)
    clip = frames_to_clip(cached, picks.reshape(-1), channels)  # (K·T, C, H, W)
    return clip.reshape(clips, frames, *clip.shape[1:])  # (K, T, C, H, W)


class ScanDataset(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """Clips of cached scans with their (transformed) scores.

    Args:
        records: the scans, in item order.
        cache: where the preprocessed arrays come from (built on first access if missing).
        frames: T, frames per clip (TSN segments).
        sampling: ``segments`` or ``resample`` (the whole scan resampled to T slices first), see
            :mod:`learner.data.sampling`.
        channels: C of the returned clips; a grey cache is repeated to 3 channels when ``channels == 3``.
        train: random frame per segment and augmentation (if given) vs centre frames, no augmentation.
        augment: clip-consistent augmentation, used only when ``train``.
        score_fn: maps a raw score to the training target (e.g. standardisation); identity when None.
        seed: base seed of every per-item generator.
    """

    def __init__(
        self,
        records: Sequence[ScanRecord],
        cache: ScanCache,
        *,
        frames: int,
        channels: int,
        train: bool,
        augment: ClipAugment | None,
        sampling: str = "segments",
        score_fn: Callable[[float], float] | None = None,
        seed: int = 0,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels should be 1 or 3, got {channels}")
        if channels == 1 and cache.preprocessor.channels == 3:
            raise ValueError("channels=1 needs a grey cache; build the cache with channels=1")
        self.records = list(records)
        self.cache = cache
        self.frames = frames
        self.sampling = sampling
        self.channels = channels
        self.train = train
        self.augment = augment
        self.score_fn = score_fn
        self.seed = seed
        self._epoch = _SharedEpoch()

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws items use (reaches persistent workers too)."""
        self._epoch.set(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch.get()

    def clip(self, index: int, key: Sequence[int]) -> torch.Tensor:
        """Clip ``(T, C, H, W)`` float32 in [0, 1] of scan ``index``, randomness seeded by ``key``."""
        if not self.train:
            return self.eval_clips(index, 1)[0]  # the centre frames: no randomness
        cached, picks, rng = self._train_draw(index, key)
        augment = None
        if self.augment is not None:
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            augment = functools.partial(self.augment, generator=generator)
        return frames_to_clip(cached, picks, self.channels, augment)

    def frame_picks(self, index: int, key: Sequence[int]) -> np.ndarray:
        """The frame indices ``(T,)`` of the train-mode clip of scan ``index`` drawn with ``key`` (what
        :meth:`clip` gathers, before augmentation)."""
        return self._train_draw(index, key)[1]

    def _train_draw(
        self, index: int, key: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        """(the array clips come from, the TSN frame picks (T,), the item's generator after the picks)."""
        rng = np.random.default_rng([self.seed, *key])
        cached = self.cache.get(self.records[index])  # (T', H, W) or (T', H, W, 3) uint8, memory-mapped
        cached = sampling_source(cached, self.frames, self.sampling)
        return cached, segment_indices(len(cached), self.frames, train=True, generator=rng), rng

    def eval_clips(self, index: int, clips: int) -> torch.Tensor:
        """K deterministic clips ``(K, T, C, H, W)`` float32 in [0, 1] of scan ``index``
        (:func:`clips_from_frames`; K = 1 is the eval clip of :meth:`clip`)."""
        cached = self.cache.get(self.records[index])
        return clips_from_frames(cached, self.frames, clips, self.channels, sampling=self.sampling)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        score = self.records[index].score
        target = self.score_fn(score) if self.score_fn is not None else score
        clip = self.clip(index, (self.epoch, index))
        return clip, torch.tensor(target, dtype=torch.float32), index


class TwoViews(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """Two independent train-mode draws of every scan of a :class:`ScanDataset`, for self-supervision.

    Item ``(views (2, T, C, H, W), nan, index)``: view v of scan ``index`` is drawn with the key
    ``(epoch, index, v)``, so the two views differ in their TSN frames (temporal coherence within a clip)
    and their augmentation parameters (invariance), and are reproducible like any other item. The score is
    NaN: a self-supervised stage never sees one. Without :meth:`set_epoch` the views stay those of epoch 0
    (fixed validation views).

    Raises:
        ValueError: ``dataset`` is not in train mode (its views would be identical centre frames).
    """

    def __init__(self, dataset: ScanDataset) -> None:
        if not dataset.train:
            raise ValueError("TwoViews needs a train-mode ScanDataset; eval-mode views are identical")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        epoch = self.dataset.epoch
        views = torch.stack([self.dataset.clip(index, (epoch, index, view)) for view in (0, 1)])
        return views, torch.tensor(float("nan")), index


def views_to_batch(views: torch.Tensor) -> torch.Tensor:
    """A batch of :class:`TwoViews` items (b, 2, T, C, H, W) → (2b, T, C, H, W): every first view, then every
    second (``embeddings.chunk(2)`` splits the encoder's output back into the two views)."""
    return views.transpose(0, 1).flatten(0, 1)


def make_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    drop_last: bool = False,
    sampler: Sampler[Any] | None = None,
    pin_memory: bool | None = None,
) -> DataLoader[Any]:
    """A DataLoader with a seeded shuffle order, seeded workers, persistent when ``num_workers > 0``.

    The shuffle order comes from a sampler with its own generator, so the sequence of epoch orders is the
    same with or without workers (the DataLoader's generator, which also seeds the workers, is consumed
    differently by persistent workers). ``pin_memory=None`` pins when CUDA is available; ``sampler``
    excludes ``shuffle``.
    """
    if sampler is not None and shuffle:
        raise ValueError("pass either sampler or shuffle=True, not both")
    if shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        generator=torch.Generator().manual_seed(seed + 1),
        worker_init_fn=seed_worker,
        persistent_workers=num_workers > 0,
    )


def seed_worker(worker_id: int) -> None:
    """Seed NumPy's and Python's global RNGs in a worker from its torch seed (distinct per worker).

    Our datasets use only per-item generators; this guards third-party code that draws from the globals
    (e.g. MONAI transforms) against repeating the same numbers in every worker.
    """
    import random

    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # noqa: NPY002 — the legacy global state is exactly what is seeded here
    random.seed(worker_seed)
