"""Load local initial weights into an encoder (``model.init``); nothing is ever downloaded.

Accepted files: ``*.safetensors``, or a torch file (``.pth``/``.pt``/…) read with
``torch.load(path, weights_only=True, map_location="cpu")``, holding a state dict or a checkpoint dict
whose ``state_dict`` or ``model`` entry is one. Keys are normalised before a strict match:

* leading ``module.`` (DataParallel/DDP) and ``base_model.`` (reference TSM) prefixes are stripped;
* ``conv1.net.`` becomes ``conv1.`` (the reference TSM wraps each block's ``conv1`` in its shift module);
* classifier keys ``fc.*`` and ``new_fc.*`` are dropped (the encoder has no classifier).

Every other difference is a :class:`CheckpointError` listing the missing, unexpected and wrong-shape
keys; only ``num_batches_tracked`` buffers may be absent (older checkpoints lack them).

Grey input from RGB weights: when the encoder takes 1 channel and the file's input convolution has 3,
the kernel is summed over its RGB axis, so a grey frame g gives exactly the response the RGB network
gives to (g, g, g) (any per-channel input normalisation is the caller's to match).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from learner.errors import CheckpointError

STRIPPED_PREFIXES: tuple[str, ...] = ("module.", "base_model.")
DROPPED_PREFIXES: tuple[str, ...] = ("fc.", "new_fc.")
OPTIONAL_SUFFIX = "num_batches_tracked"
_LISTED = 5  # keys named per kind of mismatch; the rest are counted


def load_init_weights(module: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load the weights in ``path`` into ``module`` (in place), strictly after key normalisation.

    Raises:
        CheckpointError: the file is missing or unreadable, is not a state dict of tensors, or does not
            match ``module`` (the one-line message names the file and the offending keys).
    """
    source = Path(path)
    state = {_normalise_key(key): value for key, value in _read_state_dict(source).items()}
    state = {key: value for key, value in state.items() if not key.startswith(DROPPED_PREFIXES)}
    expected = module.state_dict()
    state = {key: _grey_from_rgb(value, expected.get(key)) for key, value in state.items()}
    problem = describe_mismatch(expected, state, optional_suffix=OPTIONAL_SUFFIX)
    if problem:
        raise CheckpointError(f"{source}: does not match {type(module).__name__}: {problem}")
    module.load_state_dict(state, strict=False)  # strictness checked above; only optional buffers may lack


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"init weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            loaded: object = load_file(path, device="cpu")
        else:
            loaded = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # the unpickler fails on garbage with any error type (IndexError, EOFError, …)
        raise CheckpointError(
            f"{path}: not a readable weights file ({type(exc).__name__}); "
            "expected safetensors or a torch file of tensors"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(f"{path}: holds no state dict (got {type(loaded).__name__})")
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(f"{path}: not a state dict: entry {key!r} is a {type(value).__name__}")
    return loaded


def _normalise_key(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key.removeprefix(prefix), True
    return key.replace("conv1.net.", "conv1.")


def _grey_from_rgb(value: Tensor, target: Tensor | None) -> Tensor:
    """Sum an RGB input kernel (O, 3, k…) over its channels when the encoder expects (O, 1, k…)."""
    if (
        target is not None
        and value.ndim >= 3
        and value.ndim == target.ndim
        and value.shape[1] == 3
        and target.shape[1] == 1
        and value.shape[0] == target.shape[0]
        and value.shape[2:] == target.shape[2:]
    ):
        return value.sum(dim=1, keepdim=True)
    return value


def describe_mismatch(
    expected: Mapping[str, Tensor], found: Mapping[str, Tensor], *, optional_suffix: str | None = None
) -> str:
    """One line on how the state dict ``found`` differs from ``expected`` ('' when keys and shapes agree).

    Lists, sorted and at most five of each, the missing keys (those ending in ``optional_suffix`` may be
    absent), the unexpected keys, and the shape mismatches as ``key (found) vs (expected)``.
    """
    missing = sorted(
        k for k in expected if k not in found and not (optional_suffix and k.endswith(optional_suffix))
    )
    unexpected = sorted(k for k in found if k not in expected)
    wrong_shape = [
        f"{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(found))
        if found[k].shape != expected[k].shape
    ]
    return "; ".join(
        _listing(what, keys)
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatches", wrong_shape),
        )
        if keys
    )


def _listing(what: str, keys: list[str]) -> str:
    listed = ", ".join(keys[:_LISTED])
    more = f", … {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
    return f"{len(keys)} {what} ({listed}{more})"
