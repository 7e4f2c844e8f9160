"""Clip-consistent training augmentation: one random draw per clip, applied to every frame.

A clip is a float tensor ``(T, C, H, W)`` in [0, 1]. Each transform is split MONAI-style into ``draw``
(all randomness, from an explicit ``torch.Generator``) and ``apply`` (deterministic), so every frame of a
clip sees the same crop, rotation and intensity change — the temporal model (TSM, Section 2.2) must see a
coherent clip, not per-frame jitter. The per-pixel Gaussian noise field is the one thing that differs
between frames (its standard deviation is drawn once per clip), as acquisition noise does.

MONAI's random array transforms draw from a NumPy ``RandomState``; these small callables take the torch
generator the dataset derives per item instead, and fold crop + rotation into one resampling.

**A batch on the device** (``data.device_data``, :mod:`learner.data.clip_store`): ``draw_batch`` draws the
parameters of B clips at once as ``(B,)`` tensors on the generator's device and ``apply_batch`` transforms
clips ``(B, T, C, H, W)`` in one ``affine_grid``/``grid_sample`` over all B·T frames, with no host sync.
Each transform maps its uniform draws to parameters in one method (``params``), written once for Python
floats (one clip: :data:`SCALAR_OPS`, the numbers of every earlier release) and for tensors
(:data:`TENSOR_OPS`); the affine matrix (:func:`affine_theta`) and the intensity formula
(:func:`intensity_transform`) are likewise shared. The batched path consumes its generator in another order
than B single-clip draws, so its clips are not those of the per-clip path for the same seed; for the same
parameters they agree within float rounding (``tests/data/test_augment_batch.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

Number = TypeVar("Number", float, Tensor)
"""A parameter: a Python float (one clip) or a ``(B,)`` float64 tensor (a batch of clips)."""


@dataclass(frozen=True)
class Ops(Generic[Number]):
    """The few functions that differ between Python floats and tensors in the parameter definitions;
    everything else in them is arithmetic, written once for both."""

    exp: Callable[[Number], Number]
    sqrt: Callable[[Number], Number]
    cos: Callable[[Number], Number]
    sin: Callable[[Number], Number]
    at_most: Callable[[Number, float], Number]


SCALAR_OPS: Ops[float] = Ops(math.exp, math.sqrt, math.cos, math.sin, lambda x, bound: min(bound, x))
"""One clip's parameters: Python floats and :mod:`math` (the per-clip path's numbers, bit for bit)."""
TENSOR_OPS: Ops[Tensor] = Ops(
    torch.exp, torch.sqrt, torch.cos, torch.sin, lambda x, bound: x.clamp(max=bound)
)
"""A batch's parameters: ``(B,)`` tensors on the device."""

_DEG_TO_RAD = math.pi / 180.0  # math.radians(x) is x * (pi / 180), bit for bit


@dataclass(frozen=True)
class GeometricParams(Generic[Number]):
    """Crop centre (cx, cy) and size (w, h) in normalised [-1, 1] coordinates, rotation in radians; floats
    for one clip, ``(B,)`` tensors for a batch."""

    cx: Number
    cy: Number
    w: Number
    h: Number
    angle: Number


def affine_theta(p: GeometricParams[Number], height: int, width: int, ops: Ops[Number]) -> list[list[Number]]:
    """The 2 × 3 ``affine_grid`` matrix of crop + rotation ``p`` for frames ``height`` × ``width``, as rows
    of floats (one clip) or of ``(B,)`` tensors (a batch)."""
    cos, sin = ops.cos(p.angle), ops.sin(p.angle)
    # Rotate in pixel units (normalised x and y have different pixel sizes when H != W), then crop.
    rotation = [[cos, -sin * height / width], [sin * width / height, cos]]
    return [
        [p.w * rotation[0][0], p.w * rotation[0][1], p.cx],
        [p.h * rotation[1][0], p.h * rotation[1][1], p.cy],
    ]


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

    def params(self, u: Sequence[Number], ops: Ops[Number]) -> GeometricParams[Number]:
        """Parameters from five U[0, 1) draws ``u`` (floats, or ``(B,)`` tensors): the one definition of
        the distribution, for one clip (:meth:`draw`) and for a batch (:meth:`draw_batch`)."""
        area = self.scale[0] + u[0] * (self.scale[1] - self.scale[0])
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = ops.exp(log_lo + u[1] * (log_hi - log_lo))
        w, h = ops.at_most(ops.sqrt(area * aspect), 1.0), ops.at_most(ops.sqrt(area / aspect), 1.0)
        cx, cy = (2 * u[2] - 1) * (1 - w), (2 * u[3] - 1) * (1 - h)  # keeps the crop inside the frame
        angle = (2 * u[4] - 1) * self.degrees * _DEG_TO_RAD
        return GeometricParams(cx, cy, w, h, angle)

    def draw(self, generator: torch.Generator) -> GeometricParams[float]:
        return self.params(torch.rand(5, generator=generator, dtype=torch.float64).tolist(), SCALAR_OPS)

    def draw_batch(self, batch: int, generator: torch.Generator) -> GeometricParams[Tensor]:
        """Parameters of ``batch`` clips, ``(B,)`` float64 tensors on the generator's device."""
        u = torch.rand(batch, 5, generator=generator, dtype=torch.float64, device=generator.device)
        return self.params(u.unbind(1), TENSOR_OPS)

    def apply(self, clip: torch.Tensor, p: GeometricParams[float]) -> torch.Tensor:
        """(T, C, H, W) → (T, C, H, W): the same affine resampling for every frame."""
        t, _, height, width = clip.shape
        theta = torch.tensor(
            affine_theta(p, height, width, SCALAR_OPS), dtype=clip.dtype, device=clip.device
        )  # (2, 3)
        grid = F.affine_grid(theta.expand(t, 2, 3), list(clip.shape), align_corners=False)  # (T, H, W, 2)
        return F.grid_sample(clip, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def apply_batch(self, clips: torch.Tensor, p: GeometricParams[Tensor]) -> torch.Tensor:
        """(B, T, C, H, W) → (B, T, C, H, W): clip b's resampling on each of its frames, as one
        ``grid_sample`` over the B·T frames."""
        b, t, c, height, width = clips.shape
        rows = affine_theta(p, height, width, TENSOR_OPS)  # 2 rows of 3 (B,) tensors
        theta = torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2).to(clips.dtype)  # (B, 2, 3)
        frames = clips.reshape(b * t, c, height, width)  # (B·T, C, H, W)
        grid = F.affine_grid(
            theta.repeat_interleave(t, dim=0), [b * t, c, height, width], align_corners=False
        )  # (B·T, H, W, 2)
        out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.reshape(b, t, c, height, width)


@dataclass(frozen=True)
class IntensityParams(Generic[Number]):
    """Contrast factor around the clip mean, gamma exponent, additive brightness; floats for one clip,
    ``(B,)`` tensors for a batch."""

    contrast: Number
    gamma: Number
    brightness: Number


def intensity_transform(
    clip: Tensor, mean: Tensor, contrast: float | Tensor, gamma: float | Tensor, brightness: float | Tensor
) -> Tensor:
    """Contrast about ``mean``, clamp, gamma, brightness, clamp: the one formula of :class:`RandomIntensity`
    (parameters as floats for one clip, or broadcastable tensors for a batch)."""
    out = ((clip - mean) * contrast + mean).clamp(0, 1) ** gamma
    return (out + brightness).clamp(0, 1)


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

    def params(self, u: Sequence[Number], ops: Ops[Number]) -> IntensityParams[Number]:
        """Parameters from three U(-1, 1) draws ``u`` (floats, or ``(B,)`` tensors): the one definition."""
        return IntensityParams(
            contrast=1 + u[0] * self.contrast,
            gamma=ops.exp(u[1] * math.log1p(self.gamma)),
            brightness=u[2] * self.brightness,
        )

    def draw(self, generator: torch.Generator) -> IntensityParams[float]:
        u = (2 * torch.rand(3, generator=generator, dtype=torch.float64) - 1).tolist()  # U(-1, 1)
        return self.params(u, SCALAR_OPS)

    def draw_batch(self, batch: int, generator: torch.Generator) -> IntensityParams[Tensor]:
        """Parameters of ``batch`` clips, ``(B,)`` float64 tensors on the generator's device."""
        u = 2 * torch.rand(batch, 3, generator=generator, dtype=torch.float64, device=generator.device) - 1
        return self.params(u.unbind(1), TENSOR_OPS)

    def apply(self, clip: torch.Tensor, p: IntensityParams[float]) -> torch.Tensor:
        mean = clip.mean()  # one mean for the whole clip keeps the frames consistent
        return intensity_transform(clip, mean, p.contrast, p.gamma, p.brightness)

    def apply_batch(self, clips: torch.Tensor, p: IntensityParams[Tensor]) -> torch.Tensor:
        """(B, T, C, H, W) → (B, T, C, H, W), each clip about its own mean."""
        mean = clips.mean(dim=(1, 2, 3, 4), keepdim=True)  # (B, 1, 1, 1, 1)

        def per_clip(value: Tensor) -> Tensor:
            return value.to(clips.dtype).view(-1, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)

        return intensity_transform(clips, mean, *(per_clip(v) for v in (p.contrast, p.gamma, p.brightness)))


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

    def draw_batch(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
        """The noise of a batch ``shape`` (B, ...) float32 on the generator's device, each clip's standard
        deviation ``U(0, std)`` drawn once."""
        sigma = torch.rand(shape[0], generator=generator, dtype=torch.float64, device=generator.device)
        field = torch.randn(shape, generator=generator, device=generator.device)
        return field * (sigma * self.std).to(field.dtype).view(-1, *([1] * (len(shape) - 1)))

    def apply(self, clip: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Any shape: ``noise`` has the clip's (one clip, or a batch)."""
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

    def draw_batch(self, shape: torch.Size, generator: torch.Generator) -> BatchParams:
        """Every parameter of a batch of clips ``shape`` (B, T, C, H, W), drawn on the generator's device
        without a host sync: geometric, then intensity, then the noise field."""
        batch = shape[0]
        geometric = self.geometric.draw_batch(batch, generator)
        intensity = self.intensity.draw_batch(batch, generator)
        return BatchParams(geometric, intensity, self.noise.draw_batch(shape, generator))

    def apply_batch(self, clips: torch.Tensor, p: BatchParams) -> torch.Tensor:
        """Clips (B, T, C, H, W) with the parameters ``p`` of :meth:`draw_batch`: clip b as
        :meth:`__call__` would transform it with the parameters of row b (within float rounding)."""
        clips = self.geometric.apply_batch(clips, p.geometric)
        clips = self.intensity.apply_batch(clips, p.intensity)
        return self.noise.apply(clips, p.noise)

    def batch(self, clips: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment clips (B, T, C, H, W) float in [0, 1] on their device, one draw per clip, no host sync;
        returns the same shape."""
        if clips.ndim != 5:
            raise ValueError(f"clips should be (B, T, C, H, W), got shape {tuple(clips.shape)}")
        return self.apply_batch(clips, self.draw_batch(clips.shape, generator))


@dataclass(frozen=True)
class BatchParams:
    """The parameters of a batch of B clips: ``(B,)`` tensors each, and the noise field (B, T, C, H, W)."""

    geometric: GeometricParams[Tensor]
    intensity: IntensityParams[Tensor]
    noise: Tensor

    def clip(self, index: int) -> tuple[GeometricParams[float], IntensityParams[float], Tensor]:
        """Clip ``index``'s parameters as one clip's (floats; its noise (T, C, H, W)): what the per-clip
        transforms take (a host sync: for tests and inspection)."""
        geometric = GeometricParams(*(float(getattr(self.geometric, f)[index]) for f in _GEOMETRIC))
        intensity = IntensityParams(*(float(getattr(self.intensity, f)[index]) for f in _INTENSITY))
        return geometric, intensity, self.noise[index]


_GEOMETRIC = ("cx", "cy", "w", "h", "angle")
_INTENSITY = ("contrast", "gamma", "brightness")
