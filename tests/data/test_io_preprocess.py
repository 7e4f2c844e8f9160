"""Preprocessing: crops, frame budget, grey conversion, resize and intensity normalisation, cache key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learner.config import DataConfig
from learner.data.preprocess import Preprocessor
from learner.data.readers import Scan

FAN = (10, 40, 15, 50)  # y0, y1, x0, x1 of the moving region
TEXT = (2, 6, 2, 20)  # static burned-in "text"


def ultrasound_like(frames: int = 6) -> np.ndarray:
    """(T, 48, 64) uint8: speckle that changes every frame inside FAN, static bright text above it."""
    rng = np.random.default_rng(0)
    clip = np.zeros((frames, 48, 64), np.uint8)
    y0, y1, x0, x1 = FAN
    clip[:, y0:y1, x0:x1] = rng.integers(30, 220, (frames, y1 - y0, x1 - x0))
    ty0, ty1, tx0, tx1 = TEXT
    clip[:, ty0:ty1, tx0:tx1] = 230
    return clip


def test_fan_crop_keeps_the_moving_region_and_drops_static_text() -> None:
    grey = ultrasound_like()
    prep = Preprocessor()
    assert prep.fan_box(grey) == FAN
    assert prep.foreground_box(grey) == (TEXT[0], FAN[1], TEXT[2], FAN[3])  # text is bright too
    static = np.repeat(grey[:1], 6, axis=0)
    assert prep.fan_box(static) == prep.foreground_box(static)  # no motion → foreground
    assert prep.fan_box(grey[:1]) == prep.foreground_box(grey[:1])  # single frame


def test_output_is_the_crop_padded_square_and_resized_like_pil() -> None:
    grey = ultrasound_like()
    out = Preprocessor(size=20, crop="fan")(Scan(grey))
    assert out.shape == (6, 20, 20)
    assert out.dtype == np.uint8
    y0, y1, x0, x1 = FAN  # 30 × 35 crop → pad 2 rows on top, 3 below → 35 × 35
    for t in range(6):
        square = np.zeros((35, 35), np.float32)
        square[2:32] = grey[t, y0:y1, x0:x1]
        reference = np.asarray(Image.fromarray(square, mode="F").resize((20, 20), Image.BILINEAR))
        np.testing.assert_allclose(out[t], np.clip(np.rint(reference), 0, 255), atol=1)


def test_no_crop_letterboxes_the_whole_frame() -> None:
    frame = np.full((1, 10, 40), 200, np.uint8)
    out = Preprocessor(size=8, crop="none")(Scan(frame))
    # 10 × 40 is padded to 40 × 40 with the image in rows 15–24: only the middle output rows are bright
    np.testing.assert_array_equal(out[0, [0, 1, 6, 7]], 0)
    assert out[0, 3:5].min() > 150
    np.testing.assert_array_equal(out[0], out[0, ::-1])  # centred


def test_long_clips_are_evenly_subsampled_to_the_frame_budget() -> None:
    clip = np.repeat(np.arange(100, dtype=np.uint8)[:, None, None] + 50, 16, axis=1).repeat(16, axis=2)
    out = Preprocessor(size=8, crop="none", max_cached_frames=10)(Scan(clip))
    assert out.shape == (10, 8, 8)
    chosen = out[:, 4, 4].astype(int) - 50  # each frame's level is its index
    np.testing.assert_array_equal(chosen, [0, 11, 22, 33, 44, 55, 66, 77, 88, 99])
    short = Preprocessor(size=8, crop="none", max_cached_frames=10)(Scan(clip[:7]))
    assert short.shape[0] == 7


def test_colour_is_bt601_luma_or_kept() -> None:
    colour = np.zeros((2, 8, 8, 3), np.uint8)
    colour[..., :] = (200, 100, 50)
    grey = Preprocessor(size=4, crop="none", channels=1)(Scan(colour))
    assert grey.shape == (2, 4, 4)
    assert np.all(grey == 124)  # 0.299·200 + 0.587·100 + 0.114·50 = 124.2
    kept = Preprocessor(size=4, crop="none", channels=3)(Scan(colour))
    assert kept.shape == (2, 4, 4, 3)
    assert np.all(kept == np.array([200, 100, 50], np.uint8))


def test_volume_crops_to_its_nonzero_extent_and_maps_percentiles_to_0_255() -> None:
    rng = np.random.default_rng(0)
    volume = np.zeros((12, 20, 20), np.float32)
    box = (slice(3, 8), slice(5, 17), slice(4, 16))  # 5 slices of 12 × 12: no padding, no resampling at 12
    volume[box] = rng.uniform(100.0, 1100.0, (5, 12, 12))
    out = Preprocessor(size=12, crop="foreground", max_cached_frames=64)(Scan(volume))
    low, high = np.percentile(volume[box].astype(np.float64), [1, 99])
    expected = np.clip(np.rint((volume[box] - low) / (high - low) * 255), 0, 255)
    np.testing.assert_allclose(out, expected, atol=1)
    assert Preprocessor(size=12, crop="none")(Scan(volume)).shape == (12, 12, 12)  # every slice kept


def test_volume_crop_ignores_rician_background_noise() -> None:
    rng = np.random.default_rng(1)
    shape = (24, 40, 40)
    background = np.hypot(rng.normal(0, 0.04, shape), rng.normal(0, 0.04, shape))  # MR magnitude noise
    volume = background.astype(np.float32)
    volume[6:18, 10:30, 12:28] += 1.0  # the "head"
    prep = Preprocessor(crop="foreground")
    assert prep.volume_box(volume) == (slice(6, 18), slice(10, 30), slice(12, 28))
    assert prep(Scan(volume)).shape == (12, 112, 112)
    assert (volume > 0.1 * np.percentile(volume, 99)).sum() > volume[6:18, 10:30, 12:28].size  # noise passes


def test_key_is_stable_and_changes_with_every_parameter() -> None:
    base = Preprocessor()
    assert base.key() == Preprocessor().key()
    assert Preprocessor.from_config(DataConfig()) == Preprocessor(size=112, channels=1, crop="fan")
    changes = {"size": 64, "channels": 3, "crop": "none", "max_cached_frames": 8, "nifti_axis": "coronal",
               "intensity_threshold": 20.0, "motion_threshold": 1.0, "volume_threshold": 0.2}  # fmt: skip
    keys = {dataclasses.replace(base, **{name: value}).key() for name, value in changes.items()}
    assert len(keys | {base.key()}) == len(changes) + 1


def test_bad_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="crop"):
        Preprocessor(crop="circle")
    with pytest.raises(ValueError, match="channels"):
        Preprocessor(channels=2)  # type: ignore[arg-type]


def test_small_or_nearly_blank_scans_are_warned_about_when_decoded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from learner.data import preprocess

    preprocess._WARNED_SIZES.clear()
    rng = np.random.default_rng(0)
    small = [tmp_path / f"small{i}.png" for i in range(2)]
    for path in small:
        Image.fromarray(rng.integers(0, 256, (16, 20), dtype=np.uint8)).save(path)
    blank = np.zeros((64, 64), np.uint8)
    blank[3, 5] = blank[40, 9] = 200  # two stray pixels on black
    Image.fromarray(blank).save(tmp_path / "blank.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "fine.png")
    loader = Preprocessor.from_config(DataConfig(size=32, crop="none"))
    with caplog.at_level("WARNING", logger="learner.data.preprocess"):
        for name in ("small0.png", "small1.png", "blank.png", "fine.png"):
            loader.load(tmp_path / name)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        f"{small[0]}: frames of 16 × 20 pixels are upsampled to data.size=32 (other scans of this size are "
        "not named)",
        f"{tmp_path / 'blank.png'}: nearly blank: 99% of its pixels are 0",
    ]
