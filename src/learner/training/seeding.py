"""The one place that touches global RNG state: seeding a run and saving/restoring RNG states on resume.

Library code elsewhere draws randomness from explicit ``torch.Generator`` / ``numpy.random.Generator``
objects derived from the config seed; the global generators seeded here only drive what cannot take a
generator (weight initialisation, dropout, DataLoader base seeds). Their states travel with every
checkpoint so that a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool) -> None:
    """Seed Python's ``random``, NumPy's legacy global RNG and torch (CPU and every GPU) with ``seed``.

    Args:
        seed: the run seed (``Config.seed``).
        deterministic: ask torch for deterministic kernels (``use_deterministic_algorithms``, warn-only, so a
            kernel without a deterministic variant warns instead of failing) and disable cuDNN autotuning;
            when False, cuDNN may autotune (faster on GPU, not bit-reproducible).
    """
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- third-party code may still draw from the legacy global RNG
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def rng_state() -> dict[str, Any]:
    """Every global RNG state as plain tensors / lists / numbers, readable with ``weights_only=True``."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNG states captured by :func:`rng_state` (CUDA states only where GPUs exist)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
