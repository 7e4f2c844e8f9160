"""The gradient finiteness flag (learner.training.finite): on the CPU a per-gradient aminmax, the same flag
as the inf-norm (``nn.utils.get_total_norm``) it replaced there: NaN, +inf and -inf anywhere in any
gradient, huge finite values, half and bf16, no gradients, and no host sync."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
import torch
from torch import nn

from learner.training.finite import finite_gradient_flag, finite_gradients

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def reference(grads: list[torch.Tensor]) -> torch.Tensor:
    """The flag as it was: whether the inf-norm of all gradients is finite."""
    return torch.isfinite(nn.utils.get_total_norm(grads, norm_type=math.inf))


def with_grads(*grads: torch.Tensor | None) -> nn.Module:
    """A module whose parameters have ``grads`` (None: a parameter without a gradient)."""
    model = nn.Module()
    model.params = nn.ParameterList(
        [nn.Parameter(torch.zeros(1) if g is None else torch.zeros_like(g)) for g in grads]
    )
    for param, grad in zip(model.params, grads, strict=True):
        param.grad = grad
    return model


def assert_as_before(grads: list[torch.Tensor], expected: bool) -> None:
    flag = finite_gradient_flag(with_grads(*grads))
    before = reference(grads)
    assert flag is not None
    assert (flag.dtype, flag.shape, flag.device) == (before.dtype, before.shape, before.device)
    assert torch.equal(flag, before)
    assert bool(flag) is expected


def several(dtype: torch.dtype) -> list[torch.Tensor]:
    """Three gradients of different shapes, sizes past the SIMD widths, one of them not contiguous."""
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(7, generator=gen).to(dtype),
        torch.randn(33, 65, generator=gen).to(dtype),
        torch.randn(129, 40, generator=gen).to(dtype).t(),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_non_finite_value_anywhere_in_any_gradient_is_caught(
    dtype: torch.dtype, value: float, which: int, where: str
) -> None:
    grads = several(dtype)
    flat = grads[which].reshape(-1)  # a copy for the transposed one: poison that and put it back
    flat[{"first": 0, "middle": flat.numel() // 2 + 3, "last": -1}[where]] = value
    grads[which] = flat.view(grads[which].shape) if grads[which].is_contiguous() else flat.view(40, 129).t()
    assert not torch.isfinite(grads[which]).all()
    assert_as_before(grads, expected=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_gradients_are_finite(dtype: torch.dtype) -> None:
    assert_as_before(several(dtype), expected=True)
    assert finite_gradients(with_grads(*several(dtype)))


@pytest.mark.parametrize(
    ("dtype", "huge"),
    [(torch.float32, 1e38), (torch.float32, 3.4e38), (torch.float64, 1e308), (torch.float16, 65504.0),
     (torch.bfloat16, 3.38e38)],
)  # fmt: skip
def test_huge_finite_values_whose_sum_would_overflow_stay_finite(dtype: torch.dtype, huge: float) -> None:
    grads = [torch.full((1000,), huge, dtype=dtype), torch.full((3, 5), -huge, dtype=dtype)]
    assert not torch.isfinite(grads[0].sum())  # a sum (or the 2-norm) would call these non-finite
    assert_as_before(grads, expected=True)


def test_mixed_dtypes_zero_dim_and_parameters_without_gradients() -> None:
    grads = [torch.randn(4).bfloat16(), torch.tensor(2.0), torch.randn(3).half(), torch.randn(2).double()]
    assert_as_before(grads, expected=True)
    assert_as_before([*grads, torch.tensor([1.0, math.nan]).double()], expected=False)
    assert_as_before([torch.tensor(-math.inf)], expected=False)
    flag = finite_gradient_flag(with_grads(None, torch.ones(3), None))
    assert flag is not None
    assert bool(flag)
    flag = finite_gradient_flag(with_grads(None, torch.tensor([math.inf]), None))
    assert flag is not None
    assert not bool(flag)


def test_no_gradients_is_none_and_counts_as_finite() -> None:
    assert finite_gradient_flag(with_grads(None, None)) is None
    assert finite_gradient_flag(nn.Module()) is None
    assert finite_gradients(with_grads(None))


def test_an_empty_gradient_is_refused_as_before() -> None:
    """The inf-norm has no identity on an empty tensor: the error stays the inf-norm's."""
    grads = [torch.empty(0, 3), torch.ones(2)]
    with pytest.raises(RuntimeError) as before:
        reference(grads)
    with pytest.raises(RuntimeError) as now:
        finite_gradient_flag(with_grads(*grads))
    assert str(now.value) == str(before.value)


def test_the_cpu_flag_takes_no_inf_norm_and_no_host_sync(
    monkeypatch: pytest.MonkeyPatch, host_syncs_forbidden: Callable[[str], AbstractContextManager[None]]
) -> None:
    def refused(*args: object, **kwargs: object) -> torch.Tensor:
        raise AssertionError("the inf-norm (torch._foreach_norm, slow on the CPU) was taken")

    grads = several(torch.float32)
    grads[1][5, 5] = math.nan
    monkeypatch.setattr(nn.utils, "get_total_norm", refused)
    with host_syncs_forbidden("the finiteness flag"):
        flag = finite_gradient_flag(with_grads(*grads))
    assert flag is not None
    assert not bool(flag)
