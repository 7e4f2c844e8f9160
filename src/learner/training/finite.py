"""Non-finite steps: a NaN or inf loss or gradient is caught at the step it appears, before the update.

The pretraining loop checks the loss and, without fp16 loss scaling (which skips such steps itself), the
gradients of every step; the error names the epoch and step and says whether the last checkpoint is kept.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn


def finite_gradients(model: nn.Module) -> bool:
    """Whether every parameter's gradient is free of NaN and inf: the largest |gradient| (a fused kernel and
    one device sync; a max, unlike the 2-norm, cannot overflow from finite values) is finite."""
    flag = finite_gradient_flag(model)
    return flag is None or bool(flag)


def finite_gradient_flag(model: nn.Module) -> torch.Tensor | None:
    """:func:`finite_gradients` left on the device: a bool scalar tensor, no host sync; None when no
    parameter has a gradient.

    On the CPU each gradient's min and max (one :func:`torch.aminmax` pass; NaN and ±inf propagate into
    them) replace the inf-norm, whose ``torch._foreach_norm`` is ~7-9x slower there; the flag is the same.
    Elsewhere (one fused kernel on CUDA), and for what aminmax does not take (empty, sparse, complex
    gradients: the inf-norm refuses an empty one), the inf-norm stays."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return None
    with torch.no_grad():
        if all(_aminmax_applies(g) for g in grads):
            return torch.isfinite(torch.stack([e for g in grads for e in torch.aminmax(g)])).all()
        return torch.isfinite(nn.utils.get_total_norm(grads, norm_type=math.inf))


def _aminmax_applies(grad: torch.Tensor) -> bool:
    """A dense, non-empty, real floating-point CPU tensor: metadata only, no sync."""
    return (
        grad.device.type == "cpu"
        and grad.layout == torch.strided
        and grad.is_floating_point()
        and grad.numel() > 0
    )


def non_finite_message(what: str, epoch: int, step: int, last_dir: Path) -> str:
    """The one-line error of a non-finite loss or gradient; the weights have not been updated with it."""
    kept = f"{last_dir} is kept" if last_dir.is_dir() else "no checkpoint was saved yet"
    return f"non-finite {what} at epoch {epoch}, step {step}; {kept}"
