"""Load local initial weights into an encoder (``model.init``); nothing is ever downloaded.

``model.init`` names a previous learner pretraining run (or one of its checkpoint folders), or a file.

A run directory stands for its ``checkpoints/best``; a checkpoint folder holds ``model.safetensors`` (the
ScoreRegressor's state dict) and ``meta.json``. The encoder takes the ``encoder.*`` weights, matched
strictly and without any renaming: the run must have trained the same backbone (``meta.json`` names it),
size and channel count. This is how stages chain (e.g. a self-supervised run, then a fine-tune).

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
gives to (g, g, g). ``model.init`` folds no input standardisation: :func:`convert_weights` (``learner
weights convert``) maps other libraries' layouts and folds their mean/std (:mod:`learner.models.layouts`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from learner import formats
from learner.atomic import atomic_path
from learner.errors import CheckpointError
from learner.layout import RunLayout
from learner.models.encoder import Encoder
from learner.models.layouts import Conversion, InputNormChoice, convert_state

CHECKPOINT_WEIGHTS = (
    "model.safetensors"  # the checkpoint folder layout (learner.training.checkpoint uses these)
)
CHECKPOINT_META = "meta.json"
INIT_CHECKPOINT = "best"  # the checkpoint of a run directory that --init reads
ENCODER_PREFIX = "encoder."  # the encoder's keys in a ScoreRegressor state dict
STRIPPED_PREFIXES: tuple[str, ...] = ("module.", "base_model.")
DROPPED_PREFIXES: tuple[str, ...] = ("fc.", "new_fc.")
OPTIONAL_SUFFIX = "num_batches_tracked"
EMBEDDING_NORM_PREFIX = "embedding_norm."  # Encoder.embedding_norm's keys (model.embed_norm=layer)
_LISTED = 5  # keys named per kind of mismatch; the rest are counted


def load_init_weights(
    module: nn.Module, path: str | os.PathLike[str], *, backbone: str | None = None
) -> None:
    """Load the weights ``path`` names into ``module`` (in place): a learner run or checkpoint folder's
    encoder, strictly; or a weights file, strictly after key normalisation.

    Args:
        module: the encoder.
        path: a run directory, a checkpoint folder, or a weights file.
        backbone: the encoder's registry name; a run that trained another backbone is refused by name.

    Raises:
        CheckpointError: the file is missing or unreadable, is not a state dict of tensors, the folder is
            not a learner run or checkpoint, or the weights do not match ``module`` (the one-line message
            names the file or folder and the offending keys).
    """
    source = Path(path)
    expected = module.state_dict()
    optional: tuple[str, ...] = ()  # a learner run's encoder must have every key but the step counters
    if source.is_dir():
        source = checkpoint_folder(source)
        state = _run_encoder_state(source, backbone)
    else:
        state = {_normalise_key(key): value for key, value in _read_state_dict(source).items()}
        state = {key: value for key, value in state.items() if not key.startswith(DROPPED_PREFIXES)}
        state = {key: _grey_from_rgb(value, expected.get(key)) for key, value in state.items()}
        optional = (EMBEDDING_NORM_PREFIX,)  # no other library's encoder has it: it starts fresh
    problem = describe_mismatch(expected, state, optional_suffix=OPTIONAL_SUFFIX, optional_prefixes=optional)
    if problem:
        raise CheckpointError(f"{source}: does not match {type(module).__name__}: {problem}")
    module.load_state_dict(state, strict=False)  # strictness checked above; only the optional keys may lack


def checkpoint_folder(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder a directory stands for: ``RUN/checkpoints/best`` for a run, else itself.

    Raises:
        CheckpointError: neither the directory nor its ``checkpoints/best`` holds ``model.safetensors``.
    """
    folder = Path(path)
    best = RunLayout(folder).checkpoint(INIT_CHECKPOINT)
    for candidate in (best, folder):
        if (candidate / CHECKPOINT_WEIGHTS).is_file():
            return candidate
    expected = (best / CHECKPOINT_WEIGHTS).relative_to(folder)
    raise CheckpointError(
        f"{folder}: not a learner run or checkpoint folder (no {expected} or {CHECKPOINT_WEIGHTS})"
    )


def init_weights_file(path: str | os.PathLike[str]) -> Path:
    """The file ``model.init`` reads: a folder's ``model.safetensors`` (:func:`checkpoint_folder`), or
    ``path`` itself."""
    source = Path(path)
    return checkpoint_folder(source) / CHECKPOINT_WEIGHTS if source.is_dir() else source


def _run_encoder_state(folder: Path, backbone: str | None) -> dict[str, Tensor]:
    """The ``encoder.*`` tensors of a checkpoint folder, prefix removed, after checking its backbone."""
    meta_path = folder / CHECKPOINT_META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        formats.check("checkpoint", meta.get("schema_version"), meta_path, field="schema_version")
        trained = str(meta["encoder"]["name"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint metadata ({type(exc).__name__})") from None
    if backbone is not None and trained != backbone:
        raise CheckpointError(
            f"{folder}: its encoder is {trained!r}, not {backbone!r}; initialise from a run of the same "
            "model.backbone"
        )
    state = _read_state_dict(folder / CHECKPOINT_WEIGHTS)
    return {k.removeprefix(ENCODER_PREFIX): v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}


def convert_weights(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    encoder: Encoder,
    *,
    input_norm: InputNormChoice = "auto",
) -> Path:
    """Convert a weights file in another library's layout (torchvision or MedicalNet ResNet-18, MONAI ViT /
    UNETR, MONAI Swin / SwinUNETR: :mod:`learner.models.layouts`) into the safetensors ``--init`` reads:
    map its keys, fold its input standardisation and sum RGB to grey where the encoder takes 1 channel,
    narrow a wider ResNet, check every tensor strictly against ``encoder``, load them into it and write
    its state dict to ``target`` atomically. The file's metadata records the source, its layout and the
    steps taken (:func:`conversion_record`). A file this function wrote is taken as it is.

    Args:
        source: the weights file (safetensors, or a torch file read with ``weights_only=True``).
        target: the ``.safetensors`` file to write.
        encoder: the learner encoder to initialise.
        input_norm: the source's input standardisation to fold, as
            :func:`~learner.models.layouts.convert_state` takes it.

    Raises:
        CheckpointError: ``target`` does not end in ``.safetensors``, or ``source`` is unreadable, of an
            unknown layout, or does not match ``encoder`` (one line naming the file and the first keys);
            ``target`` is then not written and ``encoder`` is unchanged.
    """
    destination, path = Path(target), Path(source)
    if destination.suffix != ".safetensors":
        raise CheckpointError(f"{destination}: the converted file must end in .safetensors")
    state = _read_state_dict(path)
    if conversion_record(path):  # already converted: the encoder's own keys
        conversion = Conversion(state, "learner", None, ())
    else:
        try:
            conversion = convert_state(state, encoder, input_norm=input_norm, narrow=True)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    problem = describe_mismatch(
        encoder.state_dict(),
        conversion.state,
        optional_suffix=OPTIONAL_SUFFIX,
        optional_prefixes=(EMBEDDING_NORM_PREFIX,),  # a fresh LayerNorm where model.embed_norm=layer
    )
    if problem:
        raise CheckpointError(
            f"{path}: {conversion.layout} weights do not match {type(encoder).__name__}: {problem}"
        )
    encoder.load_state_dict(conversion.state, strict=False)  # strictness checked above
    tensors = {key: value.detach().cpu().contiguous() for key, value in encoder.state_dict().items()}
    norm = conversion.input_norm.describe() if conversion.input_norm else "none"
    metadata = {"converted_from": path.name, "source_layout": conversion.layout, "input_norm": norm,
                "steps": "; ".join(conversion.notes) or "none"}  # fmt: skip
    with atomic_path(destination) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return destination


def conversion_record(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata :func:`convert_weights` wrote into ``path`` (``converted_from``, ``source_layout``,
    ``input_norm``, ``steps``); empty for any other file."""
    file = Path(path)
    if file.suffix != ".safetensors" or not file.is_file():
        return {}
    try:
        with safe_open(file, framework="pt") as handle:
            metadata: dict[str, str] = handle.metadata() or {}
    except (SafetensorError, OSError):  # not safetensors: _read_state_dict reports it
        return {}
    return metadata if "converted_from" in metadata else {}


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
    expected: Mapping[str, Tensor],
    found: Mapping[str, Tensor],
    *,
    optional_suffix: str | None = None,
    optional_prefixes: tuple[str, ...] = (),
) -> str:
    """One line on how the state dict ``found`` differs from ``expected`` ('' when keys and shapes agree).

    Lists, sorted and at most five of each, the missing keys (those ending in ``optional_suffix`` or
    starting with one of ``optional_prefixes`` may be absent), the unexpected keys, and the shape
    mismatches as ``key (found) vs (expected)``.
    """
    missing = sorted(
        k
        for k in expected
        if k not in found
        and not (optional_suffix and k.endswith(optional_suffix))
        and not k.startswith(optional_prefixes)
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
