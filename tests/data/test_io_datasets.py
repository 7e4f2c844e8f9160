"""ScanDataset / make_loader on a real cache of GIF clips whose pixel levels name the frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from learner.data.augment import ClipAugment
from learner.data.cache import ScanCache
from learner.data.datasets import ScanDataset, TwoViews, make_loader, views_to_batch
from learner.data.manifest import ScanRecord
from learner.data.preprocess import Preprocessor

N_FRAMES = 12


def level(frame: int, scan: int) -> int:
    return 20 + 15 * frame + scan  # frame index and scan index both recoverable from a pixel


@pytest.fixture
def records(tmp_path: Path) -> list[ScanRecord]:
    out = []
    for scan in range(4):
        images = [Image.fromarray(np.full((16, 16), level(t, scan), np.uint8)) for t in range(N_FRAMES)]
        path = tmp_path / f"scan{scan}.gif"
        images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
        out.append(ScanRecord(f"p{scan}", f"s{scan}", path, "1", 1.0, 100.0 * (scan + 1)))
    return out


def make_cache(root: Path, channels: int = 1) -> ScanCache:
    return ScanCache(
        root / "cache", Preprocessor(size=8, crop="none", max_cached_frames=16, channels=channels)
    )


def frames_of(clip: torch.Tensor, scan: int) -> list[int]:
    """Frame indices of a (T, C, H, W) clip in [0, 1], read back from the pixel levels."""
    levels = torch.round(clip[:, 0, 4, 4] * 255).long() - 20 - scan
    assert torch.all(levels % 15 == 0)
    return (levels // 15).tolist()


def test_eval_item_is_the_centre_frames_scaled_to_unit_range(
    records: list[ScanRecord], tmp_path: Path
) -> None:
    dataset = ScanDataset(
        records, make_cache(tmp_path), frames=4, channels=1, train=False, augment=None,
        score_fn=lambda s: (s - 250.0) / 100.0,
    )  # fmt: skip
    clip, score, index = dataset[2]
    assert clip.shape == (4, 1, 8, 8)
    assert clip.dtype == torch.float32
    assert frames_of(clip, scan=2) == [1, 4, 7, 10]  # centres of [0,3) [3,6) [6,9) [9,12)
    assert score.dtype == torch.float32
    assert score.item() == pytest.approx(0.5)  # (300 − 250) / 100
    assert index == 2


def test_resample_items_are_the_whole_scan_on_the_grid_in_train_and_eval(
    records: list[ScanRecord], tmp_path: Path
) -> None:
    cache = make_cache(tmp_path)
    train = ScanDataset(records, cache, frames=3, channels=1, train=True, augment=None, sampling="resample")
    evaluation = ScanDataset(
        records, cache, frames=3, channels=1, train=False, augment=None, sampling="resample"
    )
    clip, _, _ = evaluation[2]
    # slice k of 3 samples frame (k + ½)·12/3 − ½ = 1.5, 5.5, 9.5; the levels are linear in the frame
    expected = torch.tensor([20 + 15 * position + 2 for position in (1.5, 5.5, 9.5)]) / 255
    torch.testing.assert_close(clip[:, 0, 4, 4], expected)
    for epoch in (0, 1):  # no random frame per segment: every epoch sees the same grid
        train.set_epoch(epoch)
        assert torch.equal(train[2][0], clip)


def test_grey_cache_is_repeated_to_three_channels(records: list[ScanRecord], tmp_path: Path) -> None:
    dataset = ScanDataset(records, make_cache(tmp_path), frames=3, channels=3, train=False, augment=None)
    clip, _, _ = dataset[0]
    assert clip.shape == (3, 3, 8, 8)
    assert torch.equal(clip[:, 0], clip[:, 1])
    assert torch.equal(clip[:, 0], clip[:, 2])
    with pytest.raises(ValueError, match="grey cache"):
        ScanDataset(
            records, make_cache(tmp_path, channels=3), frames=3, channels=1, train=False, augment=None
        )


def test_train_items_depend_on_seed_epoch_and_index_only(records: list[ScanRecord], tmp_path: Path) -> None:
    def dataset(seed: int) -> ScanDataset:
        return ScanDataset(
            records, make_cache(tmp_path), frames=4, channels=1, train=True, augment=None, seed=seed
        )

    a, b = dataset(0), dataset(0)
    draws = {tuple(frames_of(a[1][0], scan=1)) for _ in range(3)}
    assert len(draws) == 1  # re-reading an item repeats it
    assert torch.equal(a[1][0], b[1][0])
    epochs = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        picked = frames_of(a[1][0], scan=1)
        assert all(3 * k <= f < 3 * k + 3 for k, f in enumerate(picked))  # one frame per segment
        epochs.add(tuple(picked))
    assert len(epochs) > 1  # a new epoch draws new frames


def test_loader_results_do_not_depend_on_the_worker_count(records: list[ScanRecord], tmp_path: Path) -> None:
    augment = ClipAugment()

    def epochs(num_workers: int) -> list[list[torch.Tensor]]:
        data = ScanDataset(records, make_cache(tmp_path), frames=4, channels=1, train=True, augment=augment)
        loader = make_loader(data, batch_size=2, shuffle=True, num_workers=num_workers, seed=3)
        out = []
        for epoch in range(2):
            data.set_epoch(epoch)  # must reach the persistent workers
            out.append(
                [
                    torch.cat([clips.flatten(1), scores[:, None], idx[:, None]], 1)
                    for clips, scores, idx in loader
                ]
            )
        return out

    serial, parallel = epochs(0), epochs(2)
    for epoch in range(2):
        torch.testing.assert_close(torch.cat(serial[epoch]), torch.cat(parallel[epoch]), rtol=0, atol=0)
    assert not torch.equal(torch.cat(serial[0]), torch.cat(serial[1]))


def test_after_the_first_epoch_nothing_is_decoded(records: list[ScanRecord], tmp_path: Path) -> None:
    cache = make_cache(tmp_path)
    data = ScanDataset(records, cache, frames=2, channels=1, train=True, augment=None)
    loader = make_loader(data, batch_size=4, shuffle=True, num_workers=0, seed=0)
    for epoch in range(3):
        data.set_epoch(epoch)
        batches = list(loader)
        assert cache.decode_count == len(records)
    assert sorted(batches[0][2].tolist()) == [0, 1, 2, 3]


def test_shuffle_order_follows_the_seed(records: list[ScanRecord], tmp_path: Path) -> None:
    data = ScanDataset(records, make_cache(tmp_path), frames=1, channels=1, train=False, augment=None)

    def order(seed: int) -> list[int]:
        return torch.cat(
            [idx for _, _, idx in make_loader(data, batch_size=1, shuffle=True, num_workers=0, seed=seed)]
        ).tolist()

    assert order(1) == order(1)
    assert sorted(order(1)) == [0, 1, 2, 3]
    assert len({tuple(order(seed)) for seed in range(6)}) > 1
    with pytest.raises(ValueError, match="sampler"):
        make_loader(data, batch_size=1, shuffle=True, num_workers=0, seed=0, sampler=[0, 1])  # type: ignore[arg-type]


def test_two_views_are_independent_reproducible_draws(records: list[ScanRecord], tmp_path: Path) -> None:
    scans = ScanDataset(records, make_cache(tmp_path), frames=4, channels=1, train=True, augment=None, seed=3)
    views = TwoViews(scans)
    first, score, index = views[1]
    assert first.shape == (2, 4, 1, 8, 8)
    assert index == 1
    assert torch.isnan(score)
    picks = [frames_of(first[v], scan=1) for v in (0, 1)]
    assert picks[0] != picks[1]  # the TSN sampler drew different frames for the two views
    assert all(sorted(p) == p for p in picks)  # each view is a temporally ordered clip of its scan
    torch.testing.assert_close(views[1][0], first, rtol=0, atol=0)  # reproducible within an epoch
    views.set_epoch(1)
    assert not torch.equal(views[1][0], first)
    with pytest.raises(ValueError, match="train-mode"):
        TwoViews(ScanDataset(records, make_cache(tmp_path), frames=4, channels=1, train=False, augment=None))


def test_views_to_batch_puts_every_first_view_before_every_second() -> None:
    views = torch.arange(3 * 2).float().reshape(3, 2, 1, 1, 1, 1)  # (b, 2, T, C, H, W): value = 2·item + view
    batch = views_to_batch(views)
    assert batch.shape == (6, 1, 1, 1, 1)
    assert batch.flatten().tolist() == [0, 2, 4, 1, 3, 5]
