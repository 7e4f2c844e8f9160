"""Batched augmentation on the device (ClipAugment.batch) against the per-clip path: the same parameters give
the same clips within float rounding, one parameter definition serves both, and draws are seeded."""

from __future__ import annotations

import math

import pytest
import torch

from learner.data.augment import (
    SCALAR_OPS,
    TENSOR_OPS,
    ClipAugment,
    RandomGaussianNoise,
    RandomIntensity,
    RandomResizedCropRotate,
)

NO_NOISE = ClipAugment(noise=RandomGaussianNoise(std=0.0))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(4, 3, 1, 16, 16), (3, 2, 3, 12, 20)])
def test_batch_equals_the_per_clip_transforms_for_the_same_parameters(shape: tuple[int, ...]) -> None:
    augment = ClipAugment(RandomResizedCropRotate(degrees=30.0), RandomIntensity(0.4, 0.5, 0.2))
    clips = torch.rand(shape, generator=gen(0))  # (B, T, C, H, W)
    params = augment.draw_batch(clips.shape, gen(1))
    batched = augment.apply_batch(clips, params)
    assert batched.shape == clips.shape
    for index in range(shape[0]):
        geometric, intensity, noise = params.clip(index)
        one = augment.geometric.apply(clips[index], geometric)
        one = augment.intensity.apply(one, intensity)
        one = augment.noise.apply(one, noise)
        torch.testing.assert_close(batched[index], one, rtol=0, atol=2e-6)


def test_one_parameter_definition_for_floats_and_tensors() -> None:
    """params() on the same uniforms: Python floats (the per-clip path) and (B,) tensors agree."""
    geometric, intensity = RandomResizedCropRotate(scale=(0.3, 0.9), degrees=25.0), RandomIntensity()
    u = torch.rand(6, 5, generator=gen(2), dtype=torch.float64)
    batch = geometric.params(u.unbind(1), TENSOR_OPS)
    for row in range(6):
        one = geometric.params(u[row].tolist(), SCALAR_OPS)
        for name in ("cx", "cy", "w", "h", "angle"):
            assert getattr(batch, name)[row].item() == pytest.approx(getattr(one, name), rel=1e-15, abs=1e-15)
    v = 2 * torch.rand(6, 3, generator=gen(3), dtype=torch.float64) - 1
    batch_i = intensity.params(v.unbind(1), TENSOR_OPS)
    for row in range(6):
        one_i = intensity.params(v[row].tolist(), SCALAR_OPS)
        for name in ("contrast", "gamma", "brightness"):
            assert getattr(batch_i, name)[row].item() == pytest.approx(getattr(one_i, name), rel=1e-15)
    # the per-clip draw is params() of its five uniforms
    assert geometric.draw(gen(4)) == geometric.params(
        torch.rand(5, generator=gen(4), dtype=torch.float64).tolist(), SCALAR_OPS
    )


def test_batch_parameters_stay_in_their_ranges() -> None:
    geometric = RandomResizedCropRotate(scale=(0.5, 1.0), ratio=(0.75, 4 / 3), degrees=10.0)
    p = geometric.draw_batch(2000, gen(5))
    area = p.w * p.h
    assert bool((p.w <= 1).all())
    assert bool((p.h <= 1).all())
    assert bool((area >= 0.5 * 0.75 - 1e-12).all())
    assert bool((area <= 1 + 1e-12).all())
    assert bool((p.cx.abs() <= 1 - p.w + 1e-12).all())
    assert bool((p.cy.abs() <= 1 - p.h + 1e-12).all())
    assert bool((p.angle.abs() <= math.radians(10.0) + 1e-12).all())
    intensity = RandomIntensity(0.2, 0.2, 0.1).draw_batch(2000, gen(6))
    assert bool(((intensity.contrast - 1).abs() <= 0.2).all())
    assert bool((intensity.brightness.abs() <= 0.1).all())


def test_batch_draws_are_deterministic_for_a_seed_and_differ_between_seeds() -> None:
    clips = torch.rand(3, 4, 1, 16, 16, generator=gen(7))
    augment = ClipAugment()
    first, again, other = (augment.batch(clips, gen(s)) for s in (8, 8, 9))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert first.min() >= 0
    assert first.max() <= 1
    a, b = augment.draw_batch(clips.shape, gen(8)), augment.draw_batch(clips.shape, gen(8))
    assert torch.equal(a.noise, b.noise)
    assert torch.equal(a.geometric.angle, b.geometric.angle)


def test_each_clip_gets_its_own_draw_and_every_frame_of_a_clip_the_same() -> None:
    frame = torch.rand(1, 1, 1, 20, 20, generator=gen(10))
    clips = frame.expand(4, 5, 1, 20, 20).contiguous()  # 4 identical clips of 5 identical frames
    out = NO_NOISE.batch(clips, gen(11))
    # the same transform on every frame of a clip (to float rounding: vectorised pow rounds by position)
    torch.testing.assert_close(out, out[:, :1].expand_as(out), rtol=0, atol=1e-6)
    assert not torch.allclose(out[0], out[1])  # another draw for another clip
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        NO_NOISE.batch(clips[0], gen(0))
