"""The one device rule: where pretraining runs and where frozen encoders embed (Section 2.3, Table 2).

``auto`` takes CUDA when a device is visible and the CPU otherwise; asking for ``cuda`` on a machine without
one is a configuration error, not a silent fall-back, because it would change how long a run takes (and,
through non-deterministic kernels, its numbers) without anyone having asked for that.
"""

from __future__ import annotations

import torch

from learner.errors import ConfigError


def resolve_device(requested: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when visible) → the torch device to use.

    Raises:
        ConfigError: ``cuda`` was requested and no CUDA device is visible.
    """
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device is 'cuda' but no CUDA device is visible; use --device cpu or auto")
    cuda = requested == "cuda" or (requested == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda else "cpu")
