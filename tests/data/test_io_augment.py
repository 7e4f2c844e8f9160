"""Clip-consistent augmentation: one draw per clip, the same transform on every frame."""

from __future__ import annotations

import math

import pytest
import torch

from learner.data.augment import (
    ClipAugment,
    GeometricParams,
    IntensityParams,
    RandomGaussianNoise,
    RandomIntensity,
    RandomResizedCropRotate,
)

NO_NOISE = ClipAugment(noise=RandomGaussianNoise(std=0.0))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_identical_frames_stay_identical_after_augmentation() -> None:
    frame = torch.rand(1, 1, 24, 24, generator=gen(0))
    clip = frame.expand(5, 1, 24, 24).contiguous()  # (T, C, H, W), all frames equal
    for seed in range(5):
        out = NO_NOISE(clip, gen(seed))
        assert out.shape == clip.shape
        assert not torch.allclose(out, clip, atol=1e-3)  # something happened
        assert torch.equal(out, out[:1].expand_as(out))  # but the same thing to every frame


def test_same_seed_same_clip_and_different_seed_different_clip() -> None:
    clip = torch.rand(4, 3, 16, 20, generator=gen(1))
    augment = ClipAugment()
    assert torch.equal(augment(clip, gen(5)), augment(clip, gen(5)))
    assert not torch.allclose(augment(clip, gen(5)), augment(clip, gen(6)))
    out = augment(clip, gen(5))
    assert out.shape == clip.shape
    assert out.min() >= 0
    assert out.max() <= 1


def test_quarter_turn_equals_rot90_and_half_size_crop_zooms_a_ramp() -> None:
    geometric = RandomResizedCropRotate()
    clip = torch.rand(3, 2, 8, 8, generator=gen(2), dtype=torch.float64)
    turned = geometric.apply(clip, GeometricParams(0.0, 0.0, 1.0, 1.0, math.pi / 2))
    torch.testing.assert_close(turned, torch.rot90(clip, 1, dims=(-2, -1)))  # counter-clockwise on screen

    width = 16
    ramp = torch.arange(width, dtype=torch.float64).expand(1, 1, width, width)  # value = column index
    zoomed = geometric.apply(ramp, GeometricParams(0.0, 0.0, 0.5, 0.5, 0.0))
    # Output column c samples input column 3.75 + c/2 (centre crop, half width); bilinear is exact on ramps.
    expected = 3.75 + torch.arange(width, dtype=torch.float64) / 2
    torch.testing.assert_close(zoomed[0, 0, 4:12], expected.expand(8, width))


def test_intensity_follows_its_formula() -> None:
    intensity = RandomIntensity()
    clip = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64).reshape(1, 1, 2, 2)
    torch.testing.assert_close(intensity.apply(clip, IntensityParams(1.0, 2.0, 0.0)), clip**2)
    torch.testing.assert_close(
        intensity.apply(clip, IntensityParams(1.0, 1.0, 0.1)), (clip + 0.1).clamp(0, 1)
    )
    mean = clip.mean()  # 0.4375
    torch.testing.assert_close(
        intensity.apply(clip, IntensityParams(0.5, 1.0, 0.0)), (clip - mean) * 0.5 + mean
    )


def test_noise_level_is_drawn_once_per_clip_but_the_field_differs_per_frame() -> None:
    noise = RandomGaussianNoise(std=0.1)
    clip = torch.full((4, 1, 64, 64), 0.5)
    for seed in range(3):
        out = noise.apply(clip, noise.draw(gen(seed), clip.shape))
        per_frame = (out - 0.5).flatten(1).std(dim=1)  # (T,)
        assert per_frame.max() <= 0.1 * 1.1
        assert per_frame.max() / per_frame.min() < 1.15  # one sigma for the whole clip
        assert not torch.equal(out[0], out[1])


def test_draws_respect_their_ranges() -> None:
    geometric, intensity = RandomResizedCropRotate(scale=(0.5, 0.9), degrees=5), RandomIntensity()
    for seed in range(200):
        g = geometric.draw(gen(seed))
        assert 0.5 - 1e-9 <= g.w * g.h <= 1.0
        assert abs(g.cx) <= 1 - g.w + 1e-9
        assert abs(g.cy) <= 1 - g.h + 1e-9
        assert abs(g.angle) <= math.radians(5)
        i = intensity.draw(gen(seed))
        assert 0.8 <= i.contrast <= 1.2
        assert 1 / 1.2 <= i.gamma <= 1.2
        assert abs(i.brightness) <= 0.1


def test_bad_settings_and_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCropRotate(scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="std"):
        RandomGaussianNoise(std=-1.0)
    with pytest.raises(ValueError, match="T, C, H, W"):
        ClipAugment()(torch.zeros(8, 8), gen(0))
