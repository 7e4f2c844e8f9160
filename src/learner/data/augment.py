"""Clip-consistent training augmentation: one random draw per clip, applied to every frame.

A clip is a float tensor ``(T, C, H, W)`` in [0, 1]. Each transform is split MONAI-style into ``draw``
(all randomness, from an explicit ``torch.Generator``) and ``apply`` (deterministic), so every frame of a
clip sees the same crop, rotation and intensity change — the temporal model (TSM, Section 2.2) must see a
coherent clip, not per-frame jitter. The per-pixel Gaussian noise field is the one thing that differs
between frames (its standard deviation is drawn once per clip), as acquisition noise does.

MONAI's random array transforms draw from a NumPy ``RandomState``; these small callables take the torch
generator the dataset derives per item instead, and fold crop + rotation into one resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class GeometricParams:
    """Crop centre (cx, cy) and size (w, h) in normalised [-1, 1] coordinates, rotation in radians."""

    cx: float
    cy: float
    w: float
    h: float
    angle: float


@dataclass(frozen=True)
class RandomResizedCropRotate:
    """Random resized crop (area fraction ``scale``, aspect ``ratio``) plus a rotation of ±``degrees``,
    resampled once with bilinear interpolation; outside the frame is black (zero), as around a fan.

    Args:
        scale: range of the crop area as a fraction of the frame.
        ratio: range of the crop aspect ratio (width / height), sampled log-uniformly.
        degrees: maximal absolute rotation in degrees.
    """

    scale: tuple[float, float] = (0.7, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    degrees: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale should satisfy 0 < low <= high <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio should satisfy 0 < low <= high, got {self.ratio}")
        if self.degrees < 0:
            raise ValueError(f"degrees should be >= 0, got {self.degrees}")

    def draw(self, generator: torch.Generator) -> GeometricParams:
        u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
        area = self.scale[0] + u[0] * (self.scale[1] - self.scale[0])
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
        w, h = min(1.0, math.sqrt(area * aspect)), min(1.0, math.sqrt(area / aspect))
        cx, cy = (2 * u[2] - 1) * (1 - w), (2 * u[3] - 1) * (1 - h)  # keeps the crop inside the frame
        angle = math.radians((2 * u[4] - 1) * self.degrees)
        return GeometricParams(cx, cy, w, h, angle)

    def apply(self, clip: torch.Tensor, p: GeometricParams) -> torch.Tensor:
        """(T, C, H, W) → (T, C, H, W): the same affine resampling for every frame."""
        t, _, height, width = clip.shape
        cos, sin = math.cos(p.angle), math.sin(p.angle)
        # Rotate in pixel units (normalised x and y have different pixel sizes when H != W), then crop.
        rotation = [[cos, -sin * height / width], [sin * width / height, cos]]
        theta = torch.tensor(
            [
                [p.w * rotation[0][0], p.w * rotation[0][1], p.cx],
                [p.h * rotation[1][0], p.h * rotation[1][1], p.cy],
            ],
            dtype=clip.dtype,
            device=clip.device,
        )
        grid = F.affine_grid(theta.expand(t, 2, 3), list(clip.shape), align_corners=False)  # (T, H, W, 2)
        return F.grid_sample(clip, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass(frozen=True)
class IntensityParams:
    """Contrast factor around the clip mean, gamma exponent, additive brightness."""

    contrast: float
    gamma: float
    brightness: float


@dataclass(frozen=True)
class RandomIntensity:
    """Contrast ``×U(1 − c, 1 + c)`` about the clip mean, gamma ``exp(U(±log(1 + g)))``, brightness
    ``+U(±b)``; the result is clamped to [0, 1] (gain and TGC differences between machines and operators).
    """

    contrast: float = 0.2
    gamma: float = 0.2
    brightness: float = 0.1

    def __post_init__(self) -> None:
        if not (0 <= self.contrast < 1 and self.gamma >= 0 and self.brightness >= 0):
            raise ValueError(
                f"need 0 <= contrast < 1, gamma >= 0, brightness >= 0; got {self.contrast}, {self.gamma}, "
                f"{self.brightness}"
            )

    def draw(self, generator: torch.Generator) -> IntensityParams:
        u = (2 * torch.rand(3, generator=generator, dtype=torch.float64) - 1).tolist()  # U(-1, 1)
        return IntensityParams(
            contrast=1 + u[0] * self.contrast,
            gamma=math.exp(u[1] * math.log1p(self.gamma)),
            brightness=u[2] * self.brightness,
        )

    def apply(self, clip: torch.Tensor, p: IntensityParams) -> torch.Tensor:
        mean = clip.mean()  # one mean for the whole clip keeps the frames consistent
        out = ((clip - mean) * p.contrast + mean).clamp(0, 1) ** p.gamma
        return (out + p.brightness).clamp(0, 1)


@dataclass(frozen=True)
class RandomGaussianNoise:
    """Additive Gaussian noise with standard deviation ``U(0, std)`` drawn once per clip."""

    std: float = 0.02

    def __post_init__(self) -> None:
        if self.std < 0:
            raise ValueError(f"std should be >= 0, got {self.std}")

    def draw(self, generator: torch.Generator, shape: torch.Size) -> torch.Tensor:
        sigma = torch.rand(1, generator=generator, dtype=torch.float64).item() * self.std
        return sigma * torch.randn(shape, generator=generator, device=generator.device)

    def apply(self, clip: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (clip + noise.to(device=clip.device, dtype=clip.dtype)).clamp(0, 1)


@dataclass(frozen=True)
class ClipAugment:
    """Crop + rotation, then intensity, then noise; one parameter draw per clip.

    Example::

        augment = ClipAugment()
        clip = augment(clip, torch.Generator().manual_seed(0))  # (T, C, H, W) in [0, 1]
    """

    geometric: RandomResizedCropRotate = RandomResizedCropRotate()
    intensity: RandomIntensity = RandomIntensity()
    noise: RandomGaussianNoise = RandomGaussianNoise()

    @classmethod
    def from_config(cls, data: object) -> ClipAugment | None:
        """The default augmentation if ``data.augment`` (a :class:`learner.config.DataConfig`), else None."""
        return cls() if data.augment else None  # type: ignore[attr-defined]

    def __call__(self, clip: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment ``clip`` (T, C, H, W) float in [0, 1]; returns the same shape."""
        if clip.ndim != 4:
            raise ValueError(f"clip should be (T, C, H, W), got shape {tuple(clip.shape)}")
        clip = self.geometric.apply(clip, self.geometric.draw(generator))
        clip = self.intensity.apply(clip, self.intensity.draw(generator))
        return self.noise.apply(clip, self.noise.draw(generator, clip.shape))
