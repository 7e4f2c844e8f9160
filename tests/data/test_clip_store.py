"""The device-resident clip store (learner.data.clip_store) against ScanDataset on the tiny phantom cohort:
the same frame indices gather the same clips bit for bit (CPU tensors), the TSN picks on the device keep
to ScanDataset's segments, the epoch's batches are seeded permutations, and a batch is made with every host
sync forbidden."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
import torch

from learner.config import DataConfig, load_config
from learner.data import clip_store
from learner.data.augment import ClipAugment
from learner.data.cache import ScanCache
from learner.data.clip_store import ClipStore, DeviceBatches, with_channels
from learner.data.datasets import ScanDataset
from learner.data.manifest import ScanRecord, load_manifest
from learner.data.preprocess import Preprocessor
from learner.data.sampling import segment_bounds, segment_indices, segment_picks
from learner.data.scales import scale_from_config

FRAMES = 3  # T: fewer than the phantom's 4 frames and not a divisor of them (uneven segments)


@pytest.fixture(scope="module")
def records(tiny_lus_manifest: Path) -> list[ScanRecord]:
    manifest = load_manifest(tiny_lus_manifest, scale_from_config(DataConfig()))
    return list(manifest.records[:8])


def make_cache(root: Path, channels: int) -> ScanCache:
    return ScanCache(root, Preprocessor.from_config(DataConfig(size=32, channels=channels)))


@pytest.mark.parametrize(("cached", "channels"), [(1, 1), (1, 3), (3, 3)])
def test_store_gathers_scan_dataset_clips_exactly_for_the_same_frame_indices(
    records: list[ScanRecord], tmp_path: Path, cached: int, channels: int
) -> None:
    """Grey and RGB caches, a grey cache repeated to 3 channels: train clips (random picks) and eval clips."""
    cache = make_cache(tmp_path / "cache", cached)
    train = ScanDataset(records, cache, frames=FRAMES, channels=channels, train=True, augment=None, seed=3)
    evaluation = ScanDataset(records, cache, frames=FRAMES, channels=channels, train=False, augment=None)
    store = ClipStore.from_cache(records, cache, device=torch.device("cpu"))
    assert len(store) == len(records)
    assert store.frames.dtype == torch.uint8
    for epoch in (0, 1):
        for index in range(len(records)):
            picks = torch.from_numpy(train.frame_picks(index, (epoch, index)))  # (T,)
            got = with_channels(store.gather(torch.tensor([index]), picks[None]), channels)[0]
            assert torch.equal(got, train.clip(index, (epoch, index)))
    scans = torch.arange(len(records))
    centre = store.picks(scans, FRAMES, train=False)  # (S, T)
    clips = with_channels(store.gather(scans, centre), channels)  # (S, T, C, H, W)
    for index in range(len(records)):
        assert torch.equal(clips[index], evaluation[index][0])
    assert torch.equal(store.scores, torch.tensor([r.score for r in records], dtype=torch.float32))


def test_device_picks_keep_to_the_segments_of_segment_indices() -> None:
    n_frames = torch.tensor([1, 2, 3, 5, 10, 16, 33])
    for frames in (1, 3, 4, 8):
        starts, lengths = segment_bounds(n_frames, frames)  # (S, T) each
        centre = segment_picks(n_frames, frames, train=False)
        expected = np.stack([segment_indices(int(n), frames, train=False) for n in n_frames])
        assert np.array_equal(centre.numpy(), expected)
        draws = torch.stack(
            [
                segment_picks(n_frames, frames, train=True, generator=torch.Generator().manual_seed(s))
                for s in range(300)
            ]
        )  # (300, S, T)
        offset = draws - starts
        assert bool((offset >= 0).all())
        assert bool((offset < lengths).all())
        for s, n in enumerate(n_frames.tolist()):  # every frame of every segment gets drawn
            for t in range(frames):
                seen = set(offset[:, s, t].tolist())
                assert seen == set(range(int(lengths[s, t]))), (n, frames, t)


def test_device_picks_are_deterministic_for_a_seed() -> None:
    n_frames = torch.tensor([7, 40, 64, 3])

    def draw(seed: int) -> torch.Tensor:
        return segment_picks(n_frames, 8, train=True, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))


def test_rows_sharing_a_file_share_its_frames_and_bad_scores_are_refused(
    records: list[ScanRecord], tmp_path: Path
) -> None:
    cache = make_cache(tmp_path / "cache", 1)
    twice = [records[0], records[1], records[0]]
    store = ClipStore.from_cache(twice, cache, device=torch.device("cpu"))
    assert store.offsets.tolist()[0] == store.offsets.tolist()[2]
    assert store.frames.shape[0] == int(store.counts[0] + store.counts[1])
    nan = ScanRecord("p", "bad", records[0].path, "1", 1.0, math.nan)
    with pytest.raises(ValueError, match="finite"):
        ClipStore.from_cache([records[0], nan], cache, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="at least one"):
        ClipStore.from_cache([], cache, device=torch.device("cpu"))


def test_an_epochs_batches_are_a_seeded_permutation_of_the_scans(
    records: list[ScanRecord], tmp_path: Path
) -> None:
    store = ClipStore.from_cache(records, make_cache(tmp_path / "cache", 1), device=torch.device("cpu"))
    batches = DeviceBatches(store, frames=FRAMES, channels=3, batch_size=3, augment=None, seed=0)
    assert len(batches) == len(records) // 3
    order = batches.order(1)
    assert sorted(order.tolist()) == list(range(len(records)))
    assert not torch.equal(order, batches.order(2))
    clips, scores = batches.batch(1, 1)
    assert clips.shape == (3, FRAMES, 3, 32, 32)
    assert torch.equal(scores, store.scores[order[3:6]])
    again = DeviceBatches(store, frames=FRAMES, channels=3, batch_size=3, augment=None, seed=0)
    assert torch.equal(again.batch(1, 1)[0], clips)  # a pure function of (seed, epoch, index)
    assert not torch.equal(
        DeviceBatches(store, frames=FRAMES, channels=3, batch_size=3, augment=None, seed=1).order(1), order
    )
    views = DeviceBatches(
        store, frames=FRAMES, channels=1, batch_size=2, augment=None, seed=0, two_views=True
    )
    pair, nan_scores = views.batch(0, 0)
    assert pair.shape == (2, 2, FRAMES, 1, 32, 32)
    assert bool(torch.isnan(nan_scores).all())


@pytest.mark.parametrize("two_views", [False, True])
def test_batches_are_made_with_every_host_sync_forbidden(
    records: list[ScanRecord],
    tmp_path: Path,
    two_views: bool,
    host_syncs_forbidden: Callable[[str], AbstractContextManager[None]],
) -> None:
    """Picks, gather and the LUS recipe's augmentation of a batch (crop-rotate, intensity, noise) never
    wait for the device: on a GPU the next batch is queued while the last step runs. Only an epoch's order
    (one ``randperm``) is made outside, once per epoch."""
    store = ClipStore.from_cache(records, make_cache(tmp_path / "cache", 1), device=torch.device("cpu"))
    augment = ClipAugment.from_config(load_config("lus").data)
    assert augment is not None
    batches = DeviceBatches(
        store, frames=FRAMES, channels=3, batch_size=3, augment=augment, seed=0, two_views=two_views
    )
    order = batches.order(1)
    with host_syncs_forbidden("making a batch"):
        first, second = batches.batch(1, 0), batches.batch(1, 1)
    assert batches.order(1) is order
    assert first[0].shape == ((3, 2) if two_views else (3,)) + (FRAMES, 3, 32, 32)
    assert not torch.equal(first[0], second[0])


def test_an_epochs_order_and_its_batches_draw_from_distinct_streams(
    records: list[ScanRecord], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every generator seed of an epoch (the order's, each batch's) is distinct: NumPy's SeedSequence pads
    a short key with zeros, so keys that differ only by a trailing 0 would be one stream."""
    seeds: list[int] = []
    real = clip_store._seed
    monkeypatch.setattr(clip_store, "_seed", lambda *key: seeds.append(real(*key)) or seeds[-1])
    store = ClipStore.from_cache(records, make_cache(tmp_path / "cache", 1), device=torch.device("cpu"))
    batches = DeviceBatches(store, frames=FRAMES, channels=3, batch_size=1, augment=None, seed=0)
    for epoch in range(3):
        for index in range(len(batches)):
            batches.batch(epoch, index)
    assert len(seeds) == 3 * (1 + len(batches))
    assert len(set(seeds)) == len(seeds)
