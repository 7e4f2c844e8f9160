"""TSM-ResNet-18 against an independent functional ResNet-18 and a slow per-frame loop shift."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from learner.models.tsm_resnet import FrozenBatchNorm2d, TSMResNet18, temporal_shift

N_CLIPS, N_FRAMES, SIZE = 2, 3, 32


def randomise_batch_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters (the defaults are an identity)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                module.weight.copy_(0.5 + torch.rand(c, generator=generator))
                module.bias.copy_(0.1 * torch.randn(c, generator=generator))


def reference_resnet18(state: dict[str, Tensor], frames: Tensor, shift: Callable[[Tensor], Tensor]) -> Tensor:
    """A plain functional ResNet-18 (eval-mode BN) on the standard state-dict layout: (B, C, H, W) → (B, D).

    ``shift`` is applied to the input of every BasicBlock's residual branch (identity for a plain ResNet).
    """

    def bn(x: Tensor, prefix: str) -> Tensor:
        return F.batch_norm(
            x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
            state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False, eps=1e-5,
        )  # fmt: skip

    x = F.conv2d(frames, state["conv1.weight"], stride=2, padding=3)
    x = F.max_pool2d(F.relu(bn(x, "bn1")), kernel_size=3, stride=2, padding=1)
    for stage in range(1, 5):
        for index in range(2):
            prefix = f"layer{stage}.{index}"
            stride = 2 if stage > 1 and index == 0 else 1
            branch = F.conv2d(shift(x), state[f"{prefix}.conv1.weight"], stride=stride, padding=1)
            branch = F.relu(bn(branch, f"{prefix}.bn1"))
            branch = bn(F.conv2d(branch, state[f"{prefix}.conv2.weight"], padding=1), f"{prefix}.bn2")
            identity = x
            if f"{prefix}.downsample.0.weight" in state:
                identity = F.conv2d(x, state[f"{prefix}.downsample.0.weight"], stride=stride)
                identity = bn(identity, f"{prefix}.downsample.1")
            x = F.relu(branch + identity)
    return x.mean(dim=(2, 3))


def loop_shift(fraction: float) -> Callable[[Tensor], Tensor]:
    """The TSM shift written as a slow loop over clips, frames and channels on (N·T, C, H, W)."""

    def shift(x: Tensor) -> Tensor:
        channels = x.shape[1]
        fold = int(channels * fraction)
        out = torch.zeros_like(x)
        for clip in range(N_CLIPS):
            for t in range(N_FRAMES):
                row = clip * N_FRAMES + t
                for c in range(channels):
                    if c < fold:  # takes the next frame of the same clip
                        if t + 1 < N_FRAMES:
                            out[row, c] = x[row + 1, c]
                    elif c < 2 * fold:  # takes the previous frame of the same clip
                        if t > 0:
                            out[row, c] = x[row - 1, c]
                    else:
                        out[row, c] = x[row, c]
        return out

    return shift


def paper_model(shift_fraction: float, in_channels: int = 1) -> TSMResNet18:
    model = TSMResNet18(in_channels=in_channels, size="paper", shift_fraction=shift_fraction)
    randomise_batch_norms(model, torch.Generator().manual_seed(1))
    return model.double().eval()


def random_clips(in_channels: int = 1, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(N_CLIPS, N_FRAMES, in_channels, SIZE, SIZE, generator=generator, dtype=torch.float64)


def test_without_shift_per_frame_features_equal_a_plain_resnet18() -> None:
    model = paper_model(shift_fraction=0.0)
    clips = random_clips()
    with torch.no_grad():
        per_frame = model.frame_features(clips)
        pooled = model(clips)
        expected = reference_resnet18(model.state_dict(), clips.reshape(-1, 1, SIZE, SIZE), lambda x: x)
    assert model.embed_dim == 512
    torch.testing.assert_close(per_frame, expected.reshape(N_CLIPS, N_FRAMES, 512), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(pooled, expected.reshape(N_CLIPS, N_FRAMES, 512).mean(1), rtol=1e-7, atol=1e-9)


def test_a_single_frame_is_a_plain_resnet18_not_one_with_zeroed_channels() -> None:
    """A still image (T = 1) has nothing to shift from: the shifted model equals the plain ResNet-18
    (issue 23 point 6; the shift once zeroed 2·fold channels of every block)."""
    model = paper_model(shift_fraction=0.125)
    image = random_clips()[:, :1]  # (N, 1, C, H, W)
    with torch.no_grad():
        got = model(image)
        expected = reference_resnet18(model.state_dict(), image.reshape(-1, 1, SIZE, SIZE), lambda x: x)
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)
    x = torch.rand(4, 16, 2, 2)
    assert temporal_shift(x, num_frames=1, fold=2) is x


@pytest.mark.parametrize("fraction", [0.125, 0.25])
def test_with_shift_equals_a_slow_loop_shift(fraction: float) -> None:
    model = paper_model(shift_fraction=fraction)
    clips = random_clips()
    with torch.no_grad():
        got = model(clips)
        frames = clips.reshape(-1, 1, SIZE, SIZE)  # (N·T, C, H, W)
        frames = reference_resnet18(model.state_dict(), frames, loop_shift(fraction))
    expected = frames.reshape(N_CLIPS, N_FRAMES, -1).mean(1)
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


def test_shift_is_zero_padded_at_clip_ends() -> None:
    # Two clips of four frames, eight channels, fold 1; every input value is non-zero and unique.
    x = torch.arange(1, 2 * 4 * 8 + 1, dtype=torch.float32).reshape(8, 8, 1, 1)
    out = temporal_shift(x, num_frames=4, fold=1)[..., 0, 0]  # (N·T, C)
    x = x[..., 0, 0]
    for clip in range(2):
        first, last = clip * 4, clip * 4 + 3
        assert out[last, 0] == 0  # nothing after the last frame, not the next clip's first frame
        assert out[first, 1] == 0  # nothing before the first frame, not the previous clip's last frame
        for row in range(first, last):
            assert out[row, 0] == x[row + 1, 0]
            assert out[row + 1, 1] == x[row, 1]
    assert torch.equal(out[:, 2:], x[:, 2:])
    assert torch.equal(temporal_shift(x[..., None, None], 4, 0), x[..., None, None])


def test_frames_never_mix_across_clips() -> None:
    model = paper_model(shift_fraction=0.125)
    clips = random_clips()
    perturbed = clips.clone()
    perturbed[1] = random_clips(seed=5)[1]
    with torch.no_grad():
        before, after = model(clips), model(perturbed)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=1e-12)
    assert not torch.allclose(after[1], before[1])


def test_channels_last_and_strided_input_give_the_same_embeddings() -> None:
    model = TSMResNet18(in_channels=3, size="tiny").eval()
    clips = torch.rand(N_CLIPS, N_FRAMES, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(2))
    strided = clips.permute(0, 1, 4, 2, 3)  # (N, T, C, H, W), not contiguous
    with torch.no_grad():
        expected = model(strided.contiguous())
        got = model.to(memory_format=torch.channels_last)(strided)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_frozen_bn_trains_with_the_stored_statistics_and_never_updates_them() -> None:
    generator = torch.Generator().manual_seed(3)
    model = TSMResNet18(in_channels=1, size="tiny", shift_fraction=0.0, norm="frozen_bn")
    randomise_batch_norms(model, generator)
    frozen = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert frozen
    assert all(type(m) is FrozenBatchNorm2d for m in frozen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frames = torch.rand(N_CLIPS * N_FRAMES, 1, SIZE, SIZE, generator=generator)
    model.train()  # BatchNorm would use batch statistics here and update its running ones
    trained = model.embed_frames(frames, N_FRAMES)
    expected = reference_resnet18(before, frames, shift=lambda x: x)  # eval-mode BN, stored statistics
    torch.testing.assert_close(trained, expected, rtol=1e-4, atol=1e-5)
    trained.sum().backward()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # running_mean, running_var, num_batches_tracked
    assert frozen[0].weight.grad is not None  # the affine parameters still learn
    model.eval()
    torch.testing.assert_close(model.embed_frames(frames, N_FRAMES), trained.detach(), rtol=0, atol=0)


def test_group_norm_has_32_groups_or_one_per_channel_and_normalises_each_group() -> None:
    model = TSMResNet18(in_channels=1, size="tiny", norm="group")
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert all(isinstance(m, nn.GroupNorm) for m in norms)
    groups = {m.num_channels: m.num_groups for m in norms}
    assert groups == {16: 16, 32: 32, 64: 32, 128: 32}  # tiny widths 16 … 128
    assert set(model.state_dict()) == set(TSMResNet18(in_channels=1, size="tiny").state_dict()) - {
        k for k in TSMResNet18(in_channels=1, size="tiny").state_dict() if "running" in k or "batches" in k
    }  # the same names (bn1, downsample.1, …), without BatchNorm's buffers
    layer = copy.deepcopy(model.layer4[0].bn1).double()  # 128 channels in 32 groups of 4
    x = torch.randn(2, 128, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grouped = x.reshape(2, 32, 4 * 9)  # float64 by hand: each group over its 4 channels × 3 × 3
    hand = (grouped - grouped.mean(-1, keepdim=True)) / torch.sqrt(
        grouped.var(-1, unbiased=False, keepdim=True) + 1e-5
    )
    torch.testing.assert_close(layer(x), hand.reshape_as(x))
    frames = torch.rand(N_CLIPS * N_FRAMES, 1, SIZE, SIZE)
    model.eval()
    alone = model.embed_frames(frames[:N_FRAMES], N_FRAMES)
    torch.testing.assert_close(model.embed_frames(frames, N_FRAMES)[:N_FRAMES], alone)  # batch-independent


def test_unknown_norm_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match="unknown norm 'layer'; available: batch, group, frozen_bn"):
        TSMResNet18(in_channels=1, size="tiny", norm="layer")


def slicing_shift(frames: Tensor, num_frames: int, fold: int) -> Tensor:
    """The shift as it was first written (zero tensor + three sliced copies, autograd's own backward); a
    single frame passes unchanged (nothing to shift from)."""
    if num_frames == 1:
        return frames
    nt, c, h, w = frames.shape
    x = frames.reshape(nt // num_frames, num_frames, c, h, w)
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.reshape(nt, c, h, w)


@pytest.mark.parametrize(
    ("clips", "num_frames", "channels", "fold", "channels_last"),
    [(2, 4, 8, 1, False), (3, 1, 6, 2, False), (2, 5, 8, 4, False), (2, 3, 16, 2, True)],
)
def test_shift_and_its_gradient_equal_the_slicing_form(
    clips: int, num_frames: int, channels: int, fold: int, channels_last: bool
) -> None:
    generator = torch.Generator().manual_seed(fold)
    shape = (clips * num_frames, channels, 3, 2)
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    upstream = torch.randn(shape, generator=generator, dtype=torch.float64)
    got, expected = temporal_shift(x, num_frames, fold), slicing_shift(x, num_frames, fold)
    assert torch.equal(got, expected)
    (grad_got,) = torch.autograd.grad(got, x, upstream, create_graph=True)
    (grad_expected,) = torch.autograd.grad(expected, x, upstream, create_graph=True)
    assert torch.equal(grad_got, grad_expected)
    # Second order (the backward is itself a shift): d/dx of <grad, v> is zero for a linear map, and
    # d/d upstream of <grad_x, v> is the forward shift of v.
    v = torch.randn(shape, generator=generator, dtype=torch.float64)
    upstream.requires_grad_(True)
    (grad_got,) = torch.autograd.grad(temporal_shift(x, num_frames, fold), x, upstream, create_graph=True)
    (second,) = torch.autograd.grad((grad_got * v).sum(), upstream)
    assert torch.equal(second, slicing_shift(v, num_frames, fold))


def test_model_gradients_equal_with_the_slicing_shift(monkeypatch: pytest.MonkeyPatch) -> None:
    model = paper_model(shift_fraction=0.125)
    clips = random_clips()

    def gradients() -> list[Tensor]:
        model.zero_grad(set_to_none=True)
        model(clips).square().sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    got = gradients()
    monkeypatch.setattr("learner.models.tsm_resnet.temporal_shift", slicing_shift)
    expected = gradients()
    assert len(got) == len(expected) == len(list(model.parameters()))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
