"""Embedding-table mechanics without an encoder: clip positions, clip tensors, the .npz round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from learner.data.datasets import clip_indices, clips_from_frames
from learner.data.sampling import resample_volume, segment_indices
from learner.errors import CheckpointError
from learner.evaluation.embed import EmbeddingTable


@pytest.mark.parametrize(("n", "frames"), [(1, 1), (7, 3), (16, 8), (3, 5)])
def test_one_clip_is_the_eval_centre_sampling(n: int, frames: int) -> None:
    np.testing.assert_array_equal(clip_indices(n, frames, 1)[0], segment_indices(n, frames, train=False))


def test_several_clips_take_evenly_offset_positions_in_every_segment() -> None:
    # 12 frames, T = 2 segments [0, 6) and [6, 12), K = 3 sub-segments of 2 frames each: centres +1
    np.testing.assert_array_equal(clip_indices(12, 2, 3), [[1, 7], [3, 9], [5, 11]])
    # fewer frames than K·T positions: frames repeat, in order, never out of range
    short = clip_indices(3, 2, 2)
    assert short.shape == (2, 2)
    assert short.min() >= 0
    assert short.max() <= 2


def test_clips_from_grey_and_colour_frames() -> None:
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(6, 5, 4), dtype=np.uint8)  # (T', H, W)
    clips = clips_from_frames(grey, frames=3, clips=1, channels=1)
    assert clips.shape == (1, 3, 1, 5, 4)
    expected = torch.from_numpy(grey[[1, 3, 5]].astype(np.float32) / 255.0)
    torch.testing.assert_close(clips[0, :, 0], expected)
    three = clips_from_frames(grey, frames=3, clips=1, channels=3)
    torch.testing.assert_close(three[0, :, 2], expected)  # grey repeated on every channel

    colour = rng.integers(0, 256, size=(4, 5, 4, 3), dtype=np.uint8)  # (T', H, W, 3)
    clips = clips_from_frames(colour, frames=2, clips=2, channels=3)  # picks [[0, 2], [1, 3]]
    assert clips.shape == (2, 2, 3, 5, 4)
    torch.testing.assert_close(
        clips[1, 1], torch.from_numpy(colour[3].astype(np.float32) / 255).permute(2, 0, 1)
    )


def test_resampled_clips_are_the_scan_on_the_grid_and_identical() -> None:
    grey = np.random.default_rng(1).integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    clips = clips_from_frames(grey, frames=3, clips=2, channels=1, sampling="resample")
    expected = torch.from_numpy(resample_volume(grey, (3, 5, 4)) / 255.0).float()
    torch.testing.assert_close(clips[0, :, 0], expected)
    assert torch.equal(clips[0], clips[1])  # one grid, so K clips coincide


def test_table_round_trip_without_pickle(tmp_path: Path) -> None:
    table = EmbeddingTable(
        scan_ids=["a", "b_002", "ç"],
        embeddings=np.arange(6, dtype=np.float32).reshape(3, 2),
        scores=np.array([1.5, 2.5, 3.5], dtype=np.float32),
        fingerprint="f" * 64,
        clips_per_scan=2,
        skipped=[("bad", "bad.mp4: cannot decode")],
    )
    path = table.save(tmp_path / "t.npz")
    with np.load(path, allow_pickle=False) as raw:
        assert all(raw[key].dtype != object for key in raw.files)
    loaded = EmbeddingTable.load(path)
    assert loaded.scan_ids == table.scan_ids
    np.testing.assert_array_equal(loaded.embeddings, table.embeddings)
    np.testing.assert_array_equal(loaded.scores, table.scores)
    assert (loaded.fingerprint, loaded.clips_per_scan, loaded.skipped) == ("f" * 64, 2, table.skipped)


def test_bad_tables(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rows"):
        EmbeddingTable(["a"], np.zeros((2, 3), np.float32), np.zeros(2, np.float32), "f", 1)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not an npz")
    with pytest.raises(CheckpointError, match="broken"):
        EmbeddingTable.load(broken)
