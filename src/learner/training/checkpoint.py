"""Checkpoints: one folder each, written atomically, loaded strictly, never unpickling arbitrary objects.

Layout of ``RUN_DIR/checkpoints/<name>/`` (``last`` every ``runtime.checkpoint_every`` epochs and at the end,
``best`` at the lowest val MAE; when: :mod:`learner.training.checkpoint_writer`)::

    model.safetensors   the ScoreRegressor state dict (encoder θ_V + head θ_M), float tensors only
    train_state.pt      optimiser state, schedule step, RNG states, history, the cross-batch memory's
                        entries: plain tensors / dicts / lists,
                        readable with ``torch.load(weights_only=True)`` (only ``last`` carries it)
    meta.json           a :class:`CheckpointMeta`: schema_version, config, score standardisation, epoch,
                        step, metrics, encoder {name, embed_dim, in_channels, img_size}; ``sha256``: the
                        SHA-256 of the two other files, checked on every load (written last)

A checkpoint is written into a hidden temporary folder beside its target and renamed into place, so a reader
sees the old checkpoint or the new one, never a mixture. Replacing an existing folder takes two renames
(old → ``.<name>.old-*``, new → ``<name>``); a crash exactly between them leaves the previous checkpoint
complete in the ``.<name>.old-*`` folder and the new one in ``.<name>.tmp-*``: :func:`recover_checkpoint`
(run by ``--resume``) puts the newest complete one back in place, and the next save deletes what an
interrupted save left. A save that fails (disk full) deletes its staging folder and keeps the previous
checkpoint.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from learner import atomic, formats
from learner.config import Config, config_from_dict
from learner.data.manifest import MODALITIES
from learner.errors import CheckpointError, LearnerError, OutputError
from learner.layout import RunLayout
from learner.losses.regression import ScoreStandardiser
from learner.models.heads import ScoreRegressor
from learner.models.registry import build_regressor
from learner.models.weights import CHECKPOINT_META, CHECKPOINT_WEIGHTS, describe_mismatch, init_weights_file
from learner.training.faults import fault_point

MODEL_FILE = CHECKPOINT_WEIGHTS  # defined beside the --init reader of checkpoint folders (models/weights.py)
META_FILE = CHECKPOINT_META
TRAIN_STATE_FILE = "train_state.pt"
CHECKPOINT_NAMES = ("best", "last")
"""The checkpoints a pretraining keeps: the lowest val MAE (val loss) and the latest epoch."""
CHECKSUMS = "sha256"
"""The ``meta.json`` key of {file name: SHA-256} of the checkpoint's other files, checked on every load."""


@dataclass(frozen=True)
class EncoderMeta:
    """The encoder a checkpoint's weights belong to: registry name, D, C and H = W of its frames."""

    name: str
    embed_dim: int
    in_channels: int
    img_size: int


@dataclass(frozen=True)
class CheckpointMeta:
    """What ``meta.json`` records about a checkpoint (the JSON keys are the field names).

    Attributes:
        config: the pretraining run's resolved config.
        score_standardisation: the train split's mean/std; the head predicts standardised scores.
        encoder: the encoder the weights belong to.
        epoch: the epoch the weights are from (1-based; 0 before the first).
        step: optimiser updates done.
        metrics: that epoch's metrics row (NaN stored as null).
        scan_kinds: the kinds of scan it was trained on (``video``, ``volume``, ``image``:
            :func:`learner.data.scan_kinds.kinds_of_records`); empty in checkpoints written before
            encoders recorded them.
    """

    config: Config
    score_standardisation: ScoreStandardiser
    encoder: EncoderMeta
    epoch: int = 0
    step: int = 0
    metrics: dict[str, float | None] = field(default_factory=dict)
    scan_kinds: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``meta.json`` object, ``schema_version`` included."""
        return {
            "config": self.config.model_dump(mode="json"),
            "score_standardisation": self.score_standardisation.to_dict(),
            "encoder": asdict(self.encoder),
            "epoch": self.epoch,
            "step": self.step,
            "metrics": dict(self.metrics),
            "scan_kinds": list(self.scan_kinds),
            "schema_version": formats.FORMATS["checkpoint"],
        }

    @classmethod
    def from_json(cls, data: object, path: str | os.PathLike[str]) -> CheckpointMeta:
        """Inverse of :meth:`to_json`, validated; ``path`` (the ``meta.json``) names the file in errors.

        Raises:
            CheckpointError: another schema version, or a missing or malformed entry (one line naming
                ``path``).
        """
        version = data.get("schema_version") if isinstance(data, dict) else None
        formats.check("checkpoint", version, path, field="schema_version")
        assert isinstance(data, dict)  # formats.check accepted its schema_version
        try:
            encoder = data["encoder"]
            metrics = data["metrics"]
            if not isinstance(metrics, dict):
                raise TypeError(f"metrics is a {type(metrics).__name__}, not an object")
            kinds = data.get("scan_kinds", [])  # absent before encoders recorded them
            if not isinstance(kinds, list) or not set(kinds) <= set(MODALITIES):
                raise ValueError(f"scan_kinds should be a list of {', '.join(MODALITIES)}, got {kinds!r}")
            return cls(
                config=config_from_dict(data["config"]),
                score_standardisation=ScoreStandardiser.from_dict(data["score_standardisation"]),
                encoder=EncoderMeta(
                    name=str(encoder["name"]),
                    embed_dim=int(encoder["embed_dim"]),
                    in_channels=int(encoder["in_channels"]),
                    img_size=int(encoder["img_size"]),
                ),
                epoch=int(data["epoch"]),
                step=int(data["step"]),
                metrics=dict(metrics),
                scan_kinds=tuple(kinds),
            )
        except (KeyError, TypeError, ValueError, LearnerError) as exc:
            raise CheckpointError(f"{path}: incomplete metadata ({exc})") from None


def save_checkpoint(
    directory: str | os.PathLike[str],
    model: nn.Module | Mapping[str, torch.Tensor],
    meta: CheckpointMeta,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Atomically (re)write the checkpoint folder ``directory``; leftovers of an interrupted save go first.

    Args:
        directory: the checkpoint folder (e.g. ``run/checkpoints/last``); its parent is created.
        model: the unwrapped model, or a snapshot of its ``state_dict()``
            (:mod:`learner.training.checkpoint_writer`); the state dict goes to ``model.safetensors``
            (moved to CPU, made contiguous so channels_last weights store in the standard layout).
        meta: what ``meta.json`` records (with the SHA-256 of every other file, written last).
        train_state: optional resume state of plain tensors / dicts / lists / numbers / strings.

    Returns:
        ``directory`` as a Path.

    Raises:
        CheckpointError: the files could not be written (disk full, ...): one line naming ``directory``
            and the file being written (a full disk reads "no space left on device"); the previous
            checkpoint, where there is one, is kept.
    """
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)
    existed = target.is_dir()
    staging = _sibling(target, "tmp")
    writing = target.name
    try:
        staging.mkdir()  # not tempfile.mkdtemp: its 0700 mode would survive the rename and hide it
        weights = model.state_dict() if isinstance(model, nn.Module) else model
        tensors = {key: value.detach().cpu().contiguous() for key, value in weights.items()}
        version = formats.FORMATS["checkpoint"]
        writing = MODEL_FILE
        save_file(tensors, staging / MODEL_FILE, metadata={"schema_version": str(version)})
        fault_point("checkpoint-write")
        files = [MODEL_FILE]
        if train_state is not None:
            writing = TRAIN_STATE_FILE
            _torch_save(train_state, staging / TRAIN_STATE_FILE)
            files.append(TRAIN_STATE_FILE)
        checksums = {name: _sha256(staging / name) for name in files}
        writing = META_FILE
        atomic.write_json(staging / META_FILE, meta.to_json() | {CHECKSUMS: checksums})  # last: complete
        writing = target.name
        _swap_into_place(staging, target)
    except (OSError, RuntimeError, SafetensorError, OutputError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        kept = "; the previous checkpoint is kept" if existed else ""
        if _no_space(exc):
            raise CheckpointError(f"{target}: no space left on device while writing {writing}{kept}") from exc
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise CheckpointError(
            f"{target}: the checkpoint could not be written ({reason}, while writing {writing}){kept}"
        ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


_STOPPED_SHORT = ("inline_container", "PytorchStreamWriter", "unexpected pos", "file write failed")
"""What torch's zip writer says (a RuntimeError) when a write to its file stopped short, and not why."""


def _torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)``. Its writer reports a full disk only as "[enforce fail at
    inline_container.cc:…] unexpected pos …"; on that, the same bytes are written again through Python,
    whose OSError says why (ENOSPC, EFBIG, EIO, ...), or which succeeds where the failure has passed."""
    try:
        torch.save(obj, path)
    except RuntimeError as exc:
        if not any(text in str(exc) for text in _STOPPED_SHORT):
            raise
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        _write_file(path, buffer.getbuffer())


def _write_file(path: Path, data: memoryview) -> None:
    with path.open("wb") as handle:
        handle.write(data)


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def _no_space(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError, safetensors' "… (os error 28)", an OutputError from one) says the disk
    (or the quota) is full."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return True
        found = re.search(r"os error (\d+)", str(current))
        if found and int(found.group(1)) in _NO_SPACE:
            return True
        current = current.__cause__
    return False


def _swap_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    retired = _sibling(target, "old")
    os.replace(target, retired)  # rename(2) cannot replace a non-empty folder: move the old one aside first
    fault_point("checkpoint-swap")
    os.replace(staging, target)
    shutil.rmtree(retired, ignore_errors=True)


def _sibling(target: Path, kind: str) -> Path:
    """A fresh hidden name beside ``target``: ``.<name>.<kind>-<pid>-<random>``."""
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _leftovers(target: Path) -> list[Path]:
    """The staging (``.tmp-*``) and retired (``.old-*``) folders of interrupted saves beside ``target``."""
    if not target.parent.is_dir():
        return []
    return sorted(p for kind in ("tmp", "old") for p in target.parent.glob(f".{target.name}.{kind}-*"))


def remove_leftovers(directory: str | os.PathLike[str]) -> None:
    """Delete what interrupted saves left beside the checkpoint folder ``directory``."""
    for leftover in _leftovers(Path(directory)):
        shutil.rmtree(leftover, ignore_errors=True)


def recover_checkpoint(directory: str | os.PathLike[str]) -> bool:
    """After a crash, make ``directory`` the newest complete checkpoint among itself and the leftovers of an
    interrupted save, and delete the leftovers.

    A save killed between its two renames leaves the previous checkpoint in ``.<name>.old-*`` and the new,
    complete one in ``.<name>.tmp-*``; one killed while writing leaves an incomplete ``.tmp-*``. Complete
    means ``meta.json`` (written last) is readable and every file it lists has its SHA-256; the newest is
    the highest (epoch, step), ``directory`` itself on a tie. With no complete candidate nothing is touched.

    Returns:
        Whether ``directory`` now holds a complete checkpoint.
    """
    target = Path(directory)
    progress = {c: p for c in [target, *_leftovers(target)] if (p := _complete(c)) is not None}
    if not progress:
        return False
    newest = max(progress, key=lambda c: progress[c])  # the first maximal one: directory itself on a tie
    if newest != target:
        if target.is_dir():
            _swap_into_place(newest, target)
        else:
            os.replace(newest, target)
    remove_leftovers(target)
    return True


def _complete(folder: Path) -> tuple[int, int] | None:
    """(epoch, step) of a checkpoint folder whose files are all present and match their checksums."""
    try:
        data = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        checksums = data.get(CHECKSUMS, {MODEL_FILE: None})
        for name, digest in checksums.items():
            if not (folder / name).is_file() or (digest is not None and _sha256(folder / name) != digest):
                return None
        return int(data["epoch"]), int(data["step"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _verify(folder: Path, name: str) -> None:
    """Check ``folder/name`` against the SHA-256 its ``meta.json`` recorded (older checkpoints have none)."""
    try:
        recorded = json.loads((folder / META_FILE).read_text(encoding="utf-8")).get(CHECKSUMS, {})
    except (OSError, ValueError, AttributeError):
        recorded = {}
    expected = recorded.get(name) if isinstance(recorded, dict) else None
    if expected is not None and _sha256(folder / name) != expected:
        raise CheckpointError(
            f"{folder / name}: checksum mismatch (changed or damaged since it was saved); the checkpoint "
            "cannot be trusted"
        )


def read_meta(directory: str | os.PathLike[str]) -> CheckpointMeta:
    """The checkpoint's ``meta.json`` after checking the folder.

    Raises:
        CheckpointError: the folder, ``model.safetensors`` or ``meta.json`` is missing, the JSON is
            malformed, the schema version is not this toolkit's, or an entry is missing or malformed.
    """
    folder = Path(directory)
    if not folder.is_dir():
        leftovers = sorted(folder.parent.glob(f".{folder.name}.old-*")) if folder.parent.is_dir() else []
        hint = (
            f" (an interrupted save left {leftovers[-1]}; --resume recovers it, or rename it to "
            f"{folder.name})"
            if leftovers
            else ""
        )
        raise CheckpointError(f"checkpoint not found: {folder}{hint}")
    for name in (MODEL_FILE, META_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(f"checkpoint {folder} is missing {name}")
    try:
        data = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{folder / META_FILE}: not valid JSON ({exc.msg}, line {exc.lineno})"
        ) from None
    return CheckpointMeta.from_json(data, folder / META_FILE)


def load_checkpoint(
    directory: str | os.PathLike[str], model: nn.Module | None = None
) -> tuple[dict[str, torch.Tensor] | nn.Module, CheckpointMeta]:
    """Read a checkpoint: ``(state_dict, meta)``, or ``(model, meta)`` after a strict load into ``model``.

    Raises:
        CheckpointError: missing/corrupt files, or (with ``model``) any missing key, unexpected key or shape
            mismatch, summarised in one line.
    """
    folder = Path(directory)
    meta = read_meta(folder)
    _verify(folder, MODEL_FILE)
    try:
        state = load_file(folder / MODEL_FILE)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{folder / MODEL_FILE}: unreadable ({exc})") from None
    if model is None:
        return state, meta
    problem = describe_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{folder / MODEL_FILE} does not match the model: {problem}")
    model.load_state_dict(state, strict=True)
    return model, meta


def load_train_state(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The resume state of a checkpoint, read with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: the checkpoint has no ``train_state.pt`` or it cannot be read safely.
    """
    path = Path(directory) / TRAIN_STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {Path(directory)} has no {TRAIN_STATE_FILE}; it cannot be resumed")
    _verify(path.parent, TRAIN_STATE_FILE)
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
        return state
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError for bad files
        raise CheckpointError(f"{path}: unreadable train state ({type(exc).__name__})") from None


def load_regressor(
    run_dir: str | os.PathLike[str], which: str = "best", device: str | torch.device = "cpu"
) -> tuple[ScoreRegressor, CheckpointMeta]:
    """Rebuild the pretrained ScoreRegressor of ``RUN_DIR/checkpoints/<which>`` in eval mode on ``device``.

    The encoder is built from the stored config with ``model.init`` cleared (the checkpoint already holds the
    trained weights, and the original init file need not exist any more). Returns ``(model, meta)``;
    ``meta.score_standardisation`` turns standardised predictions back into score units.

    Raises:
        CheckpointError: missing files, an encoder whose name / embed_dim / in_channels disagree with the
            metadata, or weights that do not load strictly.
    """
    folder = RunLayout(run_dir).checkpoint(which)
    meta = read_meta(folder)
    model = regressor_for(meta, folder / META_FILE)
    load_checkpoint(folder, model)
    return model.to(device).eval(), meta


def regressor_for(meta: CheckpointMeta, source: str | os.PathLike[str]) -> ScoreRegressor:
    """The untrained ScoreRegressor that ``meta`` describes (``model.init`` cleared); ``source``, the metadata
    file, is named in the CheckpointError of an encoder whose name or embed_dim disagree with it."""
    model_cfg = meta.config.model.model_copy(update={"init": None})
    if meta.encoder.name != model_cfg.backbone:
        raise CheckpointError(
            f"{source}: encoder {meta.encoder.name!r} disagrees with model.backbone {model_cfg.backbone!r}"
        )
    data = meta.config.data
    model = build_regressor(model_cfg, meta.encoder.in_channels, data.size, frames=data.frames)
    if model.encoder.embed_dim != meta.encoder.embed_dim:
        built = f"{model_cfg.backbone} builds {model.encoder.embed_dim}"
        raise CheckpointError(f"{source}: embed_dim {meta.encoder.embed_dim} but {built}")
    return model


def checkpoint_fingerprint(directory: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of the checkpoint's ``model.safetensors``: identifies the weights (embedding caches)."""
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {Path(directory)} is missing {MODEL_FILE}")
    return _sha256(path)


def init_record(init: str | os.PathLike[str]) -> dict[str, str]:
    """Where a run's ``model.init`` weights came from, for ``run.json``: ``path`` (as resolved), ``weights``
    (the file read: a run's ``checkpoints/best/model.safetensors``) and its SHA-256 ``fingerprint`` (for a
    run, its :func:`checkpoint_fingerprint`)."""
    weights = init_weights_file(init)
    if not weights.is_file():
        raise CheckpointError(f"init weights not found: {weights}")
    return {
        "path": str(Path(init).resolve()),
        "weights": str(weights.resolve()),
        "fingerprint": _sha256(weights),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
